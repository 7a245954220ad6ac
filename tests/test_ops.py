"""The AIS math against numbers computed by hand, and one exact Monte Carlo answer."""

import math

import pytest
import torch

from aisp_trl.ops import (
    ais_step,
    effective_sample_size,
    log_importance_weights,
    normalize_log_weights,
    sample_prelogit_noise,
    update_mean,
)

F64 = dict(dtype=torch.float64)


def test_log_weights_alpha_one_is_reward_over_lambda():
    mean = torch.ones(2, 3)
    samples = torch.randn(2, 2, 3)
    log_w = log_importance_weights(torch.tensor([1.0, 2.0]), mean, samples, lam=0.5, alpha=1.0, sigma2=0.3)
    torch.testing.assert_close(log_w, torch.tensor([2.0, 4.0], **F64))


def test_log_weights_cross_term_by_hand():
    # U = [[1, 0]], V^1 = [[1, 0]], V^2 = [[0, 1]]: <u, v> = 1 and 0; (1 - alpha) / sigma2 = 0.5 / 2 = 0.25
    mean = torch.tensor([[1.0, 0.0]])
    samples = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    log_w = log_importance_weights(torch.tensor([1.0, 2.0]), mean, samples, lam=0.5, alpha=0.5, sigma2=2.0)
    torch.testing.assert_close(log_w, torch.tensor([2.0 - 0.25, 4.0], **F64))


def test_log_weights_sum_over_steps_and_width():
    # two steps: <u_1, v_1> + <u_2, v_2> = 1*3 + 2*(-1) = 1, times (1 - 0.9) / 0.1 = 1
    mean = torch.tensor([[1.0], [2.0]])
    samples = torch.tensor([[[3.0], [-1.0]]])
    log_w = log_importance_weights(torch.tensor([0.0]), mean, samples, lam=1.0, alpha=0.9, sigma2=0.1)
    torch.testing.assert_close(log_w, torch.tensor([-1.0], **F64))


def test_non_finite_rewards_get_zero_weight():
    rewards = torch.tensor([1.0, math.nan, math.inf, -math.inf, 1.0])
    log_w = log_importance_weights(rewards, torch.zeros(1, 1), torch.zeros(5, 1, 1), lam=1.0, alpha=1.0, sigma2=1.0)
    weights = normalize_log_weights(log_w)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0, 0, 0, 0.5], **F64))


def test_normalize_by_hand():
    weights = normalize_log_weights(torch.tensor([0.0, math.log(3.0)], **F64))
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.75], **F64))


@pytest.mark.parametrize("scale", [1e3, 1e8, 1e300])
def test_normalize_extreme_values_no_overflow(scale):
    weights = normalize_log_weights(torch.tensor([scale, 0.0, -scale], **F64))
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.0, 0.0], **F64))


def test_normalize_underflowing_weights_still_sum_to_one():
    # exp(-1000) underflows to 0 in float64; logsumexp keeps the ratio exact
    weights = normalize_log_weights(torch.tensor([-1000.0, -1000.0 + math.log(3.0)], **F64))
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.75], **F64))


def test_extreme_rewards_tiny_lambda_give_one_hot():
    log_w = log_importance_weights(
        torch.tensor([1e6, -1e6, 1e6 - 1]), torch.zeros(1, 1), torch.zeros(3, 1, 1), lam=1e-8, alpha=1.0, sigma2=1.0
    )
    torch.testing.assert_close(normalize_log_weights(log_w), torch.tensor([1.0, 0.0, 0.0], **F64))


def test_all_zero_weights_raise():
    with pytest.raises(ValueError, match="weight zero"):
        normalize_log_weights(torch.tensor([-math.inf, math.nan], **F64))


def test_update_mean_by_hand():
    samples = torch.tensor([[[4.0, 0.0]], [[8.0, 4.0]]])  # (n=2, tau=1, d=2)
    new_mean = update_mean(torch.tensor([0.25, 0.75], **F64), samples)
    torch.testing.assert_close(new_mean, torch.tensor([[7.0, 3.0]]))


