"""Metrics over a run's samples and prompts: the per-iteration reward curves of the paper's Fig. 3, the best-of-N curve
at the same sample counts, and paired win rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

from ..types import SearchResult

__all__ = ["RewardCurves", "aggregate_curves", "best_of_first", "bon_curve", "paired_win_rate"]


# --------------------------------------------------------------------------------------------- reward curves


class RewardCurves(TypedDict):
    """Per-iteration curves averaged over prompts (paper Fig. 3); every list has one entry per iteration k."""

    n_samples: list[float]  # samples used per prompt after iteration k (n * k), from the first result
    mean_reward: list[float]  # average over prompts of the mean reward at iteration k
    best_reward: list[float]  # ... of the best reward at iteration k
    best_so_far: list[float]  # ... of the best reward over iterations 1..k
    ess: list[float]  # ... of the effective sample size of the weights at iteration k


def aggregate_curves(results: Sequence[SearchResult]) -> RewardCurves:
    """Averages the per-iteration curves of several prompts' `SearchResult` s.

    Args:
        results (`Sequence[SearchResult]`): one result per prompt, all with the same number of iterations.

    Returns:
        `RewardCurves` (a `dict[str, list[float]]`): ``n_samples``, ``mean_reward``, ``best_reward``,
        ``best_so_far`` and ``ess``, each of length kappa. Averages skip NaN entries (a prompt whose iteration
        had no finite reward); an iteration with none at all is NaN.
    """
    if isinstance(results, SearchResult):
        results = [results]
    if not results:
        raise ValueError("`results` is empty; pass the `SearchResult` list returned by `search`.")
    lengths = {len(r.best_so_far) for r in results}
    if len(lengths) != 1:
        raise ValueError(
            f"`results` mix different numbers of iterations ({sorted(lengths)}); aggregate runs with the same "
            "`n_iterations` separately."
        )
    counts = [sum(1 for s in results[0].samples if s.iteration <= k) for k in range(1, lengths.pop() + 1)]
    return RewardCurves(
        n_samples=[float(c) for c in counts],
        mean_reward=_nanmean_columns([r.mean_reward for r in results]),
        best_reward=_nanmean_columns([r.best_reward for r in results]),
        best_so_far=_nanmean_columns([r.best_so_far for r in results]),
        ess=_nanmean_columns([r.ess for r in results]),
    )


def best_of_first(rewards: Sequence[float], n: int) -> list[float]:
    """``max(rewards[:n * k])`` for k = 1 .. len(rewards) // n: the best-of-N curve at N = n, 2n, ...

    Non-finite rewards are ignored (NaN until a finite one appears).

    Args:
        rewards (`Sequence[float]`): rewards in order of generation.
        n (`int`): samples per step of the curve (AISP's ``sample_size``).

    Returns:
        `list[float]` of length ``len(rewards) // n``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}.")
    curve, best = [], -math.inf
    for k in range(1, len(rewards) // n + 1):
        finite = [r for r in rewards[(k - 1) * n : k * n] if math.isfinite(r)]
        best = max([best, *finite])
        curve.append(best if best > -math.inf else math.nan)
    return curve


def bon_curve(results_bon: Sequence[SearchResult], n: int) -> list[float]:
    """Best-of-N at N = n·k, k = 1..kappa, from best-of-n results, averaged over prompts.

    For each prompt the samples are taken in generation order and the curve at k is the best reward among the
    first ``n * k``; this is the BoN curve to plot against AISP's ``best_so_far`` at the same sample count.

    Args:
        results_bon (`Sequence[SearchResult]`): one best-of-n result per prompt (e.g. from `BestOfNSampler` with
            ``sample_size = n * kappa``), all with the same number of samples.
        n (`int`): samples per AISP iteration.

    Returns:
        `list[float]` of length ``len(samples) // n`` (NaN-skipping mean over prompts).
    """
    if isinstance(results_bon, SearchResult):
        results_bon = [results_bon]
    if not results_bon:
        raise ValueError("`results_bon` is empty; pass the `SearchResult` list of a best-of-n `search`.")
    sizes = {len(r.samples) for r in results_bon}
    if len(sizes) != 1:
        raise ValueError(f"`results_bon` have different sample counts ({sorted(sizes)}); use one budget N.")
    size = sizes.pop()
    if isinstance(n, int) and not isinstance(n, bool) and size < n:
        raise ValueError(f"`n` ({n}) exceeds the {size} samples per prompt in `results_bon`; lower `n`.")
    return _nanmean_columns([best_of_first([s.reward for s in r.samples], n) for r in results_bon])


def _nanmean_columns(rows: Sequence[Sequence[float]]) -> list[float]:
    columns = []
    for column in zip(*rows, strict=True):
        finite = [v for v in column if not math.isnan(v)]
        columns.append(sum(finite) / len(finite) if finite else math.nan)
    return columns


# ----------------------------------------------------------------------------------------------- win rate


def paired_win_rate(a: Sequence[float], b: Sequence[float], tol: float = 0.0) -> dict[str, float]:
    """How often method A beats method B on the same prompts.

    Args:
        a (`Sequence[float]`): A's score per prompt (e.g. the best reward).
        b (`Sequence[float]`): B's score on the same prompts, in the same order.
        tol (`float`, defaults to 0.0): ``|a - b| <= tol`` counts as a tie.

    Returns:
        `dict` with ``wins``, ``ties``, ``losses`` (fractions of A vs B summing to 1) and ``n`` (the count).

    Example:
        ```python
        >>> paired_win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0])
        {'wins': 0.5, 'ties': 0.25, 'losses': 0.25, 'n': 4}
        ```
    """
    if len(a) != len(b):
        raise ValueError(f"`a` has {len(a)} scores and `b` has {len(b)}; pass one score per prompt for both.")
    if not a:
        raise ValueError("`a` and `b` are empty; pass at least one pair of scores.")
    if not (isinstance(tol, int | float) and tol >= 0):
        raise ValueError(f"`tol` must be a number >= 0, got {tol!r}.")
    pairs = [(float(x), float(y)) for x, y in zip(a, b, strict=True)]
    bad = [i for i, (x, y) in enumerate(pairs) if math.isnan(x) or math.isnan(y)]
    if bad:
        raise ValueError(f"scores at positions {bad[:5]} are NaN; drop those prompts before comparing.")
    wins = sum(1 for x, y in pairs if x - y > tol)
    losses = sum(1 for x, y in pairs if y - x > tol)
    n = len(pairs)
    return {"wins": wins / n, "ties": (n - wins - losses) / n, "losses": losses / n, "n": n}
