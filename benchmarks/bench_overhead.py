"""Wall-clock overhead of AISP, measured side by side in one run (paper 5.3: 1% per iteration, 8% batched).

Ratios of medians over interleaved repetitions (`aisp_trl.compare.measure_overhead`), every case decoding exactly
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
import json
from pathlib import Path
from typing import Any

import torch

from aisp_trl.compare import build_reward_by_name, measure_overhead
from aisp_trl.data import load_prompts
from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
from aisp_trl.pipeline import tokenize_prompts


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
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, device=args.device)
    reward = build_reward_by_name(args.reward, device=args.device)
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
