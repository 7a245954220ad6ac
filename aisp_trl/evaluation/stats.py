"""Statistics for comparing samplers: pure functions on numbers, no model.

- `expected_best_of`: the best-of-m curve of best-of-N samples, averaged over every m-subset (lower variance than
  "best of the first m").
- `bootstrap_ci`: a percentile bootstrap confidence interval of a mean (resampling prompts).
- `paired_comparison`: mean paired difference with its bootstrap CI and win / tie / loss rates.
- `samples_to_match`: how many best-of-N samples reach a given reward on a best-of-m curve (interpolated).
- `bootstrap_ratio_ci`: a ratio of two means over the same prompts (e.g. the fraction of a gap recovered) with a
  paired bootstrap confidence interval.
- `format_paired`: a `paired_comparison` result as the two markdown cells the reports print.

Example:
    ```python
    >>> from aisp_trl.evaluation.stats import expected_best_of, paired_comparison
    >>> expected_best_of([0.1, 0.5, 0.3], 2)  # mean of max over {0.1,0.5}, {0.1,0.3}, {0.5,0.3}
    0.4333...
    >>> paired_comparison([[0.9, 0.8]], [[0.7, 0.8]])["wins"]  # one seed, two prompts: one win, one tie
    0.5
    ```
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_ci",
    "bootstrap_ratio_ci",
    "expected_best_of",
    "expected_best_of_curve",
    "format_paired",
    "paired_comparison",
    "samples_to_match",
]


def expected_best_of(rewards: Sequence[float], m: int) -> float:
    """``E[max]`` of ``m`` rewards drawn without replacement from ``rewards`` (non-finite ones dropped).

    With the finite rewards sorted ascending ``x_1 <= ... <= x_K``, ``P(max = x_i) = C(i-1, m-1) / C(K, m)``. This is
    the best-of-m value that ``K`` i.i.d. samples estimate with the least variance.

    Args:
        rewards (`Sequence[float]`): the rewards of one prompt's best-of-N samples.
        m (`int`): subset size, ``1 <= m``; values above the number of finite rewards use all of them.

    Returns:
        `float` (NaN when no reward is finite).
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"`m` must be an integer >= 1, got {m!r}.")
    values = sorted(r for r in rewards if math.isfinite(r))
    k = len(values)
    if k == 0:
        return math.nan
    m = min(m, k)
    total = math.comb(k, m)
    return sum(values[i - 1] * math.comb(i - 1, m - 1) / total for i in range(m, k + 1))


def expected_best_of_curve(rewards: Sequence[float]) -> list[float]:
    """`expected_best_of` for ``m = 1 .. len(rewards)``."""
    return [expected_best_of(rewards, m) for m in range(1, len(rewards) + 1)]


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile bootstrap confidence interval.

    Args:
        values (`Sequence[float]`): one number per unit resampled (e.g. per prompt, averaged over seeds).
        n_resamples (`int`, defaults to 10000): bootstrap resamples.
        level (`float`, defaults to 0.95): the interval's coverage.
        seed (`int`, defaults to 0): seed of the resampling (results are reproducible).

    Returns:
        `tuple` ``(mean, low, high)``; NaNs when ``values`` is empty.
    """
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    tail = (1.0 - level) / 2
    return (float(x.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail)))


def bootstrap_ratio_ci(
    numerators: Sequence[float],
    denominators: Sequence[float],
    n_resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``mean(numerators) / mean(denominators)`` with a paired percentile bootstrap confidence interval.

    Prompts are resampled together (the numerator and denominator of one prompt stay paired), so the interval of
    e.g. the fraction of the base -> AISP gap a distilled model recovers, ``P = mean(distilled - base) /
    mean(AISP - base)``, accounts for both means varying with the prompts. Pairs with a non-finite value are dropped.

    Args:
        numerators, denominators (`Sequence[float]`): one value per prompt each, same prompts in the same order.
        n_resamples (`int`, defaults to 10000): bootstrap resamples.
        level (`float`, defaults to 0.95): the interval's coverage.
        seed (`int`, defaults to 0): seed of the resampling.

    Returns:
        `tuple` ``(ratio, low, high)``: NaNs when no pair is finite or the denominators' mean is 0. Resamples whose
        denominator mean is 0 are left out of the interval.

    Raises:
        ValueError: If the two sequences differ in length.
    """
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(
            f"`numerators` and `denominators` must be 1-D and of the same length (one value per prompt), got shapes "
            f"{num.shape} and {den.shape}."
        )
    keep = np.isfinite(num) & np.isfinite(den)
    num, den = num[keep], den[keep]
    if len(num) == 0 or den.mean() == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(num), size=(n_resamples, len(num)))
    means_num, means_den = num[index].mean(axis=1), den[index].mean(axis=1)
    valid = means_den != 0
    ratios = means_num[valid] / means_den[valid]
    tail = (1.0 - level) / 2
    return (float(num.mean() / den.mean()), float(np.quantile(ratios, tail)), float(np.quantile(ratios, 1.0 - tail)))


