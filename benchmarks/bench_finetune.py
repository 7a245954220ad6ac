"""AISP plus fine-tuning, measured: does AISP data train a better model than best-of-N data at the same budget?

For each reward and seed the script builds same-budget training data on the ``general:train`` prompts with AISP
and with BoN (top-p) (``N = sample_size * n_iterations`` samples per prompt for both, `aisp_trl.pipeline`), trains
four LoRA models the same way (same steps, learning rate, batch, LoRA rank; `aisp_trl.training`, the recipes'
training code): SFT on AISP's bests, SFT on BoN's bests, DPO on AISP pairs, DPO on BoN pairs (chosen = best,
rejected = worst sample), then decodes greedily with the base model and every trained model on the
``general:held_out`` prompts, and runs AISP there too, so that the fraction of the base -> AISP gap a trained model
recovers, ``P = (trained - base) / (AISP - base)``, is measured on the same prompts.

Every stage is one *unit* (reward, stage, seed) saved as JSON under ``<output_dir>/units/`` as soon as it finishes;
a killed run started again with the same command skips the finished units (generation inside a unit also resumes,
prompt batch by prompt batch, from ``<output_dir>/data/``). BoN's samples do not depend on the reward: they are
decoded once per seed (scored with a constant) and re-scored for every reward. The base model's greedy answers are
deterministic: one unit per reward, paired with every seed.

The report (``report.json``, ``report.md``, ``held_out.png``) gives per reward: held-out greedy reward of the base,
of each trained model and of AISP itself with 95% bootstrap CIs over prompts (seed-averaged); paired differences
(AISP data − BoN data for SFT and DPO, DPO − SFT for each source, each model − base) with CIs and win / tie / loss
rates over (seed, prompt) pairs; P with a paired-bootstrap CI; the answers' base-model NLL per token, coherence
(MiniLM cosine with the prompt) and n-gram diversity (reward hacking shows there); the data's budget (samples per
prompt, the same for both sources), SFT rows and DPO pairs; and the wall time per stage.

```bash
# the full run: 2 rewards x 3 seeds, 96 training and 48 held-out prompts, N = 8 x 4 = 32, LoRA r 16, 48 steps
python benchmarks/bench_finetune.py --output_dir outputs/bench-finetune
# one reward; the judge as a third (finished units are reused); the report alone from the saved units
python benchmarks/bench_finetune.py --rewards vader --output_dir outputs/bench-finetune
python benchmarks/bench_finetune.py --rewards vader relevance judge --output_dir outputs/bench-finetune
python benchmarks/bench_finetune.py --output_dir outputs/bench-finetune --report_only
# on a GPU: generation on a vLLM engine (`bash scripts/setup.sh --vllm`), evaluation and training on the HF model
python benchmarks/bench_finetune.py --use_vllm --output_dir outputs/bench-finetune
# smoke test on the embedded SmolLM2 (a few minutes): tiny budget, 2 steps, one seed; its numbers mean nothing
python benchmarks/bench_finetune.py --rewards vader --seeds 0 --num_train_prompts 4 --num_eval_prompts 4 \\
    --sample_size 2 --n_iterations 2 --max_new_tokens 8 --max_steps 2 --output_dir /tmp/bench-finetune-smoke
```

Budget, measured with SmolLM2-135M on one CPU core (``--threads 1``, another run on the second core), 32 new
tokens, N = 32: AISP data 13-20 min per (reward, seed) on 96 prompts, BoN (top-p) decoding 21-25 min per seed
(shared by the rewards, then re-scored in seconds), AISP on the 48 held-out prompts 6-7.5 min, a greedy evaluation
under 1 min, SFT 3-4.5 min and DPO 8-8.5 min per 48-step model: about 75 min per (reward, seed) with its own BoN
decoding, 55 min with a shared one (VADER and relevance alike). The judge (the base model scoring every sample)
should add about 30 min per seed (estimated, not run). Minutes on a GPU. ``report.md`` lists the
measured time of every stage; a stage resumed mid-way counts only its remaining part, and a BoN data unit counts
its share of the shared decoding (all of it when its reward ran alone).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from _common import UnitStore, rescore_samples, reward_key, seed_mean

from aisp_trl.data import build_preference_dataset, build_sft_dataset, prompt_text
from aisp_trl.evaluation.metrics import token_nll
from aisp_trl.evaluation.report import agg_figure, format_ci, smoke_test_warning, write_report_files
from aisp_trl.evaluation.stats import bootstrap_ci, bootstrap_ratio_ci, format_paired, paired_comparison
from aisp_trl.evaluation.text import coherence, distinct_ngram_diversity
from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
from aisp_trl.pipeline import (
    AISPGenerationArguments,
    greedy_records,
    load_vllm_engine,
    run_generation,
    tokenize_prompts,
)
from aisp_trl.rewards import JudgeReward, RewardFunction, SentenceEmbedder, build_reward, check_reward_spec
from aisp_trl.training import lora_config, train_dpo, train_sft
from aisp_trl.vllm import free_llm

SOURCES = ("aisp", "bon_top_p")
"""Where the training data comes from (same N per prompt)."""
TRAINED = ("sft_aisp", "sft_bon_top_p", "dpo_aisp", "dpo_bon_top_p")
"""The four trained models: ``<algorithm>_<source>``."""
LABELS = {
    "base": "base (greedy)",
    "sft_aisp": "SFT on AISP bests",
    "sft_bon_top_p": "SFT on BoN (top-p) bests",
    "dpo_aisp": "DPO on AISP pairs",
    "dpo_bon_top_p": "DPO on BoN (top-p) pairs",
    "aisp": "AISP itself (test time)",
}
SOURCE_LABELS = {"aisp": "AISP", "bon_top_p": "BoN (top-p)"}
PAIRS = (
    ("sft_aisp", "sft_bon_top_p"),
    ("dpo_aisp", "dpo_bon_top_p"),
    ("dpo_aisp", "sft_aisp"),
    ("dpo_bon_top_p", "sft_bon_top_p"),
    *((name, "base") for name in TRAINED),
    ("aisp", "base"),
)
"""Paired comparisons of the report: data source at equal training, DPO against SFT, each model against the base."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=EMBEDDED_MODEL, help="Causal LM (default: embedded SmolLM2).")
    parser.add_argument(
        "--rewards", nargs="+", default=["vader", "relevance"], help="Reward names ('vader', 'judge', 'relevance', a "
        "sequence-classification reward-model folder; see aisp_trl.rewards.build_reward)."
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds (generation and training).")
    parser.add_argument(
        "--prompt_source", default="general:train", help="Prompt source: 'general:train' takes training prompts from "
        "the fixed train split and held-out prompts from 'general:held_out'; any other source holds out its first "
        "--num_eval_prompts prompts (AISPGenerationArguments.load_prompts)."
    )  # fmt: skip
    parser.add_argument("--num_train_prompts", type=int, default=96, help="Training prompts (data generation).")
    parser.add_argument("--num_eval_prompts", type=int, default=48, help="Held-out prompts (greedy evaluation).")
    parser.add_argument("--framing", default="auto", help="Prompt framing (auto: the chat template if any).")
    parser.add_argument("--sample_size", type=int, default=8, help="n: AISP samples per iteration.")
    parser.add_argument("--n_iterations", type=int, default=4, help="kappa: AISP iterations; N = n * kappa for both.")
    parser.add_argument("--prompt_batch_size", type=int, default=4, help="Batched AISP: prompts per batch.")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="tau: new tokens of every decode.")
    parser.add_argument("--max_steps", type=int, default=48, help="Optimizer steps of every training.")
    parser.add_argument("--learning_rate", type=float, default=2e-4, help="Learning rate of every training.")
    parser.add_argument("--per_device_train_batch_size", type=int, default=4, help="Batch of every training.")
    parser.add_argument("--lora_r", type=int, default=16, help="LoRA rank (attention projections).")
    parser.add_argument("--lora_alpha", type=int, default=32, help="LoRA alpha.")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta (sigmoid loss).")
    parser.add_argument("--max_length", type=int, default=256, help="Token limit of a training row.")
    parser.add_argument(
        "--keep_nonpositive_margin", action="store_true",
        help="Keep DPO pairs whose chosen and rejected rewards tie (dropped by default: no preference signal).",
    )  # fmt: skip
    parser.add_argument("--eval_batch_size", type=int, default=8, help="Prompts per greedy-evaluation batch.")
    parser.add_argument("--device", default=None, help="Device (default: cuda when available, else cpu).")
    parser.add_argument(
        "--use_vllm", action="store_true", help="Generate the training data and AISP's held-out answers on a vLLM "
        "engine (`bash scripts/setup.sh --vllm`) started once and kept next to the HF model, which still decodes "
        "the greedy evaluations and trains. Worth it on a GPU; on CPU vLLM is slower at this model size (README)."
    )  # fmt: skip
    parser.add_argument(
        "--vllm_gpu_memory_utilization", type=float, default=0.3,
        help="With --use_vllm on a GPU: the share of its memory vLLM may take (the HF model and training take the "
        "rest).",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU.")
    parser.add_argument("--no_save_models", action="store_true", help="Do not keep the trained LoRA adapters.")
    parser.add_argument("--output_dir", default="outputs/bench-finetune", help="Units, data, models and the report.")
    parser.add_argument("--report_only", action="store_true", help="Only rebuild the report from the saved units.")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Fails before any model loads on a bad value, naming the flag."""
    for name in ("num_train_prompts", "num_eval_prompts", "sample_size", "n_iterations", "prompt_batch_size",
                 "max_new_tokens", "max_steps", "per_device_train_batch_size", "eval_batch_size", "threads",
                 "max_length"):  # fmt: skip
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"`--{name}` must be >= 1, got {value!r}.")
    if args.sample_size * args.n_iterations < 2:
        raise ValueError(
            f"`--sample_size` x `--n_iterations` = {args.sample_size * args.n_iterations}: DPO pairs need N >= 2 "
            "samples per prompt (chosen = best, rejected = worst); raise either."
        )
    if not args.learning_rate > 0 or not args.beta > 0:
        raise ValueError(f"`--learning_rate` and `--beta` must be > 0, got {args.learning_rate!r}, {args.beta!r}.")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.rewards)) != len(args.rewards):
        raise ValueError(f"`--seeds` {args.seeds} and `--rewards` {args.rewards} must not repeat an entry.")
    for name in args.rewards:
        check_reward_spec(name)


def generation_arguments(args: argparse.Namespace, seed: int) -> AISPGenerationArguments:
    """The pipeline's arguments for one seed: prompts, framing, horizon and the AISP budget (package defaults)."""
    return AISPGenerationArguments(
        prompt_source=args.prompt_source,
        max_prompts=args.num_train_prompts,
        num_eval_prompts=args.num_eval_prompts,
        framing=args.framing,
        max_new_tokens=args.max_new_tokens,
        sample_size=args.sample_size,
        n_iterations=args.n_iterations,
        prompt_batch_size=args.prompt_batch_size,
        aisp_seed=seed,
        eval_batch_size=args.eval_batch_size,
        use_vllm=args.use_vllm,
        vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
    )


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What must not change between a unit and the units it is compared with (checked on resume), JSON-ready.

    ``aisp`` is AISP's full configuration (the package defaults plus n and kappa), so that a unit made before a
    default changed does not pass for the new defaults."""
    keys = ("model_name_or_path", "prompt_source", "num_train_prompts", "num_eval_prompts", "framing", "sample_size",
            "n_iterations", "max_new_tokens", "max_steps", "learning_rate", "per_device_train_batch_size", "lora_r",
            "lora_alpha", "beta", "max_length", "keep_nonpositive_margin")  # fmt: skip
    aisp = generation_arguments(args, 0).aisp_config().settings()
    for key in ("seed", "prompt_batch_size", "n_candidates"):  # they do not change what is searched
        aisp.pop(key)
    engine = {"generation_engine": "vllm"} if args.use_vllm else {}  # BoN's top-p draws differ between engines
    return json.loads(json.dumps({**{k: getattr(args, k) for k in keys}, "aisp": aisp, **engine}))


class ConstantReward(RewardFunction):
    """Scores every text 0: BoN's samples are decoded with it once per seed, then re-scored for every reward."""

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        return [0.0] * len(texts)

    @property
    def name(self) -> str:
        return "constant (decode only, re-scored per reward)"


def rescore_records(records: list[dict[str, Any]], reward: RewardFunction) -> list[dict[str, Any]]:
    """Best-of-N records with every sample (and the greedy answer) scored by ``reward``; ``best`` and the curves
    recomputed (first sample on ties, as `AISPResult.best`)."""
    rescored = []
    for record in records:
        samples = [dict(s) for s in record["samples"]]
        values, i_best = rescore_samples(
            reward, record["prompt"], [s["completion"] for s in samples], [s["text"] for s in samples]
        )
        for sample, value in zip(samples, values, strict=True):
            sample["reward"] = value
        finite = [v for v in values if math.isfinite(v)]
        best = samples[i_best or 0]
        new = {**record, "samples": samples, "best": best}
        new["mean_reward"] = [sum(finite) / len(finite)] if finite else [math.nan]
        new["best_reward"] = new["best_so_far"] = [best["reward"]]
        if record.get("greedy"):
            greedy = record["greedy"]
            value = reward([record["prompt"]], [greedy["completion"]], [record["query"] + greedy["completion"]])
            new["greedy"] = {**greedy, "reward": float(value[0])}
        rescored.append(new)
    return rescored


# --------------------------------------------------------------------------------------------------- the runner


class Runner:
    """Holds the base model, the prompts and the rewards of one benchmark run, and runs its units."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.output_dir = Path(args.output_dir)
        self.store = UnitStore(self.output_dir, settings_of(args))
        self.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        gen = generation_arguments(args, args.seeds[0])
        try:  # a bad source fails before the model loads
            self.train_prompts, self.eval_prompts = gen.load_prompts()
        except ValueError as error:  # the pipeline names its own fields: say which flags they are here
            raise ValueError(
                f"{error} Here max_prompts is --num_train_prompts ({args.num_train_prompts}) and num_eval_prompts is "
                f"--num_eval_prompts ({args.num_eval_prompts})."
            ) from error
        self.model, self.tokenizer = load_model_and_tokenizer(args.model_name_or_path, device=self.device)
        self.dataset_format = gen.resolved_dataset_format(self.tokenizer)
        _, self.eval_query_ids = tokenize_prompts(self.tokenizer, self.eval_prompts, args.framing)
        self.eval_texts = [prompt_text(p) for p in self.eval_prompts]
        self.embedder = SentenceEmbedder(device=self.device)
        self._rewards: dict[str, RewardFunction] = {}
        self.engine: Any | None = None  # with --use_vllm: the vLLM engine, started by the first generation

    def generator(self) -> Any:
        """What decodes the samples: the HF model, or with ``--use_vllm`` one vLLM engine (started on first use)."""
        if not self.args.use_vllm:
            return self.model
        if self.engine is None:
            self.engine = load_vllm_engine(generation_arguments(self.args, 0), self.args.model_name_or_path)
        return self.engine

    def close(self) -> None:
        """Shuts the vLLM engine down, if one was started."""
        if self.engine is not None:
            free_llm(self.engine)
            self.engine = None

    def reward(self, name: str) -> RewardFunction:
        """The reward ``name``, built once. The judge of the embedded SmolLM2 reuses the base model (it is never
        trained: every training loads its own copy) instead of loading a second one."""
        if name not in self._rewards:
            if name == "judge" and self.args.model_name_or_path == EMBEDDED_MODEL:
                self._rewards[name] = JudgeReward(self.model, self.tokenizer)
            else:
                self._rewards[name] = build_reward(name, device=self.device, embedder=self.embedder)
        return self._rewards[name]

    # -- units ------------------------------------------------------------------------------------------------
    def run_unit(self, reward: str, stage: str, seed: int | None, compute) -> dict[str, Any]:
        """The saved unit ``units/<reward>/<stage>/seed<seed>.json`` (``all.json`` for the seed-independent base) if
        there is one with these settings; else ``compute()``, timed and saved."""
        path = self.store.path(reward_key(reward), stage, "all" if seed is None else f"seed{seed}")
        label = f"{reward} {stage} {'all seeds' if seed is None else f'seed {seed}'}"
        return self.store.get_or_compute(path, compute, label, {"reward": reward, "stage": stage, "seed": seed})

    def generate(self, reward_name: str, reward: RewardFunction, method: str, prompts, seed: int, folder: Path):
        gen = generation_arguments(self.args, seed)
        args = self.args
        return run_generation(
            self.generator(), self.tokenizer, reward, prompts, gen.aisp_config(), folder,
            max_new_tokens=args.max_new_tokens, framing=args.framing, greedy_batch_size=args.eval_batch_size,
            show_progress=False, model_name=args.model_name_or_path, reward_name=reward_name, method=method,
        )  # fmt: skip

    def data_dir(self, reward: str | None, name: str, seed: int) -> Path:
        return self.output_dir / "data" / (reward_key(reward) if reward else "_shared") / name / f"seed{seed}"

    def data_unit(self, reward: str, source: str, seed: int) -> dict[str, Any]:
        """Training data of one source: AISP searches with the reward; BoN's shared decodes are re-scored."""

        def compute() -> dict[str, Any]:
            extra = 0.0
            if source == "aisp":
                records = self.generate(reward, self.reward(reward), "aisp", self.train_prompts, seed,
                                        self.data_dir(reward, "aisp", seed))  # fmt: skip
            else:
                start = time.perf_counter()
                decode = self.decode_bon(seed)  # decodes now, or loads the decoding an earlier unit made
                # the unit's time is its re-scoring plus its share of the shared decoding, counted once
                extra = decode["seconds"] / len(self.args.rewards) - (time.perf_counter() - start)
                folder = self.data_dir(reward, source, seed)
                records = rescore_records(decode_records(self.data_dir(None, source, seed)), self.reward(reward))
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            return {"seconds": extra, **data_summary(records)}

        return self.run_unit(reward, f"data_{source}", seed, compute)

    def decode_bon(self, seed: int) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            records = self.generate("constant", ConstantReward(), "bon_top_p", self.train_prompts, seed,
                                    self.data_dir(None, "bon_top_p", seed))  # fmt: skip
            return {"prompts": len(records)}

        return self.run_unit("_shared", "decode_bon_top_p", seed, compute)

    def records_of(self, reward: str, source: str, seed: int) -> list[dict[str, Any]]:
        folder = self.data_dir(reward, source, seed)
        return decode_records(folder)

    def evaluate(self, model, reward: RewardFunction) -> dict[str, Any]:
        """Greedy answers of ``model`` on the held-out prompts: reward, base-model NLL per token, coherence."""
        model.eval()
        rows = greedy_records(model, self.tokenizer, reward, self.eval_query_ids, self.eval_texts,
                              self.args.max_new_tokens, self.args.eval_batch_size)  # fmt: skip
        return self.describe([r["completion"] for r in rows], [r["completion_ids"] for r in rows],
                             [r["reward"] for r in rows])  # fmt: skip

    def describe(self, completions: list[str], completion_ids: list[list[int]], rewards: list[float]):
        nll = [token_nll(self.model, q, c) for q, c in zip(self.eval_query_ids, completion_ids, strict=True)]
        return {
            "rewards": [float(r) for r in rewards],
            "completions": completions,
            "nll_per_token": nll,
            "coherence": coherence(self.eval_texts, completions, self.embedder),
            "diversity": [distinct_ngram_diversity(c) for c in completions],
        }

    def base_unit(self, reward: str) -> dict[str, Any]:
        return self.run_unit(reward, "base", None, lambda: self.evaluate(self.model, self.reward(reward)))

    def aisp_held_out_unit(self, reward: str, seed: int) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            records = self.generate(reward, self.reward(reward), "aisp", self.eval_prompts, seed,
                                    self.data_dir(reward, "aisp_held_out", seed))  # fmt: skip
            best = [r["best"] for r in records]
            return self.describe([b["completion"] for b in best], [b["completion_ids"] for b in best],
                                 [b["reward"] for b in best])  # fmt: skip

        return self.run_unit(reward, "aisp_held_out", seed, compute)

    def train_unit(self, reward: str, name: str, seed: int) -> dict[str, Any]:
        """Trains ``name`` (``sft_aisp``, ...) on its source's data from a fresh copy of the base model, evaluates."""
        algorithm, source = name.split("_", 1)
        args = self.args

        def compute() -> dict[str, Any]:
            records = self.records_of(reward, source, seed)
            if algorithm == "sft":
                dataset = build_sft_dataset(records, self.dataset_format)
            else:
                dataset = build_preference_dataset(
                    records, rejected="worst", dataset_format=self.dataset_format,
                    drop_nonpositive_margin=not args.keep_nonpositive_margin, seed=seed,
                )  # fmt: skip
                if len(dataset) == 0:
                    raise ValueError(
                        f"{reward} / {source} / seed {seed}: no preference pair has a positive reward margin (every "
                        f"sample of every prompt tied); raise --sample_size / --n_iterations, or pass "
                        "--keep_nonpositive_margin."
                    )
            model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, device=self.device)
            folder = self.output_dir / "models" / reward_key(reward) / name / f"seed{seed}"
            config = training_config(args, algorithm, folder, seed, self.device)
            peft = lora_config(args.lora_r, args.lora_alpha)
            trainer = train_sft if algorithm == "sft" else train_dpo
            outcome = trainer(model, tokenizer, dataset, config, peft)
            if not args.no_save_models:
                outcome.trainer.save_model(str(folder))
            start = time.perf_counter()
            evaluation = self.evaluate(outcome.model, self.reward(reward))
            unit = {
                "training": outcome.summary(),
                "eval_seconds": time.perf_counter() - start,
                "rows": len(dataset),
                **evaluation,
            }
            del outcome, model, trainer
            gc.collect()
            return unit

        return self.run_unit(reward, name, seed, compute)


