"""Reports: CI cells, the recipes' uncertainty block and rewards table, and the one writer of a report's files
(``<stem>.json`` + ``<stem>.md`` + an optional PNG drawn with matplotlib's Agg backend), shared by the recipes,
`aisp_trl.pipeline.compare` and the benchmarks."""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .stats import bootstrap_ci, format_paired, paired_comparison

__all__ = [
    "MIN_RESULT_PROMPTS",
    "agg_figure",
    "fmt",
    "format_ci",
    "json_default",
    "report_rewards_table",
    "report_uncertainty",
    "smoke_test_warning",
    "write_report",
    "write_report_files",
]


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: a float with ``digits`` decimals, ``—`` for None / NaN, anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_ci(value: Sequence[float], digits: int = 3) -> str:
    """``(mean, low, high)`` as ``"mean [low, high]"``; ``—`` for a non-finite mean."""
    mean, low, high = value
    return "—" if not math.isfinite(mean) else f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def json_default(value: Any) -> Any:
    """JSON for what ``json`` cannot write: paths as strings, tensors and numpy values as numbers / lists."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return value.tolist()
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


@contextlib.contextmanager
def agg_figure(
    path: str | os.PathLike, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.4), nrows: int = 1
) -> Iterator[Any]:
    """A grid of ``nrows`` x ``ncols`` matplotlib axes (Agg backend, no display) saved to ``path`` at 120 dpi on exit.

    Yields:
        the axes, a flat list of length ``nrows * ncols`` in row-major order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    try:
        yield [ax for row in axes for ax in row]
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def write_report_files(
    output_dir: str | os.PathLike,
    report: Mapping[str, Any],
    markdown: str,
    *,
    stem: str = "report",
    plot: Callable[[Mapping[str, Any], Path], Any] | None = None,
    plot_name: str | None = None,
) -> dict[str, Path]:
    """Writes ``<stem>.json`` (the report), ``<stem>.md`` (``markdown``) and, with ``plot``, the PNG it draws.

    Args:
        output_dir (`str` or `os.PathLike`): created if missing.
        report (`Mapping`): JSON-ready but for paths, tensors and numpy values (see `json_default`).
        markdown (`str`): the report as markdown.
        stem (`str`, defaults to ``"report"``): the files' name.
        plot (`Callable[[Mapping, Path], Any]`, *optional*): draws the report to the path it is given.
        plot_name (`str`, *optional*): the PNG's file name; defaults to ``<stem>.png``.

    Returns:
        `dict[str, Path]`: the files written, by kind (``json``, ``markdown``, ``plot``).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": output_dir / f"{stem}.json", "markdown": output_dir / f"{stem}.md"}
    files["json"].write_text(json.dumps(report, indent=2, default=json_default, allow_nan=True))
    files["markdown"].write_text(markdown.rstrip("\n") + "\n")
    if plot is not None:
        files["plot"] = output_dir / (plot_name or f"{stem}.png")
        plot(report, files["plot"])
    return files


MIN_RESULT_PROMPTS = 24
"""Held-out prompts below which a report says it is a smoke test: with fewer, a 95% CI of a mean reward is wider than
the differences the recipes are after, and one seed hides how much the result moves with the data."""


def smoke_test_warning(
    num_prompts: int,
    num_seeds: int = 1,
    fix: str = "raise `num_eval_prompts`, and compare seeds with benchmarks/bench_finetune.py",
) -> str | None:
    """The warning line of a report evaluated on ``num_prompts`` held-out prompts and ``num_seeds`` seeds, or `None`.

    Args:
        num_prompts (`int`): held-out prompts behind the report's means.
        num_seeds (`int`, defaults to 1): seeds behind them.
        fix (`str`): what to change, in the caller's terms (the recipes' flag by default).

    Returns:
        `str` when ``num_prompts < MIN_RESULT_PROMPTS``: e.g. ``"8 prompts, one seed: a smoke test, not a result
        ..."``; else `None`.
    """
    if num_prompts >= MIN_RESULT_PROMPTS:
        return None
    seeds = "one seed" if num_seeds == 1 else f"{num_seeds} seeds"
    return (
        f"{num_prompts} prompts, {seeds}: a smoke test, not a result (fewer than {MIN_RESULT_PROMPTS} held-out "
        f"prompts; {fix})."
    )


def report_uncertainty(
    per_prompt: Mapping[str, Sequence[float]],
    pairs: Sequence[tuple[str, str]] = (),
    num_eval_prompts: int | None = None,
    num_seeds: int = 1,
) -> dict[str, Any]:
    """How sure a report's mean rewards are: per mean its prompt count, 95% bootstrap CI and standard deviation.

    Args:
        per_prompt (`Mapping[str, Sequence[float]]`): name -> one reward per prompt (the names of ``rewards``).
        pairs (`Sequence[tuple[str, str]]`): ``(a, b)`` names scored on the same prompts, compared pairwise (mean
            of ``a - b`` with its 95% CI and win / tie / loss rates, `aisp_trl.evaluation.stats.paired_comparison`).
        num_eval_prompts (`int`, *optional*): held-out prompts evaluated; below `MIN_RESULT_PROMPTS` a ``warning``
            is added (see `smoke_test_warning`).
        num_seeds (`int`, defaults to 1): seeds behind the numbers.

    Returns:
        `dict` with ``uncertainty`` (name -> ``{"prompts", "mean", "ci95", "std"}``), ``paired`` (``"a − b"`` ->
        the comparison; only with ``pairs``) and ``warning`` (only when it applies): merge it into the report.
    """
    uncertainty = {}
    for name, values in per_prompt.items():
        mean, low, high = bootstrap_ci([float(v) for v in values])
        finite = [float(v) for v in values if math.isfinite(float(v))]
        spread = statistics.stdev(finite) if len(finite) > 1 else float("nan")
        uncertainty[name] = {"prompts": len(finite), "mean": mean, "ci95": [low, high], "std": spread}
    result: dict[str, Any] = {"uncertainty": uncertainty}
    if pairs:
        result["paired"] = {
            f"{a} − {b}": paired_comparison([list(per_prompt[a])], [list(per_prompt[b])]) for a, b in pairs
        }
    warning = smoke_test_warning(num_eval_prompts, num_seeds) if num_eval_prompts is not None else None
    if warning:
        result["warning"] = warning
    return result


def report_rewards_table(report: Mapping[str, Any]) -> str:
    """The report's ``rewards`` (name -> mean reward) and ``counts`` as a short markdown block (what recipes print).

    With the ``uncertainty`` of `report_uncertainty` the table also gives each mean's 95% bootstrap CI, standard
    deviation and prompt count, then the ``paired`` differences; a ``warning`` is the block's first line.
    """
    uncertainty = report.get("uncertainty", {})
    lines = ["## Rewards", ""]
    if report.get("warning"):
        lines += [f"> **Warning**: {report['warning']}", ""]
    if uncertainty:
        lines += ["| | mean reward | 95% CI | std | prompts |", "|---|---|---|---|---|"]
        for name, value in report.get("rewards", {}).items():
            u = uncertainty.get(name)
            extra = f"[{u['ci95'][0]:.4f}, {u['ci95'][1]:.4f}] | {u['std']:.4f} | {u['prompts']}" if u else "| |"
            lines.append(f"| {name} | {value:.4f} | {extra} |")
    else:
        lines += ["| | mean reward |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in report.get("rewards", {}).items()]
    paired = report.get("paired", {})
    if paired:
        lines += ["", "| paired, same prompts | mean difference [95% CI] | wins / ties / losses |", "|---|---|---|"]
        lines += [f"| {name} | {format_paired(p, digits=4)} |" for name, p in paired.items()]
    counts = report.get("counts", {})
    if counts:
        lines += ["", ", ".join(f"{k}: {v}" for k, v in counts.items())]
    return "\n".join(lines)


def write_report(output_dir: str | os.PathLike, report: Mapping[str, Any], title: str = "AISP report") -> Path:
    """Writes ``report.json`` and ``report.md`` (a rewards table and the settings) to ``output_dir``.

    Args:
        report (`Mapping`): ``rewards`` (name -> mean reward) is tabulated, with the ``uncertainty``, ``paired``
            and ``warning`` of `report_uncertainty` when present; other mappings become sections.

    Returns:
        `Path`: the JSON file.
    """
    lines = [f"# {title}", ""]
    tabulated = ("rewards", "uncertainty", "paired", "warning")  # in `report_rewards_table`
    scalars = {k: v for k, v in report.items() if k not in tabulated and not isinstance(v, Mapping)}
    sections = {k: v for k, v in report.items() if k not in tabulated and isinstance(v, Mapping)}
    lines += [f"- **{key.replace('_', ' ').capitalize()}**: {value}" for key, value in scalars.items()]
    lines += ["", report_rewards_table(report)]
    for key, value in sections.items():
        lines += ["", f"## {key.replace('_', ' ').capitalize()}", ""]
        lines += [f"- `{k}`: {v}" for k, v in value.items()]
    return write_report_files(output_dir, report, "\n".join(lines))["json"]
