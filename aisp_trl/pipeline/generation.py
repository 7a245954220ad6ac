"""The generation step: AISP (or a best-of-N baseline) over a prompt set, sharded with accelerate, resumable.

[`run_generation`] splits the pending prompts between processes (``split_between_processes``), runs batched AISP
per process, records the base model's plain greedy response next to AISP's samples, appends one JSON record per
prompt to ``output_dir/shards/records-{rank:05d}.jsonl`` after each prompt batch, and, once every process is done,
reads all shards back from disk (nothing but a barrier goes between processes, so ``output_dir`` must be on a file
system all processes share). A killed run resumes: prompts whose records are on disk are skipped, none is written
twice; ``aisp_run.json`` records the settings, model, dtype and reward, and a resume with others is refused.
Each prompt's noise stream is derived from the seed and its token ids, so the records do not depend on how the
prompts were split or resumed (exactly so with ``prompt_batch_size=1``; up to padding noise otherwise).
[`evaluate_greedy`] scores a model's greedy answers on held-out prompts, sharded the same way.

Example:
    ```python
    >>> from aisp_trl import AISPConfig
    >>> from aisp_trl.models import load_model_and_tokenizer
    >>> from aisp_trl.pipeline import run_generation
    >>> from aisp_trl.rewards import build_reward
    >>> model, tokenizer = load_model_and_tokenizer()
    >>> records = run_generation(model, tokenizer, build_reward("vader"), ["Describe a rainy day."],
    ...                          AISPConfig(sample_size=8, n_iterations=4, seed=0), "aisp-out", max_new_tokens=32)
    >>> records[0]["best"]["completion"], records[0]["greedy"]["completion"]
    ```
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from torch import nn
from tqdm.auto import tqdm

from ..config import AISPConfig
from ..data import Prompt, prompt_text, render_prompt, resolve_framing
from ..rewards import RewardFunction, as_reward_function
from ..samplers import GreedySampler, LengthSampler
from ..samplers.registry import MethodOptions, build_sampler
from .arguments import GENERATION_METHODS
from .records import (
    RECORDS_FILE,
    RUN_FILE,
    SHARD_DIR,
    _append_means,
    _check_resume,
    _repair_shard,
    _run_settings,
    load_means,
    load_records,
    means_path,
    run_identity,
    shard_path,
)

__all__ = ["default_state", "evaluate_greedy", "greedy_records", "run_generation", "summarize_records",
           "tokenize_prompts"]  # fmt: skip


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[Prompt], framing: str = "auto", max_prompt_length: int | None = None
) -> tuple[list[str], list[list[int]]]:
    """Framed prompt texts and their token ids (the last ``max_prompt_length`` tokens when set)."""
    queries = [render_prompt(tokenizer, p, framing) for p in prompts]
    has_template = resolve_framing(framing, tokenizer) == "chat_template"
    ids = [tokenizer(q, add_special_tokens=not has_template).input_ids for q in queries]
    if max_prompt_length is not None:
        ids = [q[-max_prompt_length:] for q in ids]
    return queries, ids


def greedy_records(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction,
    query_ids: Sequence[list[int]],
    reward_prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """The base model's greedy response to each query, scored: ``{"completion", "completion_ids", "reward"}``."""
    horizon = LengthSampler(max_new_tokens, max_new_tokens + 1)
    sampler = GreedySampler(model, tokenizer, reward, horizon, prompt_batch_size=batch_size)
    results = sampler.search(list(query_ids), prompts=list(reward_prompts))
    return [
        {"completion": r.best.completion, "completion_ids": r.best.completion_ids, "reward": r.best.reward}
        for r in results
    ]


def default_state() -> PartialState:
    """The process group of ``accelerate launch`` (or a single process).

    On a machine without an accelerator the state is created with ``cpu=True``, so that ``accelerate launch
    --multi_gpu --num_processes N`` there runs N gloo processes (accelerate's CPU multi-process mode). An already
    initialised state (e.g. by ``TrainingArguments``: pass ``use_cpu=True`` there for CPU processes) is returned as is.
    """
    return PartialState(cpu=not torch.accelerator.is_available())


