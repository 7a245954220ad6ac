"""Wall-clock overhead of AISP, measured side by side in one run (paper 5.3: 1% per iteration, 8% batched).

Ratios of medians over interleaved repetitions (`measure_overhead` below), every case decoding exactly
``--max_new_tokens`` tokens per row (EOS suppressed until then):

- one AISP iteration / one BoN (top-p) iteration, both with n rows, scoring included;
- batched AISP (b prompts x n rows, kappa = b iterations) / BoN (top-p) with N = n·b, per prompt (equal samples);
- greedy ``generate`` with the pre-logit hook adding zeros / plain greedy ``generate`` (the hook's own cost);
- one AISP iteration / plain greedy ``generate`` (what AISP adds to decoding: noise, hook, scoring, update).

Prints a markdown table and writes the JSON to ``--output``.

```bash
# defaults: SmolLM2-135M-Instruct, n=8, b=4, 32 tokens, 5 repetitions: ~6 min on 2 CPU cores
python benchmarks/bench_overhead.py
python benchmarks/bench_overhead.py --sample_size 32 --prompt_batch_size 4 --max_new_tokens 128 --device cuda
# smoke test (~30 s)
python benchmarks/bench_overhead.py --sample_size 2 --prompt_batch_size 2 --max_new_tokens 8 --repeats 1
```
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import GenerationConfig

from aisp_trl.data import load_prompts
from aisp_trl.hooks import find_output_layer, generation_model, perturb_prelogits
from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
from aisp_trl.pipeline import tokenize_prompts
from aisp_trl.rewards import RewardFunction, build_reward, check_reward_spec
from aisp_trl.samplers import AISPSampler, BestOfNSampler, LengthSampler
from aisp_trl.types import SearchResult


def measure_overhead(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Callable[[list[str]], Sequence[float]],
    queries: list[list[int]],
    *,
    sample_size: int = 8,
    prompt_batch_size: int = 4,
    max_new_tokens: int = 32,
    repeats: int = 5,
    sigma2: float = 0.5,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Wall-clock cost ratios of AISP, measured side by side: interleaved repetitions, medians (paper 5.3).

    Every case decodes exactly ``max_new_tokens`` tokens per row (``min_new_tokens = max_new_tokens``: EOS is
    suppressed until the horizon), so the cases differ only in what each method adds. After one untimed warm-up of
    each case, each repetition runs every case once, in an order rotated by one per repetition.

    Cases:
        - ``aisp_iteration``: one AISP iteration on ``queries[0]`` (``n`` rows: noise draw, hooked greedy
          ``generate``, scoring, importance weights and mean update).
        - ``bon_iteration``: trl's best-of-n (top-p sampling) with ``N = n`` on ``queries[0]``, with scoring.
        - ``plain_generate`` / ``hook_zero_noise``: greedy ``generate`` of ``n`` rows of ``queries[0]``, without and
          with the pre-logit hook adding zeros (the hook's own cost).
        - ``batched_aisp``: AISP on ``b = prompt_batch_size`` prompts in one batch of ``b * n`` rows for
          ``kappa = b`` iterations (``n * b`` samples per prompt, paper 3.5: same iterations as BoN).
        - ``bon_equal_budget``: best-of-n (top-p) with ``N = n * b`` on the same ``b`` prompts, one after another.

    Args:
        model, tokenizer: the causal LM and its tokenizer.
        reward (`RewardFunction` or `queries_to_scores`): scores samples in the sampler cases.
        queries (`list[list[int]]`): tokenized prompts; at least ``prompt_batch_size`` of them.
        sample_size (`int`, defaults to 8): ``n``.
        prompt_batch_size (`int`, defaults to 4): ``b`` (and AISP's ``kappa`` in the batched case).
        max_new_tokens (`int`, defaults to 32): the fixed length.
        repeats (`int`, defaults to 5): timed repetitions per case (>= 1; the medians need >= 5 to mean much).
        sigma2 (`float`, defaults to 0.5): AISP's noise variance.
        seed (`int`, defaults to 0): seeds the samplers.
        show_progress (`bool`, defaults to True): a tqdm bar over the timed runs.

    Returns:
        `dict`: ``settings``; ``seconds`` (case -> list of timings); ``median_seconds``; ``ratios``:
        ``aisp_iteration / bon_iteration``, ``batched_aisp / bon_equal_budget``, ``hook_zero_noise /
        plain_generate``, ``aisp_iteration / plain_generate``; ``fixed_length`` (True when every case decoded
        exactly ``max_new_tokens`` tokens per row in the warm-up).
    """
    for name, value in (
        ("sample_size", sample_size),
        ("prompt_batch_size", prompt_batch_size),
        ("max_new_tokens", max_new_tokens),
        ("repeats", repeats),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if len(queries) < prompt_batch_size:
        raise ValueError(
            f"`queries` has {len(queries)} prompts but `prompt_batch_size` is {prompt_batch_size}; pass at least "
            f"{prompt_batch_size} queries or lower `prompt_batch_size`."
        )
    n, b, tau = sample_size, prompt_batch_size, max_new_tokens
    horizon = LengthSampler(tau, tau + 1)
    generator = generation_model(model)
    width = find_output_layer(model).weight.shape[1]
    device = find_output_layer(model).weight.device
    one, batch = [queries[0]], queries[:b]

    # min_new_tokens = max_new_tokens: no EOS before tau tokens, so every case decodes exactly tau tokens per row
    greedy = copy.deepcopy(getattr(generator, "generation_config", None) or GenerationConfig())
    greedy.update(do_sample=False, num_beams=1, max_new_tokens=tau, min_new_tokens=tau)
    greedy.update(temperature=None, top_p=None, top_k=None, min_p=None)
    if greedy.pad_token_id is None:
        greedy.pad_token_id = tokenizer.pad_token_id
    top_p = copy.deepcopy(greedy)
    top_p.update(do_sample=True, top_p=0.9, top_k=0, temperature=1.0)  # BestOfNSampler's default BoN (top-p)

    aisp_iter = AISPSampler(model, tokenizer, reward, horizon, n, seed, 1, greedy, n_iterations=1, sigma2=sigma2)
    bon_iter = BestOfNSampler(model, tokenizer, reward, horizon, n, seed, 1, top_p)
    aisp_batched = AISPSampler(
        model, tokenizer, reward, horizon, n, seed, 1, greedy, n_iterations=b, sigma2=sigma2, prompt_batch_size=b
    )
    bon_budget = BestOfNSampler(model, tokenizer, reward, horizon, n * b, seed, 1, top_p)

    ids = torch.tensor([queries[0]] * n, dtype=torch.long, device=device)  # (n, L_q), one prompt: no padding
    zeros = torch.zeros(n, tau, width)  # (n, tau, d)

    def plain() -> int:
        with torch.no_grad():
            out = generator.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=greedy)
        return int(out.shape[1] - ids.shape[1])

    def hooked() -> int:
        with torch.no_grad(), perturb_prelogits(model, zeros):
            out = generator.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=greedy)
        return int(out.shape[1] - ids.shape[1])

    def lengths(results: list[SearchResult]) -> set[int]:
        return {len(s.completion_ids) for r in results for s in r.samples}

    cases: dict[str, Callable[[], Any]] = {
        "aisp_iteration": lambda: lengths(aisp_iter.search(one)),
        "bon_iteration": lambda: lengths(bon_iter.search(one)),
        "plain_generate": lambda: {plain()},
        "hook_zero_noise": lambda: {hooked()},
        "batched_aisp": lambda: lengths(aisp_batched.search(batch)),
        "bon_equal_budget": lambda: lengths(bon_budget.search(batch)),
    }
    names = list(cases)
    fixed_length = all(cases[name]() == {tau} for name in names)  # warm-up, and the fixed-length check
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with tqdm(total=repeats * len(names), desc="overhead", unit="run", disable=not show_progress) as progress:
        for r in range(repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:  # interleaved: each case sees the same machine load
                start = time.perf_counter()
                cases[name]()
                seconds[name].append(time.perf_counter() - start)
                progress.update(1)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = {
        "aisp_iteration / bon_iteration": median["aisp_iteration"] / median["bon_iteration"],
        "batched_aisp / bon_equal_budget": median["batched_aisp"] / median["bon_equal_budget"],
        "hook_zero_noise / plain_generate": median["hook_zero_noise"] / median["plain_generate"],
        "aisp_iteration / plain_generate": median["aisp_iteration"] / median["plain_generate"],
    }
    return {
        "settings": {
            "sample_size": n,
            "prompt_batch_size": b,
            "batched_aisp_iterations": b,
            "samples_per_prompt_batched": n * b,
            "max_new_tokens": tau,
            "repeats": repeats,
            "sigma2": sigma2,
            "seed": seed,
            "query_lengths": [len(q) for q in batch],
            "torch_threads": torch.get_num_threads(),
        },
        "seconds": seconds,
        "median_seconds": median,
        "ratios": ratios,
        "fixed_length": fixed_length,
    }


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=EMBEDDED_MODEL, help="Causal LM (default: embedded SmolLM2).")
    parser.add_argument("--reward", default="vader", help="vader | relevance | vader+relevance | reward-model path.")
    parser.add_argument("--prompt_source", default="builtin", help="'builtin' or a .jsonl file with 'prompt'.")
    parser.add_argument("--framing", default="auto", help="auto | chat_template | user | human | none.")
    parser.add_argument("--sample_size", type=int, default=8, help="n: rows per AISP / BoN iteration.")
    parser.add_argument("--prompt_batch_size", type=int, default=4, help="b: prompts per batched-AISP batch (= kappa).")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="The fixed number of decoded tokens.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repetitions per case (median taken).")
    parser.add_argument("--sigma2", type=float, default=0.5, help="AISP's noise variance.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the samplers.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the model stays on CPU).")
    parser.add_argument("--output", default="outputs/bench_overhead.json", help="The JSON file.")
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
    return parser