@pytest.mark.parametrize(
    ("weights", "expected"), [([0.5, 0.5], 2.0), ([1.0, 0.0], 1.0), ([0.25, 0.75], 1.6), ([0.25] * 4, 4.0)]
)
def test_effective_sample_size_by_hand(weights, expected):
    assert float(effective_sample_size(torch.tensor(weights))) == pytest.approx(expected)


def test_batched_leading_dimension_equals_per_prompt():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 4, 5, generator=g)
    samples = torch.randn(3, 6, 4, 5, generator=g)
    rewards = torch.randn(3, 6, generator=g)
    batched = ais_step(means, samples, rewards, lam=0.3, alpha=0.99, sigma2=0.5)
    for j in range(3):
        single = ais_step(means[j], samples[j], rewards[j], lam=0.3, alpha=0.99, sigma2=0.5)
        for a, b in zip(batched, single, strict=True):
            torch.testing.assert_close(a[j], b)


def test_sample_noise_shape_seed_and_moments():
    mean = torch.full((3, 4), 2.0)
    a = sample_prelogit_noise(mean, 0.25, 5000, torch.Generator().manual_seed(1))
    b = sample_prelogit_noise(mean, 0.25, 5000, torch.Generator().manual_seed(1))
    assert a.shape == (5000, 3, 4)
    torch.testing.assert_close(a, b)
    assert float(a.mean()) == pytest.approx(2.0, abs=0.01)
    assert float(a.std()) == pytest.approx(0.5, abs=0.01)


def test_sample_noise_leaves_global_rng_alone():
    state = torch.get_rng_state()
    sample_prelogit_noise(torch.zeros(2, 2), 1.0, 3, torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_reward_shift_changes_nothing_and_scale_equals_lambda():
    g = torch.Generator().manual_seed(2)
    mean, samples = torch.randn(2, 3, generator=g), torch.randn(5, 2, 3, generator=g)
    rewards = torch.randn(5, generator=g, dtype=torch.float64)
    kw = dict(alpha=0.9, sigma2=0.5)
    base = ais_step(mean, samples, rewards, lam=0.2, **kw)
    shifted = ais_step(mean, samples, rewards + 1000.0, lam=0.2, **kw)
    scaled = ais_step(mean, samples, rewards * 4.0, lam=0.8, **kw)
    for a, b, c in zip(base, shifted, scaled, strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


def test_tiny_lambda_update_is_the_best_sample():
    # Theorem 3.3: lambda -> 0+ makes the update pick the argmax-reward trajectory
    samples = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3))
    new_mean, weights, ess = ais_step(
        torch.zeros(2, 3), samples, torch.tensor([0.1, 0.7, 0.3, 0.69]), lam=1e-6, alpha=0.999, sigma2=0.5
    )
    torch.testing.assert_close(new_mean, samples[1])
    assert float(ess) == pytest.approx(1.0)


def test_monte_carlo_update_matches_exact_tilted_mean():
    # proposal N(0, s2), reward r(v) = a * v: the optimal q* is N(s2 * a / lam, s2), so U* = s2 * a / lam
    s2, a, lam = 0.5, 0.3, 0.5
    samples = sample_prelogit_noise(
        torch.zeros(1, 1, dtype=torch.float64), s2, 400_000, torch.Generator().manual_seed(4)
    )
    rewards = a * samples[:, 0, 0]
    new_mean, _, ess = ais_step(torch.zeros(1, 1, dtype=torch.float64), samples, rewards, lam=lam, alpha=1.0, sigma2=s2)
    assert float(new_mean) == pytest.approx(s2 * a / lam, abs=0.01)
    # the ESS of exponential tilting by a*v/lam under N(0, s2) is n * exp(-s2 * a^2 / lam^2)
    assert float(ess) / 400_000 == pytest.approx(math.exp(-s2 * a**2 / lam**2), rel=0.02)