def run_generation(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Any,
    prompts: Sequence[Prompt],
    aisp_config: AISPConfig,
    output_dir: str | os.PathLike,
    accelerator: Any | None = None,
    *,
    max_new_tokens: int = 32,
    framing: str = "auto",
    max_prompt_length: int | None = None,
    greedy_batch_size: int | None = None,
    show_progress: bool = True,
    model_name: str | None = None,
    reward_name: str | None = None,
    method: str = "aisp",
    save_means: bool = False,
) -> list[dict[str, Any]]:
    """Runs AISP on every prompt exactly once, sharded over processes and resumable; returns all records.

    Args:
        model (`PreTrainedModel`): the causal LM (on this process's device).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer, with a pad token.
        reward (`RewardFunction` or `Callable[[list[str]], list[float]]`): the reward, see `aisp_trl.rewards`.
        prompts (`Sequence[str | list[dict]]`): prompt strings or conversations; prompt id = position.
        aisp_config (`AISPConfig`): n, kappa, sigma2, lambda, alpha, prompt_batch_size and seed. A ``None`` seed is
            drawn once and stored, so that a resumed run continues with the same one.
        output_dir (`str` or `os.PathLike`): where ``shards/records-{rank:05d}.jsonl``, ``aisp_run.json`` (settings)
            and the merged ``records.jsonl`` go.
        accelerator (`Accelerator` or `PartialState`, *optional*): the process group; defaults to
            [`default_state`] (a single process unless launched with ``accelerate launch``).
        max_new_tokens (`int`, defaults to 32): tau, the new tokens of AISP and of the greedy response.
        framing (`str`, defaults to `"auto"`): how prompts are framed, see `aisp_trl.data.render_prompt`.
        max_prompt_length (`int`, *optional*): keep the last ``max_prompt_length`` prompt tokens.
        greedy_batch_size (`int`, *optional*): batch of the greedy decodes; defaults to ``prompt_batch_size``.
        show_progress (`bool`, defaults to True): a tqdm bar on the main process.
        model_name (`str`, *optional*): the name or path the model was loaded from, recorded in ``aisp_run.json``
            and checked on resume (with the model's dtype); defaults to ``model.config._name_or_path``.
        reward_name (`str`, *optional*): the reward as given (e.g. ``"vader"`` or a reward-model path), recorded and
            checked on resume; defaults to the reward model's path or the reward's ``name``.
        method (`str`, defaults to ``"aisp"``): where the samples come from, one of `GENERATION_METHODS`: AISP, or a
            best-of-N baseline at the same budget ``N = n * kappa`` (``"bon_top_p"``: trl's top-p sampling, p = 0.9,
            T = 1; ``"bon_gaussian"``: BoN (N), i.i.d. zero-mean pre-logit noise with sigma2 = 0.5, the one
            definition of `aisp_trl.samplers.registry.MethodOptions`), so that datasets built
            from each differ only in their source. Recorded and checked on resume.
        save_means (`bool`, defaults to False): also store each prompt's final mean ``U`` and the perturbation ``V``
            of its best response (`(tau, d)` each) in ``shards/means-{rank:05d}.safetensors`` under the keys
            ``"{prompt_id}.mean"`` and ``"{prompt_id}.best"`` (read them with `load_means`). Written before the
            prompt's record, so every record on disk has its means; resuming with ``save_means=True`` a run whose
            records lack them raises. AISP only (the best-of-N baselines have no mean).

    Returns:
        `list[dict]`: one record per prompt, sorted by ``prompt_id``: ``AISPResult.to_dict()`` (``prompt`` is the
        text the reward saw, ``samples``, ``best``, curves, ESS) plus ``prompt_id``, ``prompt_input`` (the prompt as
        given), ``query`` (the framed text the model saw) and ``greedy`` (``completion``, ``completion_ids``,
        ``reward`` of the base model's greedy response) and ``seconds`` (the prompt's share of its batch's search
        time). The same list on every process, read from the shards.

    Raises:
        ValueError: If ``output_dir`` holds a run with other settings, another model, dtype or reward, or records of
            other prompts.
    """
    state = accelerator if accelerator is not None else default_state()
    output_dir = Path(output_dir)
    reward = as_reward_function(reward)
    if not prompts:
        raise ValueError("`prompts` is empty; pass at least one prompt.")
    queries, query_ids = tokenize_prompts(tokenizer, prompts, framing, max_prompt_length)
    reward_prompts = [prompt_text(p) for p in prompts]

    # The seed: the stored one when resuming, else the given one, else one drawn on the main process.
    run_file = output_dir / RUN_FILE
    seed = [aisp_config.seed]
    if seed[0] is None:
        stored = json.loads(run_file.read_text())["aisp"]["seed"] if run_file.is_file() else None
        seed = [stored if stored is not None else secrets.randbits(63)]
        broadcast_object_list(seed)
    config = AISPConfig(**{**asdict(aisp_config), "seed": seed[0]})
    identity = run_identity(model, reward, model_name, reward_name)
    if method not in GENERATION_METHODS:
        raise ValueError(f"`method` must be one of {GENERATION_METHODS}, got {method!r}.")
    if save_means and method != "aisp":
        raise ValueError(
            f"`save_means=True` stores AISP's means, but `method` is {method!r}, which has none; use method='aisp' "
            "or save_means=False."
        )
    settings = _run_settings(config, max_new_tokens, framing, max_prompt_length, identity)
    options = MethodOptions()  # the baselines' one definition (BoN (N): sigma2 = 0.5)
    if method != "aisp":  # an AISP run's settings carry no method key, so its run file stays valid
        settings["method"] = method
    if method == "bon_gaussian":
        settings["bon_sigma2"] = options.bon_sigma2
    _check_resume(run_file, settings)

    # Resume: repair our own shard, then (after everyone has) read every shard; skip the prompt ids on disk.
    own_shard = shard_path(output_dir, state.process_index)
    own_shard.parent.mkdir(parents=True, exist_ok=True)
    _repair_shard(own_shard)
    state.wait_for_everyone()
    done = {r["prompt_id"]: r for r in load_records(output_dir) if r["prompt_id"] < len(prompts)}
    for prompt_id, record in done.items():
        if record["query"] != queries[prompt_id]:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} holds a record for prompt {prompt_id} with another prompt "
                f"({record['query']!r:.60}) than now ({queries[prompt_id]!r:.60}); keep the prompt list (and order) "
                "of the interrupted run, or use a fresh `output_dir`."
            )
    if save_means and done:
        stored = load_means(output_dir)
        lacking = sorted(i for i in done if "mean" not in stored.get(i, {}) or "best" not in stored.get(i, {}))
        if lacking:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} holds records of prompts {lacking[:10]} without stored means (the "
                "run was started with save_means=False); use a fresh `output_dir` to store the means of every prompt."
            )
    state.wait_for_everyone()
    if state.is_main_process:
        run_file.write_text(json.dumps(settings, indent=2))
    pending = [i for i in range(len(prompts)) if i not in done]

    sampler = build_sampler(method, model, tokenizer, reward, max_new_tokens, config, options)
    batch_size = config.prompt_batch_size
    with state.split_between_processes(pending) as mine:
        # Batched AISP: sort by token length (paper 5.3), then fixed batches, flushed to the shard one by one.
        order = sorted(mine, key=lambda i: (len(query_ids[i]), i))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        progress = tqdm(
            total=len(order),
            desc=f"AISP ({len(done)} done before)" if done else "AISP",
            unit="prompt",
            disable=not (show_progress and state.is_main_process),
        )
        with progress, own_shard.open("a") as shard:
            for batch in batches:
                start = time.perf_counter()
                results = sampler.search([query_ids[i] for i in batch], prompts=[reward_prompts[i] for i in batch])
                seconds = (time.perf_counter() - start) / len(batch)  # the batch's search time, shared equally
                greedy = greedy_records(
                    model,
                    tokenizer,
                    reward,
                    [query_ids[i] for i in batch],
                    [reward_prompts[i] for i in batch],
                    max_new_tokens,
                    greedy_batch_size or batch_size,
                )
                if save_means:  # before the records: a record on disk always has its means
                    _append_means(
                        means_path(output_dir, state.process_index),
                        {
                            f"{prompt_id}.{name}": tensor
                            for prompt_id, result in zip(batch, results, strict=True)
                            for name, tensor in (("mean", result.final_mean), ("best", result.best_perturbation))
                        },
                    )
                for prompt_id, result, base in zip(batch, results, greedy, strict=True):
                    record = {
                        "prompt_id": prompt_id,
                        "prompt_input": prompts[prompt_id],
                        "query": queries[prompt_id],
                        **result.to_dict(),
                        "greedy": base,
                        "seconds": seconds,
                    }
                    shard.write(json.dumps(record) + "\n")
                shard.flush()
                os.fsync(shard.fileno())
                progress.update(len(batch))

    # Every shard is flushed and fsynced: after the barrier each process reads them all back from disk, instead of
    # shipping every sample of every record between processes.
    state.wait_for_everyone()
    merged = {r["prompt_id"]: r for r in load_records(output_dir) if r["prompt_id"] < len(prompts)}
    missing = sorted(set(range(len(prompts))) - set(merged))
    if missing:
        raise RuntimeError(
            f"prompts {missing[:10]} have no record in {str(output_dir / SHARD_DIR)!r} after generation; rerun to "
            "resume (with several processes, `output_dir` must be on a file system every process sees)."
        )
    records = [merged[i] for i in range(len(prompts))]
    if state.is_main_process:
        with (output_dir / RECORDS_FILE).open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    state.wait_for_everyone()
    return records