def training_config(args: argparse.Namespace, algorithm: str, folder: Path, seed: int, device: str):
    """The `SFTConfig` / `DPOConfig` every model of the benchmark trains with (only the data differs)."""
    from trl import DPOConfig, SFTConfig

    common = dict(
        output_dir=str(folder), max_steps=args.max_steps, per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=1, learning_rate=args.learning_rate, lr_scheduler_type="constant",
        logging_steps=max(1, args.max_steps // 8), save_strategy="no", report_to="none", max_length=args.max_length,
        seed=seed, data_seed=seed, bf16=False, gradient_checkpointing=False, use_cpu=device == "cpu",
        disable_tqdm=True,
    )  # fmt: skip
    if algorithm == "sft":
        return SFTConfig(**common)
    return DPOConfig(**common, beta=args.beta, loss_type=["sigmoid"])


def decode_records(folder: Path) -> list[dict[str, Any]]:
    """The merged ``records.jsonl`` of a generation folder."""
    with (folder / "records.jsonl").open() as f:
        return [json.loads(line) for line in f if line.strip()]


def data_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per prompt: samples drawn (the budget), best reward, base greedy reward."""
    return {
        "prompts": len(records),
        "samples_per_prompt": [len(r["samples"]) for r in records],
        "best_rewards": [float(r["best"]["reward"]) for r in records],
        "greedy_rewards": [float(r["greedy"]["reward"]) for r in records],
    }


# -------------------------------------------------------------------------------------------------- the report


def _seed_table(units: list[dict[str, Any]], key: str) -> list[list[float]]:
    return [[float(v) for v in u[key]] for u in units]


def build_report(units: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Aggregates the saved units of ``args.seeds`` (per reward) into the report's tables."""
    report: dict[str, Any] = {"settings": settings_of(args), "seeds": args.seeds, "rewards": {}}
    units = [u for u in units if u["seed"] is None or u["seed"] in args.seeds]  # None: the deterministic base
    seeds_done = set()
    uneven = []
    for reward in args.rewards:
        mine = [u for u in units if u["reward"] == reward]
        by_stage = {s: sorted((u for u in mine if u["stage"] == s), key=lambda u: u["seed"]) for s in
                    ("base", "aisp_held_out", *TRAINED, *(f"data_{s}" for s in SOURCES))}  # fmt: skip
        if not by_stage["base"]:
            continue
        base = by_stage["base"][0]
        models = {"base": [base], "aisp": by_stage["aisp_held_out"]} | {n: by_stage[n] for n in TRAINED}
        section: dict[str, Any] = {"models": {}, "paired": {}, "gap_recovered": {}, "data": {}, "seconds": {}}
        tables: dict[str, list[list[float]]] = {}
        for name, us in models.items():
            if not us:
                continue
            tables[name] = _seed_table(us, "rewards")
            row = {"seeds": [u["seed"] for u in us], "held_out_reward": bootstrap_ci(seed_mean(tables[name]))}
            for key in ("nll_per_token", "coherence", "diversity"):
                row[key] = bootstrap_ci(seed_mean(_seed_table(us, key)))
            if name in TRAINED:
                row["train_loss"] = sum(u["training"]["train_loss"] for u in us) / len(us)
                row["update_norm"] = sum(u["training"]["update_norm"] for u in us) / len(us)
                row["rows"] = [u["rows"] for u in us]
                seeds_done.update(u["seed"] for u in us)
            section["models"][name] = row
        if len({tuple(row["seeds"]) for name, row in section["models"].items() if name != "base"}) > 1:
            uneven.append(reward)
        # pairs: seeds matched by seed value; the deterministic base pairs with every seed
        for a, b in PAIRS:
            if a not in tables or b not in tables:
                continue
            common = _common_seeds(models[a], models[b])
            if not common:
                continue
            section["paired"][f"{a} vs {b}"] = paired_comparison(
                _rows_for(models[a], common), _rows_for(models[b], common)
            )
        if "aisp" in tables:
            gap = [x - y for x, y in zip(seed_mean(tables["aisp"]), tables["base"][0], strict=True)]
            finite = [g for g in gap if math.isfinite(g)]
            section["aisp_gap"] = sum(finite) / len(finite) if finite else math.nan
            for name in TRAINED:
                if name in tables:
                    gain = [x - y for x, y in zip(seed_mean(tables[name]), tables["base"][0], strict=True)]
                    # no gap (AISP not above the base): P is undefined, not a huge or negative number
                    ratio = bootstrap_ratio_ci(gain, gap) if section["aisp_gap"] > 0 else (math.nan,) * 3
                    section["gap_recovered"][name] = ratio
        for source in SOURCES:
            us = by_stage[f"data_{source}"]
            if us:
                section["data"][source] = {
                    "seeds": [u["seed"] for u in us],
                    "samples_per_prompt": sorted({n for u in us for n in u["samples_per_prompt"]}),
                    "train_best_reward": bootstrap_ci(seed_mean(_seed_table(us, "best_rewards"))),
                    "sft_rows": [u["rows"] for u in by_stage[f"sft_{source}"]],
                    "dpo_pairs": [u["rows"] for u in by_stage[f"dpo_{source}"]],
                }
        budgets = [tuple(d["samples_per_prompt"]) for d in section["data"].values()]
        section["same_budget"] = len(set(budgets)) <= 1
        stage_units = {"base eval": [base], **{k: v for k, v in by_stage.items() if k != "base"}}
        for stage, us in stage_units.items():
            if us:
                section["seconds"][stage] = sum(u["seconds"] for u in us) / len(us)
        report["rewards"][reward] = section
    decoded = sorted((u for u in units if u["stage"] == "decode_bon_top_p"), key=lambda u: u["seed"])
    if decoded:
        report["decode_bon_top_p_seconds"] = sum(u["seconds"] for u in decoded) / len(decoded)
    fix = "raise --num_eval_prompts (default 48) and run >= 3 --seeds"
    warning = smoke_test_warning(args.num_eval_prompts, max(len(seeds_done), 1), fix=fix)
    if warning or len(seeds_done) < 3:
        report["warning"] = warning or f"{len(seeds_done)} seed(s): too few to tell the seeds' spread from an effect."
    if uneven:  # an unfinished run: rows over different seeds are not comparable, the paired rows still are
        note = (f"unfinished units ({', '.join(uneven)}): the models' rows average different seeds; compare the "
                "paired rows (matched seeds), or finish the run.")  # fmt: skip
        report["warning"] = f"{report['warning']} Also {note}" if "warning" in report else f"U{note[1:]}"
    return report


def _common_seeds(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[int | None]:
    seeds_a, seeds_b = {u["seed"] for u in a}, {u["seed"] for u in b}
    if None in seeds_b:  # the base: one deterministic unit
        return sorted(seeds_a)
    return sorted(seeds_a & seeds_b)


def _rows_for(us: list[dict[str, Any]], seeds: list[int | None]) -> list[list[float]]:
    by_seed = {u["seed"]: u for u in us}
    return [[float(v) for v in (by_seed[s] if s in by_seed else by_seed[None])["rewards"]] for s in seeds]


def report_markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    total = s["sample_size"] * s["n_iterations"]
    lines = [
        f"AISP plus fine-tuning: model `{s['model_name_or_path']}`, {s['num_train_prompts']} training prompts of "
        f"`{s['prompt_source']}`, {s['num_eval_prompts']} held-out prompts, N = {s['sample_size']}·{s['n_iterations']}"
        f" = {total} samples per prompt for AISP and BoN (top-p), {s['max_new_tokens']} new tokens; every model "
        f"LoRA r {s['lora_r']}, {s['max_steps']} steps at lr {s['learning_rate']:g}, batch "
        f"{s['per_device_train_batch_size']} (DPO: sigmoid, beta {s['beta']:g}, rejected = worst sample). Held-out "
        "greedy reward: mean [95% bootstrap CI over prompts] of the seed-averaged value. NLL: the answers' mean "
        "per-token negative log-likelihood under the base model; coherence: MiniLM cosine of prompt and answer; "
        "diversity: distinct 2-4-grams. P: fraction of the base -> AISP gap recovered, (model − base) / (AISP − "
        "base), with a paired bootstrap CI.",
        "",
    ]
    if report.get("warning"):
        lines += [f"> **Warning**: {report['warning']}", ""]
    for reward, section in report["rewards"].items():
        lines += [
            f"### {reward}",
            "",
            "| model | seeds | held-out reward | P (gap recovered) | NLL / token | coherence | diversity | loss |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in section["models"].items():
            gap = section["gap_recovered"].get(name)
            loss = row.get("train_loss")
            metrics = " | ".join(format_ci(row[key], 2) for key in ("nll_per_token", "coherence", "diversity"))
            lines.append(
                f"| {LABELS[name]} | {len(row['seeds'])} | {format_ci(row['held_out_reward'])} | "
                f"{format_ci(gap, 2) if gap else '—'} | {metrics} | {'—' if loss is None else f'{loss:.3f}'} |"
            )
        if section.get("aisp_gap", 1.0) <= 0:
            lines += ["", f"AISP did not beat the base on the held-out prompts (mean gap {section['aisp_gap']:+.3f}): "
                      "there is no gap to recover, P is undefined."]  # fmt: skip
        if section["paired"]:
            lines += ["", "| paired (same prompts, seeds) | mean difference [95% CI] | wins / ties / losses | pairs "
                      "| per seed |", "|---|---:|---:|---:|---:|"]  # fmt: skip
            for key, p in section["paired"].items():
                a, b = key.split(" vs ")
                per_seed = ", ".join(f"{d:+.3f}" for d in p["per_seed"])
                lines.append(f"| {LABELS[a]} − {LABELS[b]} | {format_paired(p)} | {p['pairs']} | {per_seed} |")
        if section["data"]:
            lines += ["", "| data source | samples per prompt | best reward (train prompts) | SFT rows | DPO pairs |",
                      "|---|---:|---:|---:|---:|"]  # fmt: skip
            for source, d in section["data"].items():
                lines.append(
                    f"| {SOURCE_LABELS[source]} "
                    f"| {', '.join(map(str, d['samples_per_prompt']))} | {format_ci(d['train_best_reward'])} "
                    f"| {', '.join(map(str, d['sft_rows'])) or '—'} | {', '.join(map(str, d['dpo_pairs'])) or '—'} |"
                )
            if not section["same_budget"]:
                lines.append("\n**The two sources drew different numbers of samples per prompt: not the same budget.**")
        times = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in section["seconds"].items())
        lines += ["", f"Wall time per stage (mean over seeds; training units include their evaluation): {times}."]
        lines.append("")
    if "decode_bon_top_p_seconds" in report:
        lines.append(
            f"BoN (top-p) decoding, shared by the rewards: {report['decode_bon_top_p_seconds']:.1f} s per seed (each "
            "reward's `data_bon_top_p` time includes its share)."
        )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    rewards = list(report["rewards"])
    with agg_figure(path, ncols=len(rewards), figsize=(6 * len(rewards), 3.8)) as axes:
        for ax, reward in zip(axes, rewards, strict=True):
            rows = report["rewards"][reward]["models"]
            names = list(rows)
            means = [rows[n]["held_out_reward"][0] for n in names]
            errors = [[m - rows[n]["held_out_reward"][1] for n, m in zip(names, means, strict=True)],
                      [rows[n]["held_out_reward"][2] - m for n, m in zip(names, means, strict=True)]]  # fmt: skip
            colors = [
                "gray" if n == "base" else "black" if n == "aisp" else "C0" if "aisp" in n else "C1" for n in names
            ]
            ax.bar(range(len(names)), means, yerr=errors, color=colors, capsize=3)
            ax.set_xticks(range(len(names)), [LABELS[n] for n in names], rotation=30, ha="right", fontsize=7)
            ax.set_ylabel("held-out greedy reward (95% CI)")
            ax.set_title(reward)


# ---------------------------------------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict[str, Any]:
    check_args(args)
    output_dir = Path(args.output_dir)
    if not args.report_only:
        if (args.device or "cpu") == "cpu":
            torch.set_num_threads(args.threads)
        runner = Runner(args)
        try:
            for seed in args.seeds:  # seeds outermost: an interrupted run still has complete seeds
                for reward in args.rewards:
                    for source in SOURCES:
                        runner.data_unit(reward, source, seed)
                    runner.base_unit(reward)
                    runner.aisp_held_out_unit(reward, seed)
                    for name in TRAINED:
                        runner.train_unit(reward, name, seed)
        finally:
            runner.close()
    report = build_report(UnitStore(output_dir, settings_of(args)).units("*/*/*.json"), args)
    markdown = report_markdown(report)
    write_report_files(output_dir, report, markdown, plot=plot if report["rewards"] else None, plot_name="held_out.png")
    print(markdown)
    return report


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("bench_finetune.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        main(make_parser().parse_args())
