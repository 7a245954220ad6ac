"""Sample efficiency of AISP against best-of-n at the same budget (paper 5.2, Fig. 3), on the embedded SmolLM2.

For each reward (default: VADER sentiment, which saturates near +1, and MiniLM relevance of the completion to the
prompt, which does not), runs AISP (n samples x kappa iterations, batched over prompts), BoN (top-p) and BoN (N)
with N = n * kappa samples per prompt, and plain greedy decoding, on the built-in prompts. Prints a markdown table:
mean best reward (± std over prompts), the best-so-far curve at N = n·k (for BoN: best of its first n·k samples),
AISP's paired win rate and seconds per prompt; writes everything (with each run's results.json / results.md /
curves.png) under ``--output_dir``.

```bash
# defaults: 16 prompts, n=8, kappa=8, 32 new tokens, 4 prompts per AISP batch; ~25 min on 2 CPU cores (2 rewards)
python benchmarks/bench_quality.py
python benchmarks/bench_quality.py --rewards vader --num_prompts 32 --output_dir outputs/bench-quality-32
# smoke test (~1 min)
python benchmarks/bench_quality.py --num_prompts 2 --sample_size 2 --n_iterations 2 --max_new_tokens 8
```
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from aisp_trl.config import AISPConfig
from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
from aisp_trl.pipeline.compare import CompareArguments, run_comparison, write_outputs
from aisp_trl.rewards import check_reward_spec
from aisp_trl.samplers.registry import method_label

DEFAULT_LAM = {"vader": 0.3, "relevance": 0.05, "vader+relevance": 0.05}
"""lambda per reward: on the scale of the spread of the rewards within one prompt's samples (VADER spreads more)."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=EMBEDDED_MODEL, help="Causal LM (default: embedded SmolLM2).")
    parser.add_argument(
        "--rewards", nargs="+", default=["vader", "relevance"], help="Rewards to run, e.g. vader relevance."
    )
    parser.add_argument("--num_prompts", type=int, default=16, help="Built-in prompts (1-32).")
    parser.add_argument("--prompt_source", default="builtin", help="'builtin' or a .jsonl file with 'prompt'.")
    parser.add_argument("--framing", default="auto", help="auto | chat_template | user | human | none.")
    parser.add_argument("--sample_size", type=int, default=8, help="n: AISP samples per iteration.")
    parser.add_argument("--n_iterations", type=int, default=8, help="kappa: AISP iterations (budget N = n·kappa).")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="Horizon tau (new tokens).")
    parser.add_argument("--prompt_batch_size", type=int, default=4, help="Batched AISP: prompts per batch.")
    parser.add_argument("--sigma2", type=float, default=0.5, help="sigma^2 of AISP and BoN (N).")
    parser.add_argument(
        "--lam", type=float, nargs="+", default=None, help=f"lambda: one value or one per reward ({DEFAULT_LAM})."
    )
    parser.add_argument("--alpha", type=float, default=0.999, help="alpha of Eq. 18.")
    parser.add_argument("--top_p", type=float, default=0.9, help="BoN (top-p) nucleus mass.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of every sampler.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present).")
    parser.add_argument("--output_dir", default="outputs/bench-quality", help="Where the JSON and per-run files go.")
    return parser


def _lams(args: argparse.Namespace) -> list[float]:
    if args.lam is None:
        return [DEFAULT_LAM.get(r, 0.1) for r in args.rewards]
    if len(args.lam) == 1:
        return args.lam * len(args.rewards)
    if len(args.lam) != len(args.rewards):
        raise ValueError(
            f"`--lam` has {len(args.lam)} values for {len(args.rewards)} rewards ({args.rewards}); pass one value "
            "or one per reward."
        )
    return list(args.lam)


def table(summary: list[dict[str, Any]], checkpoints: list[int]) -> str:
    """The benchmark's markdown table, one row per (reward, method)."""
    header = " | ".join(f"N={n}" for n in checkpoints)
    lines = [
        f"| reward | method | best reward (mean ± std) | best so far: {header} | AISP W / T / L | s / prompt |",
        "|---|---|---:|" + "---:|" * (len(checkpoints) + 2),
    ]
    for row in summary:
        curve = " | ".join("—" if v is None or math.isnan(v) else f"{v:.3f}" for v in row["curve"])
        win = row["win_rate"]
        win_text = f"{win['wins']:.0%} / {win['ties']:.0%} / {win['losses']:.0%}" if win else "—"
        lines.append(
            f"| {row['reward']} | {row['label']} | {row['reward_mean']:.3f} ± {row['reward_std']:.3f} | {curve} "
            f"| {win_text} | {row['seconds_per_prompt']:.2f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the benchmark; returns (and writes to ``output_dir/bench_quality.json``) the summary and the reports."""
    lams = _lams(args)
    for reward in args.rewards:  # a bad reward name fails before the model loads
        check_reward_spec(reward)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, device=args.device)
    kappa = args.n_iterations
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, kappa) if k <= kappa})
    checkpoints = [args.sample_size * k for k in ks]
    output_dir = Path(args.output_dir)
    summary, reports = [], {}
    for reward, lam in zip(args.rewards, lams, strict=True):
        compare_args = CompareArguments(
            model_name_or_path=args.model_name_or_path,
            device=args.device,
            reward=reward,
            methods=["aisp", "bon_top_p", "bon_gaussian", "greedy"],
            prompt_source=args.prompt_source,
            framing=args.framing,
            max_prompts=args.num_prompts,
            max_new_tokens=args.max_new_tokens,
            top_p=args.top_p,
            compute_coherence=False,
            compute_base_nll=False,
            output_dir=str(output_dir / reward.replace("/", "_")),
        )
        config = AISPConfig(
            sample_size=args.sample_size,
            n_iterations=kappa,
            sigma2=args.sigma2,
            lam=lam,
            alpha=args.alpha,
            prompt_batch_size=args.prompt_batch_size,
            seed=args.seed,
        )
        report = run_comparison(compare_args, config, model=model, tokenizer=tokenizer)
        write_outputs(report, compare_args.output_dir)
        reports[reward] = report
        curves = report["curves"]
        for method, entry in report["methods"].items():
            key = {"aisp": "aisp_best_so_far"}.get(method, method)
            values = curves.get(key, [])
            summary.append(
                {
                    "reward": reward,
                    "lam": lam,
                    "method": method,
                    "label": method_label(method),
                    "reward_mean": entry["summary"]["reward_mean"],
                    "reward_std": entry["summary"]["reward_std"],
                    "curve": [values[k - 1] if k - 1 < len(values) else None for k in ks],
                    "win_rate": report["win_rates"].get(method),
                    "seconds_per_prompt": entry["summary"]["seconds_per_prompt"],
                }
            )
    markdown = (
        f"AISP vs best-of-n at N = n·κ = {args.sample_size}·{kappa} on {args.num_prompts} prompts, "
        f"{args.max_new_tokens} new tokens, model {args.model_name_or_path}\n\n" + table(summary, checkpoints)
    )
    print(markdown)
    result = {"settings": vars(args) | {"lam": lams}, "checkpoints": checkpoints, "summary": summary}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "bench_quality.json").write_text(json.dumps(result | {"reports": reports}, indent=2, default=str))
    (output_dir / "bench_quality.md").write_text(markdown + "\n")
    return result


if __name__ == "__main__":
    run(make_parser().parse_args())
