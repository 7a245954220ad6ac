"""The reward-KL frontier of the KL-regularised search (issue 19): one `bench_vs_bon.py` run per beta, read back.

Each run (``--kl_coef beta``, its own ``--output_dir``; point ``--samples_dir`` of every run at one plain run's
cache so that RBoN ranks the same BoN samples at every beta) holds, per reward and method, the chosen answers' mean
reward and KL estimate (``-log P_base(y|x)`` summed over the answer), their NLL per token and how many of them
repeat themselves. This script lines the runs up by beta and writes ``frontier.json``, ``frontier.md`` (a table
per reward) and ``frontier.png`` (chosen reward against chosen KL, one line per method through its betas: up and
to the left is better).

```bash
for beta in 0 0.001 0.003 0.01; do
  python benchmarks/bench_vs_bon.py --prompt_source general:tune --num_prompts 16 --methods aisp bon_top_p greedy \\
      --kl_coef $beta --samples_dir runs/kl/samples --rewards vader relevance --seeds 0 --output_dir runs/kl/b$beta
done
python benchmarks/kl_frontier.py --runs runs/kl/b* --output_dir runs/kl
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import TrlParser

from aisp_trl.evaluation.report import agg_figure, format_ci, write_report_files


@dataclass
class FrontierArguments:
    """The runs to line up and where the frontier goes."""

    runs: list[str] = field(default_factory=list, metadata={"help": "bench_vs_bon output folders (one per beta)."})
    output_dir: str = field(default="outputs/kl-frontier", metadata={"help": "Where frontier.json / .md / .png go."})

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError("`runs` is empty; pass the bench_vs_bon output folders, e.g. --runs runs/kl/b*.")


def make_parser() -> TrlParser:
    return TrlParser((FrontierArguments,))


def collect(runs: list[str]) -> dict[str, Any]:
    """``{reward: {method: [point, ...]}}`` with one point per run, sorted by beta; a point holds ``beta``, the
    chosen answers' reward / KL / NLL per token (mean and 95% CI), the guarded reward and the repetitive count."""
    frontier: dict[str, dict[str, list[dict[str, Any]]]] = {}
    labels: dict[str, str] = {}
    for run in runs:
        path = Path(run) / "report.json"
        if not path.is_file():
            raise FileNotFoundError(f"`--runs` {run!r} holds no report.json; run bench_vs_bon.py into it first.")
        report = json.loads(path.read_text())
        beta = report["settings"].get("kl_coef", 0.0)
        labels |= report.get("labels", {})
        for reward, section in report["rewards"].items():
            for method, row in section["methods"].items():
                if "chosen_kl" not in row or method == "greedy":
                    continue
                point = {
                    "beta": beta,
                    "run": str(run),
                    "reward": row["chosen_reward"],
                    "kl": row["chosen_kl"],
                    "nll_per_token": row["nll_per_token"],
                    "repetitive": row["degenerate"],
                    "answers": row["answers"],
                    "guarded": row.get("degenerate_as_greedy"),
                }
                frontier.setdefault(reward, {}).setdefault(method, []).append(point)
    for methods in frontier.values():
        for points in methods.values():
            points.sort(key=lambda p: p["beta"])
    return {"frontier": frontier, "labels": labels}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "Chosen answers per beta: reward, KL estimate (-log P_base(y|x) summed over the answer), the score "
        "s = reward - beta * KL (means), NLL per token, the reward with each repetitive chosen answer scored as "
        "greedy's, and the repetitive answers (mean [95% bootstrap CI over prompts]).",
        "",
    ]
    for reward, methods in result["frontier"].items():
        lines += [f"### {reward}", "", "| method | beta | reward | KL | s | NLL / token | repetitive as greedy | "
                  "repetitive |", "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for method, points in methods.items():
            for p in points:
                guarded = format_ci(p["guarded"]) if p["guarded"] else "—"
                lines.append(
                    f"| {result['labels'].get(method, method)} | {p['beta']:g} | {format_ci(p['reward'])} "
                    f"| {format_ci(p['kl'], 1)} | {p['reward'][0] - p['beta'] * p['kl'][0]:.3f} "
                    f"| {format_ci(p['nll_per_token'], 2)} | {guarded} "
                    f"| {p['repetitive']} of {p['answers']} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Per reward (columns): chosen reward against chosen KL, one line per method through its betas; a second row
    plots the reward with repetitive answers scored as greedy's (what repetition cannot buy) when every run has it."""
    rewards = list(result["frontier"])
    points_of = [p for methods in result["frontier"].values() for ps in methods.values() for p in ps]
    rows = [("reward", "chosen answers' reward")]
    if all(p["guarded"] for p in points_of):
        rows.append(("guarded", "reward, repetitive answers as greedy's"))
    with agg_figure(path, nrows=len(rows), ncols=len(rewards), figsize=(5 * len(rewards), 4 * len(rows))) as axes:
        for i, (key, ylabel) in enumerate(rows):
            for ax, reward in zip(axes[i * len(rewards) : (i + 1) * len(rewards)], rewards, strict=True):
                for method, points in result["frontier"][reward].items():
                    xs, ys = [p["kl"][0] for p in points], [p[key][0] for p in points]
                    ax.plot(xs, ys, marker="o", label=result["labels"].get(method, method))
                    for p, x, y in zip(points, xs, ys, strict=True):
                        ax.annotate(f"β={p['beta']:g}", (x, y), fontsize=6, textcoords="offset points", xytext=(3, 3))
                ax.set_xlabel("chosen answers' KL estimate (nats)")
                ax.set_ylabel(ylabel)
                ax.set_title(reward)
                ax.legend(fontsize=7)


def main(args: FrontierArguments) -> dict[str, Any]:
    result = collect(args.runs)
    text = markdown(result)
    write_report_files(args.output_dir, result, text, stem="frontier", plot=plot if result["frontier"] else None)
    print(text)
    return result


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("kl_frontier.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        main(make_parser().parse_args_and_config()[0])