def evaluate_greedy(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 32,
    *,
    framing: str = "auto",
    max_prompt_length: int | None = None,
    batch_size: int = 8,
    accelerator: Any | None = None,
) -> dict[str, Any]:
    """Greedy responses of ``model`` on ``prompts`` and their rewards, sharded over processes.

    Returns:
        `dict`: ``mean_reward`` and per prompt (in order) ``rewards`` and ``completions``; the same on every process.
    """
    state = accelerator if accelerator is not None else default_state()
    reward = as_reward_function(reward)
    if not prompts:
        return {"mean_reward": float("nan"), "rewards": [], "completions": []}
    _, query_ids = tokenize_prompts(tokenizer, prompts, framing, max_prompt_length)
    reward_prompts = [prompt_text(p) for p in prompts]
    was_training = model.training
    model.eval()
    rows: list[tuple[int, str, float]] = []
    with state.split_between_processes(list(range(len(prompts)))) as mine:
        if mine:
            scored = greedy_records(
                model,
                tokenizer,
                reward,
                [query_ids[i] for i in mine],
                [reward_prompts[i] for i in mine],
                max_new_tokens,
                batch_size,
            )
            rows = [(i, s["completion"], s["reward"]) for i, s in zip(mine, scored, strict=True)]
    model.train(was_training)
    if state.num_processes > 1:
        rows = gather_object(rows)
    rows = sorted({r[0]: r for r in rows}.values())
    rewards = [r[2] for r in rows]
    return {"mean_reward": sum(rewards) / len(rewards), "rewards": rewards, "completions": [r[1] for r in rows]}


def summarize_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean AISP best reward, mean base greedy reward (and both per prompt) and the mean best-so-far curve."""
    best = [float(r["best"]["reward"]) for r in records]
    greedy = [float(r["greedy"]["reward"]) for r in records if r.get("greedy")]
    curves = [r["best_so_far"] for r in records if r.get("best_so_far")]
    length = min((len(c) for c in curves), default=0)
    return {
        "num_prompts": len(records),
        "aisp_best_reward": sum(best) / len(best) if best else float("nan"),
        "greedy_reward": sum(greedy) / len(greedy) if greedy else float("nan"),
        "aisp_best_rewards": best,
        "greedy_rewards": greedy,
        "best_so_far_curve": [sum(c[k] for c in curves) / len(curves) for k in range(length)],
    }
