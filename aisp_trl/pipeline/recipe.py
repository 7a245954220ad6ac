"""The shared first half of the fine-tuning recipes: load the model and reward, split the prompts, run (or resume)
the generation step; the vLLM engine's lifecycle around it; and the marker that makes a finished training skip."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from torch import nn

from ..data import Prompt, save_dataset
from ..evaluation.report import report_rewards_table, report_uncertainty, write_report
from ..models import EMBEDDED_MODEL, load_model_and_tokenizer
from ..rewards import RewardFunction, build_reward
from ..vllm import free_llm
from .arguments import AISPGenerationArguments
from .generation import default_state, evaluate_greedy, run_generation, summarize_records

__all__ = ["AISPRun", "TRAINING_MARKER", "finished_training", "free_llm", "generate_for_training", "load_vllm_engine",
           "mark_training_finished"]  # fmt: skip

TRAINING_MARKER = "aisp_training.json"


@dataclass
class AISPRun:
    """A model, its reward and prompts after the AISP generation step: what `recipes/` train and evaluate on."""

    args: AISPGenerationArguments
    state: PartialState
    model_name: str
    model: nn.Module
    tokenizer: Any
    reward: RewardFunction
    train_prompts: list[Prompt]
    eval_prompts: list[Prompt]
    generation_dir: Path
    records: list[dict[str, Any]]

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Greedy rewards of ``model`` on the held-out prompts (see `evaluate_greedy`)."""
        return evaluate_greedy(
            model,
            self.tokenizer,
            self.reward,
            self.eval_prompts,
            self.args.max_new_tokens,
            framing=self.args.framing,
            max_prompt_length=self.args.max_prompt_length,
            batch_size=self.args.eval_batch_size,
            accelerator=self.state,
        )

    def finish(
        self,
        output_dir: str | os.PathLike,
        *,
        method: str,
        trained: str,
        base_eval: Mapping[str, Any],
        trained_eval: Mapping[str, Any],
        counts: Mapping[str, int],
        training: Mapping[str, Any],
        title: str,
    ) -> dict[str, Any]:
        """The recipe's report: held-out greedy rewards of the base and the ``trained`` model next to AISP's best
        on the training prompts, each mean with its prompt count and 95% CI, the paired gains over the base, and a
        warning on few prompts; written to ``output_dir`` (``report.json``, ``report.md``) with the
        finished-training marker, and the rewards table printed (main process)."""
        summary = summarize_records(self.records)
        per_prompt = {
            "base greedy (held-out)": base_eval["rewards"],
            f"{trained} greedy (held-out)": trained_eval["rewards"],
            "base greedy (train prompts)": summary["greedy_rewards"],
            "AISP best (train prompts)": summary["aisp_best_rewards"],
        }
        report: dict[str, Any] = {
            "method": method,
            "model": self.model_name,
            "reward": self.args.reward,
            "rewards": {
                "base greedy (held-out)": base_eval["mean_reward"],
                f"{trained} greedy (held-out)": trained_eval["mean_reward"],
                "base greedy (train prompts)": summary["greedy_reward"],
                "AISP best (train prompts)": summary["aisp_best_reward"],
            },
            "counts": {"train_prompts": len(self.train_prompts), "eval_prompts": len(self.eval_prompts), **counts},
            "training": dict(training),
            "aisp_best_so_far_curve": summary["best_so_far_curve"],
            "generation": self.args.run_info(),
            "held_out": {"base": base_eval["completions"], trained.lower(): trained_eval["completions"]},
        }
        pairs = [
            (f"{trained} greedy (held-out)", "base greedy (held-out)"),
            ("AISP best (train prompts)", "base greedy (train prompts)"),
        ]
        report |= report_uncertainty(per_prompt, pairs, num_eval_prompts=len(self.eval_prompts))
        if self.state.is_main_process:
            path = write_report(output_dir, report, title=title)
            mark_training_finished(output_dir, report)
            print(f"\n{report_rewards_table(report)}\n\nreport: {path} and {path.with_suffix('.md')}")
        self.state.wait_for_everyone()
        return report

    def save(self, dataset: Any, name: str, kind: str, counts: Mapping[str, int]) -> None:
        """Saves ``dataset`` under the generation folder with its card (main process only)."""
        if self.state.is_main_process:
            info = {"model": self.model_name, "reward": self.args.reward, "hyper_parameters": self.args.run_info()}
            save_dataset(
                dataset,
                self.generation_dir / name,
                kind=kind,
                info=info | {"counts": dict(counts)},
                push_to_hub=self.args.push_dataset_to_hub,
            )