def paired_comparison(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], tol: float = 1e-9, **bootstrap: Any
) -> dict[str, float]:
    """Method ``a`` against method ``b`` on the same prompts, over seeds.

    Args:
        a, b (`Sequence[Sequence[float]]`): per seed, one value per prompt (same prompts in the same order). The
            seeds are paired by position; pass the single greedy run repeated for a deterministic method.
        tol (`float`): differences within ``tol`` count as ties.
        **bootstrap: passed to `bootstrap_ci`.

    Returns:
        `dict` with ``diff`` (mean of ``a - b``), ``diff_low`` / ``diff_high`` (bootstrap CI over prompts of the
        seed-averaged differences), ``wins`` / ``ties`` / ``losses`` (fractions of (seed, prompt) pairs),
        ``pairs`` (their count) and ``per_seed`` (the mean difference of each seed: the CI resamples prompts only,
        so this is where the spread between seeds shows).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(
            f"`a` and `b` must both be (seeds, prompts) tables of the same shape, got {x.shape} and {y.shape}."
        )
    diff = x - y
    mean, low, high = bootstrap_ci(np.nanmean(diff, axis=0).tolist(), **bootstrap)
    valid = np.isfinite(diff)
    count = max(int(valid.sum()), 1)
    return {
        "diff": mean,
        "diff_low": low,
        "diff_high": high,
        "wins": float((diff[valid] > tol).sum() / count),
        "ties": float((np.abs(diff[valid]) <= tol).sum() / count),
        "losses": float((diff[valid] < -tol).sum() / count),
        "pairs": int(valid.sum()),
        "per_seed": [float(np.nanmean(row)) for row in diff],
    }


def format_paired(result: Mapping[str, float], digits: int = 3) -> str:
    """``result`` of `paired_comparison` as two markdown cells: the mean difference with its CI, then the win / tie /
    loss rates, e.g. ``+0.026 [-0.037, +0.089] | 49% / 10% / 41%``."""
    diff, low, high = (f"{result[k]:+.{digits}f}" for k in ("diff", "diff_low", "diff_high"))
    return f"{diff} [{low}, {high}] | {result['wins']:.0%} / {result['ties']:.0%} / {result['losses']:.0%}"


def samples_to_match(curve: Sequence[float], target: float) -> float:
    """Smallest (linearly interpolated) sample count ``m`` at which a best-of-m curve reaches ``target``.

    Args:
        curve (`Sequence[float]`): ``curve[m - 1]`` is the mean best-of-m reward, ``m = 1..N`` (non-decreasing).
        target (`float`): the reward to match.

    Returns:
        `float`: ``m`` in ``[1, N]``, or ``inf`` when the curve never reaches ``target`` within ``N`` samples.
    """
    values = list(curve)
    if not values:
        raise ValueError("`curve` is empty; pass the best-of-m rewards for m = 1..N.")
    if values[0] >= target:
        return 1.0
    for m in range(1, len(values)):
        lo, hi = values[m - 1], values[m]
        if hi >= target:
            return m + (target - lo) / (hi - lo) if hi > lo else float(m + 1)
    return math.inf
