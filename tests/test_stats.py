"""The comparison statistics against hand-computed numbers."""

import math

import pytest

from aisp_trl.evaluation.stats import (
    bootstrap_ci,
    bootstrap_ratio_ci,
    expected_best_of,
    expected_best_of_curve,
    format_paired,
    paired_comparison,
    samples_to_match,
)


def test_expected_best_of_by_hand():
    # subsets of size 2 of {0.1, 0.5, 0.3}: maxes 0.5, 0.3, 0.5 -> 1.3 / 3
    assert expected_best_of([0.1, 0.5, 0.3], 2) == pytest.approx(1.3 / 3)
    assert expected_best_of([0.1, 0.5, 0.3], 1) == pytest.approx(0.3)  # the mean
    assert expected_best_of([0.1, 0.5, 0.3], 3) == 0.5 == expected_best_of([0.1, 0.5, 0.3], 9)
    assert expected_best_of([math.nan, 2.0, -math.inf], 2) == 2.0
    assert math.isnan(expected_best_of([math.nan], 1))
    curve = expected_best_of_curve([4.0, 1.0, 3.0, 2.0])
    assert curve == pytest.approx([2.5, (2 + 3 + 4 + 3 + 4 + 4) / 6, (3 + 4 + 4 + 4) / 4, 4.0])
    with pytest.raises(ValueError, match="`m`"):
        expected_best_of([1.0], 0)


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    mean, low, high = bootstrap_ci(values)
    assert mean == 2.5 and low < mean < high and 0.5 < low and high < 4.5
    assert bootstrap_ci(values) == (mean, low, high)
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)


def test_paired_comparison_by_hand():
    a = [[1.0, 0.5, 0.2], [0.9, 0.5, 0.1]]
    b = [[0.5, 0.5, 0.4], [0.4, 0.6, 0.1]]
    out = paired_comparison(a, b)
    # differences: 0.5, 0, -0.2 / 0.5, -0.1, 0 -> mean 0.7 / 6; W/T/L = 2/2/2 of 6
    assert out["diff"] == pytest.approx(0.7 / 6)
    assert (out["wins"], out["ties"], out["losses"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert out["diff_low"] <= out["diff"] <= out["diff_high"] and out["pairs"] == 6
    assert out["per_seed"] == pytest.approx([0.3 / 3, 0.4 / 3])  # (0.5 + 0 - 0.2) / 3, (0.5 - 0.1 + 0) / 3
    with pytest.raises(ValueError, match="same shape"):
        paired_comparison([[1.0]], [[1.0, 2.0]])


def test_samples_to_match_interpolates():
    curve = [0.1, 0.3, 0.4, 0.45]
    assert samples_to_match(curve, 0.05) == 1.0
    assert samples_to_match(curve, 0.2) == pytest.approx(1.5)
    assert samples_to_match(curve, 0.45) == pytest.approx(4.0)
    assert samples_to_match(curve, 0.5) == math.inf


def test_bootstrap_ratio_ci_is_the_ratio_of_means_with_a_paired_interval():
    # gap recovered per prompt: (distilled - base) / (aisp - base); the ratio is of the means, not a mean of ratios
    ratio, low, high = bootstrap_ratio_ci([0.1, 0.3, 0.2, math.nan], [0.2, 0.4, 0.4, 1.0], n_resamples=2000)
    assert ratio == pytest.approx(0.6 / 1.0)  # the NaN pair is dropped
    assert low <= ratio <= high and high - low > 0
    # numerators proportional to the denominators: every resample gives the same ratio
    assert bootstrap_ratio_ci([0.5, 1.0, 1.5], [1.0, 2.0, 3.0], n_resamples=500) == pytest.approx((0.5, 0.5, 0.5))
    assert all(math.isnan(v) for v in bootstrap_ratio_ci([1.0, 2.0], [1.0, -1.0]))  # no gap to recover
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ratio_ci([1.0], [1.0, 2.0])


def test_format_paired_prints_the_reports_cells():
    result = {"diff": 0.0263, "diff_low": -0.0371, "diff_high": 0.0894, "wins": 0.49, "ties": 0.1, "losses": 0.41}
    assert format_paired(result) == "+0.026 [-0.037, +0.089] | 49% / 10% / 41%"
    assert format_paired(result, digits=4).startswith("+0.0263 [-0.0371, +0.0894] |")
