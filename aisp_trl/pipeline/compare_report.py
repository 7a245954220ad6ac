"""`recipes/compare.py`'s report: the per-method summaries, AISP's paired win rates, the Fig. 3 curves, and the
files (``results.json``, ``results.md``, ``curves.png``), built from `MethodRun` s without any model call."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import AISPConfig
from ..evaluation.curves import aggregate_curves, bon_curve, paired_win_rate
from ..evaluation.report import agg_figure, fmt, write_report_files
from ..evaluation.stats import bootstrap_ci
from ..evaluation.text import distinct_ngram_diversity
from ..samplers.registry import method_label
from ..types import SearchResult

__all__ = [
    "MethodRun",
    "add_metric",
    "build_curves",
    "build_report",
    "plot_curves",
    "results_markdown",
    "write_outputs",
]


@dataclass
class MethodRun:
    """One method's results on the prompts, in prompt order, with the wall-clock time each prompt cost.

    ``seconds[i]`` is the time of the ``search`` call that produced prompt ``i`` divided by the prompts that call
    handled (a batch of AISP or BoN (N) prompts shares its time equally).
    """

    method: str
    results: list[SearchResult]
    seconds: list[float]
    training_seconds: float | None = None  # a trained method's one-off cost (data collection + fit), else None

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))


def add_metric(report: dict[str, Any], method: str, key: str, values: list[float]) -> None:
    entry = report["methods"][method]
    for record, value in zip(entry["per_prompt"], values, strict=True):
        record[key] = value
    entry["summary"][key] = _mean(values)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _std(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.stdev(finite) if len(finite) > 1 else 0.0


def build_report(
    runs: dict[str, MethodRun],
    prompts: list[str],
    config: AISPConfig,
    args: Any,
    reward_name: str | None = None,
) -> dict[str, Any]:
    """Summaries, per-prompt records, win rates and curves from the methods' runs (no model calls).

    Returns:
        `dict` with ``settings``, ``methods`` (``summary``: ``samples_per_prompt``, ``reward_mean``,
        ``reward_std``, ``diversity``, ``seconds_per_prompt``, ``total_seconds``; ``per_prompt``: ``prompt``,
        ``best_reward``, ``best_completion``, ``best_text``, ``diversity``, ``seconds``), ``win_rates`` and
        ``curves``.
    """
    methods: dict[str, Any] = {}
    for method, run in runs.items():
        best = [r.best for r in run.results]
        rewards = [s.reward for s in best]
        diversity = [distinct_ngram_diversity(s.completion) for s in best]
        methods[method] = {
            "label": method_label(method),
            "summary": {
                "samples_per_prompt": len(run.results[0].samples),
                "reward_mean": _mean(rewards),
                "reward_std": _std(rewards),
                "diversity": _mean(diversity),
                "reward_ci95": list(bootstrap_ci(rewards)[1:]),
                "seconds_per_prompt": run.total_seconds / len(run.results),
                "total_seconds": run.total_seconds,
                "training_seconds": run.training_seconds,
            },
            "per_prompt": [
                {
                    "prompt": prompt,
                    "best_reward": s.reward,
                    "best_completion": s.completion,
                    "best_text": s.text,
                    "diversity": d,
                    "seconds": t,
                }
                for prompt, s, d, t in zip(prompts, best, diversity, run.seconds, strict=True)
            ],
        }
    win_rates: dict[str, Any] = {}
    if "aisp" in runs:
        aisp = [r.best.reward for r in runs["aisp"].results]
        for method, run in runs.items():
            if method != "aisp":
                other = [r.best.reward for r in run.results]
                win_rates[method] = paired_win_rate(aisp, other, tol=args.win_tolerance)
    return {
        "settings": {
            "model": args.model_name_or_path,
            "reward": reward_name or args.reward,
            "num_prompts": len(prompts),
            "budget_per_prompt": config.total_samples,
            "aisp": asdict(config),
            "compare": asdict(args),
        },
        "methods": methods,
        "win_rates": win_rates,
        "curves": build_curves(runs, config.sample_size),
    }


def build_curves(runs: dict[str, MethodRun], n: int) -> dict[str, list[float]]:
    """The paper's Fig. 3 curves, averaged over prompts, at ``N = n * k`` samples (k = 1..kappa).

    Keys: ``n_samples``; with AISP ``aisp_mean_at_k``, ``aisp_best_at_k``, ``aisp_best_so_far``, ``aisp_ess``;
    with a best-of-n baseline ``bon_top_p`` / ``bon_gaussian`` (best of the first ``n * k`` samples); with a
    single-response method ``greedy`` / ``args`` (its mean reward, constant in k).
    """
    curves: dict[str, list[float]] = {}
    kappa = None
    if "aisp" in runs:
        aisp = aggregate_curves(runs["aisp"].results)
        kappa = len(aisp["best_so_far"])
        curves["n_samples"] = aisp["n_samples"]
        curves["aisp_mean_at_k"] = aisp["mean_reward"]
        curves["aisp_best_at_k"] = aisp["best_reward"]
        curves["aisp_best_so_far"] = aisp["best_so_far"]
        curves["aisp_ess"] = aisp["ess"]
    for method in ("bon_top_p", "bon_gaussian"):
        if method in runs:
            curve = bon_curve(runs[method].results, n)
            curves[method] = curve[:kappa] if kappa else curve
            if "n_samples" not in curves:
                curves["n_samples"] = [float(n * k) for k in range(1, len(curves[method]) + 1)]
    length = len(curves.get("n_samples", [])) or 1
    for method in ("greedy", "args", "re_control", "amortized"):
        if method in runs:
            curves[method] = [_mean([r.best.reward for r in runs[method].results])] * length
    return curves


# ----------------------------------------------------------------------------------------------- outputs


def results_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: a method table, the curves at each k, and the settings."""
    settings = report["settings"]
    lines = [
        "# AISP vs baselines",
        "",
        f"Model `{settings['model']}`, reward `{settings['reward']}`, {settings['num_prompts']} prompts, budget "
        f"N = n·κ = {settings['aisp']['sample_size']}·{settings['aisp']['n_iterations']} = "
        f"{settings['budget_per_prompt']} samples per prompt.",
        "",
        "| method | samples / prompt | reward (mean ± std) | reward 95% CI | diversity | coherence "
        "| base NLL, −log P_base(y\\|x) | s / prompt | training s "
        "| AISP wins / ties / losses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, entry in report["methods"].items():
        s = entry["summary"]
        win = report["win_rates"].get(method)
        win_text = f"{win['wins']:.0%} / {win['ties']:.0%} / {win['losses']:.0%}" if win else "—"
        ci = "[{:.3f}, {:.3f}]".format(*s["reward_ci95"]) if s.get("reward_ci95") else "—"
        lines.append(
            f"| {entry['label']} | {s['samples_per_prompt']} | {s['reward_mean']:.3f} ± {s['reward_std']:.3f} "
            f"| {ci} | {fmt(s['diversity'])} | {fmt(s.get('coherence'))} | {fmt(s.get('base_nll'))} "
            f"| {s['seconds_per_prompt']:.2f} | {fmt(s.get('training_seconds'), 0)} | {win_text} |"
        )
    lines += [
        "",
        "Reward: the best response's reward per prompt. Diversity: distinct 2-4-grams (D.1). Coherence: MiniLM cosine "
        "of prompt and response. Base NLL: the best response's negative log-likelihood under the base model, "
        "−log P_base(y|x) summed over its tokens (nats), the same for every method (the KL from the base model of "
        "the deterministic policy 'answer with y', not the paper's Eq. 63 KL of AISP's policy). Win "
        "rate: AISP's best reward against the method's, prompt by prompt. Reward 95% CI: percentile bootstrap over "
        "prompts. Training s: the one-off cost of a trained method (RE-Control: sampling the value data and fitting "
        "the value model; amortized AISP: AISP on the training prompts and fitting the controller), not in s / prompt.",
    ]
    curves = report["curves"]
    if curves.get("n_samples"):
        columns = [
            (key, label)
            for key, label in (
                ("aisp_mean_at_k", "AISP mean at k"),
                ("aisp_best_at_k", "AISP best at k"),
                ("aisp_best_so_far", "AISP best so far"),
                ("bon_top_p", "BoN (top-p)"),
                ("bon_gaussian", "BoN (N)"),
                ("aisp_ess", "AISP ESS"),
            )
            if key in curves
        ]
        lines += ["", "## Reward curves (Fig. 3)", "", "| k | N = n·k | " + " | ".join(c[1] for c in columns) + " |"]
        lines.append("|---:|---:|" + "---:|" * len(columns))
        for k, n_samples in enumerate(curves["n_samples"]):
            values = " | ".join(fmt(curves[key][k]) for key, _ in columns)
            lines.append(f"| {k + 1} | {int(n_samples)} | {values} |")
    aisp = settings["aisp"]
    lines += [
        "",
        "## Settings",
        "",
        f"- AISP: n={aisp['sample_size']}, κ={aisp['n_iterations']}, σ²={aisp['sigma2']}, λ={aisp['lam']}, "
        f"α={aisp['alpha']}, prompt batch={aisp['prompt_batch_size']}, seed={aisp['seed']}",
        f"- max new tokens: {settings['compare']['max_new_tokens']}; BoN (top-p): top_p={settings['compare']['top_p']}"
        f", temperature={settings['compare']['temperature']}; ARGS: top_k={settings['compare']['args_top_k']}, "
        f"w={settings['compare']['args_weight']}",
    ]
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> Path:
    """Plots the Fig. 3 curves (reward against samples per prompt) to a PNG with matplotlib's Agg backend.

    Args:
        curves (`dict`): the ``curves`` of a report (`build_curves`).
        path (`str` or `os.PathLike`): the PNG file.
        title (`str`, *optional*): the plot's title.

    Returns:
        `Path`: the file written.
    """
    if not curves.get("n_samples"):
        raise ValueError("`curves` has no `n_samples`; run at least one of 'aisp', 'bon_top_p', 'bon_gaussian'.")
    x = curves["n_samples"]
    styles = {
        "aisp_mean_at_k": ("AISP (mean at k)", dict(color="tab:blue", linestyle=":", marker=".")),
        "aisp_best_at_k": ("AISP (best at k)", dict(color="tab:blue", linestyle="--", marker=".")),
        "aisp_best_so_far": ("AISP (best so far)", dict(color="tab:blue", linestyle="-", marker="o")),
        "bon_top_p": ("BoN (top-p), N = n·k", dict(color="tab:orange", linestyle="-", marker="s")),
        "bon_gaussian": ("BoN (N), N = n·k", dict(color="tab:green", linestyle="-", marker="^")),
        "args": ("ARGS-greedy", dict(color="tab:red", linestyle="-.")),
        "re_control": ("RE-Control", dict(color="tab:purple", linestyle="-.")),
        "amortized": ("amortized AISP", dict(color="tab:cyan", linestyle="-.")),
        "greedy": ("greedy", dict(color="gray", linestyle="-.")),
    }
    with agg_figure(path) as (ax,):
        for key, (label, style) in styles.items():
            if key in curves:
                ax.plot(x, curves[key], label=label, **style)
        if len(x) <= 16:
            ax.set_xticks(x)
        ax.set_xlabel("samples per prompt (N = n·k)")
        ax.set_ylabel("reward (mean over prompts)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return Path(path)


def write_outputs(report: dict[str, Any], output_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Writes ``results.json``, ``results.md`` and (with ``plot``) ``curves.png`` to ``output_dir``.

    Returns:
        `dict[str, Path]`: the files written, by kind (``json``, ``markdown``, ``plot``).
    """

    def draw(report: dict[str, Any], path: Path) -> None:
        settings = report["settings"]
        title = f"{Path(str(settings['model'])).name} · {settings['reward']} · {settings['num_prompts']} prompts"
        plot_curves(report["curves"], path, title=title)

    plotted = plot and bool(report["curves"].get("n_samples"))
    return write_report_files(
        output_dir,
        report,
        results_markdown(report),
        stem="results",
        plot=draw if plotted else None,
        plot_name="curves.png",
    )