def generate_for_training(
    args: AISPGenerationArguments, model_name_or_path: str | None, dtype: str | None, output_dir: str | os.PathLike
) -> AISPRun:
    """Loads the model and reward, splits the prompts and runs (or resumes) AISP over the training prompts.

    Args:
        args (`AISPGenerationArguments`): the recipe's generation arguments.
        model_name_or_path (`str`, *optional*): the causal LM (default: the embedded SmolLM2).
        dtype (`str`, *optional*): its dtype (default: float32).
        output_dir (`str` or `os.PathLike`): the trainer's output folder; generation goes to `args.output_path`.
    """
    state = PartialState()
    model_name = model_name_or_path or EMBEDDED_MODEL
    train_prompts, eval_prompts = args.load_prompts()  # bad prompt sources fail before any model is loaded
    if args.use_vllm:
        from ..vllm import load_tokenizer

        model, tokenizer = load_vllm_engine(args, model_name, dtype, state), load_tokenizer(model_name)
    else:
        model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype or "float32", device=str(state.device))
    reward = build_reward(args.reward, device=state.device, max_length=args.reward_max_length)
    generation_dir = args.output_path(output_dir)
    records = run_generation(
        model,
        tokenizer,
        reward,
        train_prompts,
        args.aisp_config(),
        generation_dir,
        accelerator=state,
        max_new_tokens=args.max_new_tokens,
        framing=args.framing,
        max_prompt_length=args.max_prompt_length,
        model_name=model_name,
        reward_name=args.reward,
        method=args.generation_method,
        save_means=args.save_means,
    )
    if args.use_vllm:  # free the engine (its process and memory) before the HF model for training loads
        free_llm(model)
        del model
        model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype or "float32", device=str(state.device))
    return AISPRun(
        args, state, model_name, model, tokenizer, reward, train_prompts, eval_prompts, generation_dir, records
    )


def load_vllm_engine(
    args: AISPGenerationArguments, model_name: str, dtype: str | None = None, state: Any | None = None
) -> Any:
    """This process's ``vllm.LLM`` for ``use_vllm``: one engine per ``accelerate launch`` process (data parallelism).

    Each process decodes its own shard of the prompts (as on the HF path) on its own engine. Process ``i`` of a
    machine gets GPUs ``i*k .. i*k+k-1`` of the visible ones (``k = vllm_tensor_parallel_size``), or on vLLM's CPU
    backend the ``i``-th slice of the cores and ``1/P`` of its default memory share
    (`aisp_trl.vllm.data_parallel_placement`; a ``VLLM_CPU_OMP_THREADS_BIND`` the user set is kept). The environment
    goes back to what it was once the engine has started.
    """
    from ..vllm import CPU_MEMORY_SHARE, data_parallel_placement, engine_environment, load_llm, visible_gpus

    state = state if state is not None else default_state()
    engine = {**args.vllm_engine_kwargs(), **({"dtype": dtype} if dtype else {})}  # else float32 on CPU
    local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    overrides: dict[str, str] = {}
    if local > 1:
        gpus = visible_gpus()
        overrides = data_parallel_placement(state.local_process_index, local, args.vllm_tensor_parallel_size, gpus=gpus)
        if not gpus:
            engine.setdefault("gpu_memory_utilization", CPU_MEMORY_SHARE / local)
            if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
                overrides.pop("VLLM_CPU_OMP_THREADS_BIND")
    with engine_environment(overrides):
        return load_llm(model_name, **engine)


def finished_training(output_dir: str | os.PathLike, overwrite: bool = False, state: Any | None = None):
    """The report of a training already finished in ``output_dir``, unless ``overwrite``; says what it does.

    A recipe calls this first: a rerun of a finished command then skips generation and training (trl's trainers
    would silently overwrite the saved model) and returns the stored report. A training counts as finished when
    ``output_dir`` holds the marker `mark_training_finished` writes (``aisp_training.json``), or a ``report.json``
    next to a saved model or adapter (a run without the marker).

    Args:
        output_dir (`str` or `os.PathLike`): the trainer's ``output_dir``.
        overwrite (`bool`, defaults to False): ``--overwrite_output_dir``: train again (the model is overwritten).
        state (`PartialState`, *optional*): only its main process prints.

    Returns:
        `dict` or `None`: the stored report (``report.json``), or `None` when the recipe should train.
    """
    output_dir = Path(output_dir)
    marker, report_file = output_dir / TRAINING_MARKER, output_dir / "report.json"
    saved_model = any((output_dir / name).is_file() for name in ("model.safetensors", "adapter_model.safetensors"))
    if not (marker.is_file() or (report_file.is_file() and saved_model)):
        return None
    main = state is None or state.is_main_process
    if overwrite:
        if main:
            print(f"`output_dir` {str(output_dir)!r} holds a finished training; training again and overwriting it "
                  "(--overwrite_output_dir).")  # fmt: skip
        return None
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    if main:
        print(
            f"`output_dir` {str(output_dir)!r} already holds a finished training (model and {report_file.name}); "
            "skipping generation and training. Pass `--overwrite_output_dir true` to train again (the AISP records "
            "are reused), or a new `--output_dir`."
        )
    return report


def mark_training_finished(output_dir: str | os.PathLike, report: Mapping[str, Any]) -> Path:
    """Writes ``aisp_training.json`` (the rewards and counts of ``report``) so that a rerun skips the training."""
    path = Path(output_dir) / TRAINING_MARKER
    summary = {key: report.get(key) for key in ("method", "model", "reward", "rewards", "counts", "training")}
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path