def table(result: dict[str, Any]) -> str:
    """Medians and ratios as markdown."""
    lines = ["| case | median s | all s |", "|---|---:|---|"]
    for name, median in result["median_seconds"].items():
        times = ", ".join(f"{t:.3f}" for t in result["seconds"][name])
        lines.append(f"| {name} | {median:.3f} | {times} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in result["ratios"].items()]
    s = result["settings"]
    lines += [
        "",
        f"n={s['sample_size']}, b={s['prompt_batch_size']} (batched AISP: kappa={s['batched_aisp_iterations']}, "
        f"{s['samples_per_prompt_batched']} samples per prompt), {s['max_new_tokens']} tokens per row "
        f"(fixed length verified: {result['fixed_length']}), {s['repeats']} interleaved repetitions, "
        f"{s['torch_threads']} torch threads, query lengths {s['query_lengths']}.",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Loads the model, measures, prints the table and writes the JSON; returns the measurement."""
    check_reward_spec(args.reward)  # a bad reward name fails before the model loads
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, device=args.device)
    reward = build_reward(args.reward, device=args.device)
    prompts = load_prompts(args.prompt_source, max_prompts=args.prompt_batch_size)
    _, queries = tokenize_prompts(tokenizer, prompts, framing=args.framing)
    result = measure_overhead(
        model,
        tokenizer,
        reward,
        queries,
        sample_size=args.sample_size,
        prompt_batch_size=args.prompt_batch_size,
        max_new_tokens=args.max_new_tokens,
        repeats=args.repeats,
        sigma2=args.sigma2,
        seed=args.seed,
        show_progress=not args.no_progress,
    )
    result["settings"] |= {"model": args.model_name_or_path, "reward": args.reward, "device": args.device or "cpu"}
    print(table(result))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    run(make_parser().parse_args())
