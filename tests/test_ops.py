"""The AIS math against numbers computed by hand, and one exact Monte Carlo answer."""

import math

import pytest
import torch

from aisp_trl.ops import (
    ais_step,
    amis_step,
    cross_term,
    effective_sample_size,
    eq18_offsets,
    gaussian_log_density,
    log_weights,
    normalize_log_weights,
    solve_temperature,
    update_mean,
)
from aisp_trl.proposals import IIDProposal, make_proposal

F64 = dict(dtype=torch.float64)


def test_log_weights_alpha_one_is_reward_over_lambda():
    mean = torch.ones(2, 3)
    samples = torch.randn(2, 2, 3)
    log_w = log_weights(torch.tensor([1.0, 2.0]), 0.5, eq18_offsets(mean, samples, alpha=1.0, sigma2=0.3))
    torch.testing.assert_close(log_w, torch.tensor([2.0, 4.0], **F64))


def test_log_weights_cross_term_by_hand():
    # U = [[1, 0]], V^1 = [[1, 0]], V^2 = [[0, 1]]: <u, v> = 1 and 0; (1 - alpha) / sigma2 = 0.5 / 2 = 0.25
    mean = torch.tensor([[1.0, 0.0]])
    samples = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    log_w = log_weights(torch.tensor([1.0, 2.0]), 0.5, eq18_offsets(mean, samples, alpha=0.5, sigma2=2.0))
    torch.testing.assert_close(log_w, torch.tensor([2.0 - 0.25, 4.0], **F64))


def test_log_weights_sum_over_steps_and_width():
    # two steps: <u_1, v_1> + <u_2, v_2> = 1*3 + 2*(-1) = 1, times (1 - 0.9) / 0.1 = 1
    mean = torch.tensor([[1.0], [2.0]])
    samples = torch.tensor([[[3.0], [-1.0]]])
    log_w = log_weights(torch.tensor([0.0]), 1.0, eq18_offsets(mean, samples, alpha=0.9, sigma2=0.1))
    torch.testing.assert_close(log_w, torch.tensor([-1.0], **F64))


def test_non_finite_rewards_get_zero_weight():
    rewards = torch.tensor([1.0, math.nan, math.inf, -math.inf, 1.0])
    log_w = log_weights(rewards, 1.0, eq18_offsets(torch.zeros(1, 1), torch.zeros(5, 1, 1), alpha=1.0, sigma2=1.0))
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
    log_w = log_weights(
        torch.tensor([1e6, -1e6, 1e6 - 1]),
        1e-8,
        eq18_offsets(torch.zeros(1, 1), torch.zeros(3, 1, 1), alpha=1.0, sigma2=1.0),
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
    a = IIDProposal().draw(mean, 0.25, 5000, torch.Generator().manual_seed(1))
    b = IIDProposal().draw(mean, 0.25, 5000, torch.Generator().manual_seed(1))
    assert a.shape == (5000, 3, 4)
    torch.testing.assert_close(a, b)
    assert float(a.mean()) == pytest.approx(2.0, abs=0.01)
    assert float(a.std()) == pytest.approx(0.5, abs=0.01)


def test_sample_noise_leaves_global_rng_alone():
    state = torch.get_rng_state()
    IIDProposal().draw(torch.zeros(2, 2), 1.0, 3, torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_reward_shift_changes_nothing_and_scale_equals_lambda():
    g = torch.Generator().manual_seed(2)
    mean, samples = torch.randn(2, 3, generator=g), torch.randn(5, 2, 3, generator=g)
    rewards = torch.randn(5, generator=g, dtype=torch.float64)
    kw = dict(alpha=0.9, sigma2=0.5)
    base = ais_step(mean, samples, rewards, lam=0.2, **kw)
    shifted = ais_step(mean, samples, rewards + 1000.0, lam=0.2, **kw)
    scaled = ais_step(mean, samples, rewards * 4.0, lam=0.8, **kw)
    for a, b, c in zip(base[:3], shifted[:3], scaled[:3], strict=True):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


def test_tiny_lambda_update_is_the_best_sample():
    # Theorem 3.3: lambda -> 0+ makes the update pick the argmax-reward trajectory
    samples = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(3))
    new_mean, weights, ess, _ = ais_step(
        torch.zeros(2, 3), samples, torch.tensor([0.1, 0.7, 0.3, 0.69]), lam=1e-6, alpha=0.999, sigma2=0.5
    )
    torch.testing.assert_close(new_mean, samples[1])
    assert float(ess) == pytest.approx(1.0)


def test_monte_carlo_update_matches_exact_tilted_mean():
    # proposal N(0, s2), reward r(v) = a * v: the optimal q* is N(s2 * a / lam, s2), so U* = s2 * a / lam
    s2, a, lam = 0.5, 0.3, 0.5
    samples = IIDProposal().draw(torch.zeros(1, 1, dtype=torch.float64), s2, 400_000, torch.Generator().manual_seed(4))
    rewards = a * samples[:, 0, 0]
    new_mean, _, ess, _ = ais_step(
        torch.zeros(1, 1, dtype=torch.float64), samples, rewards, lam=lam, alpha=1.0, sigma2=s2
    )
    assert float(new_mean) == pytest.approx(s2 * a / lam, abs=0.01)
    # the ESS of exponential tilting by a*v/lam under N(0, s2) is n * exp(-s2 * a^2 / lam^2)
    assert float(ess) / 400_000 == pytest.approx(math.exp(-s2 * a**2 / lam**2), rel=0.02)


# -- lam="auto": adaptive tempering ---------------------------------------------------------------------------
def test_auto_temperature_hits_the_ess_target():
    rewards = torch.randn(3, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for target in (0.2, 0.5, 0.8):
        lam = solve_temperature(rewards, ess_target=target)
        ess = effective_sample_size(normalize_log_weights(rewards / lam.unsqueeze(-1)))
        torch.testing.assert_close(ess, torch.full((3,), 16 * target, **F64), rtol=1e-6, atol=1e-6)


def test_auto_temperature_by_hand_two_samples():
    # rewards 0 and 1: weights (1, e^{1/lam}) / Z; ESS = (1 + x)^2 / (1 + x^2) with x = e^{1/lam}.
    # target 0.75 * 2 = 1.5 -> x^2 - 4x + 1 = 0 -> x = 2 + sqrt(3) -> lam = 1 / ln(2 + sqrt(3))
    lam = solve_temperature(torch.tensor([0.0, 1.0]), ess_target=0.75)
    assert float(lam) == pytest.approx(1 / math.log(2 + math.sqrt(3)), rel=1e-9)


def test_auto_temperature_is_scale_and_shift_free():
    g = torch.Generator().manual_seed(6)
    mean, samples = torch.randn(3, 4, generator=g), torch.randn(8, 3, 4, generator=g)
    rewards = torch.randn(8, generator=g, dtype=torch.float64)
    kw = dict(lam="auto", alpha=0.99, sigma2=0.5)
    base = ais_step(mean, samples, rewards, **kw)
    for changed, lam_factor in ((rewards * 37.0 - 5.0, 37.0), (rewards + 1e4, 1.0), (rewards * 1e-3, 1e-3)):
        step = ais_step(mean, samples, changed, **kw)
        torch.testing.assert_close(step.weights, base.weights, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(step.mean, base.mean)
        assert float(step.lam) == pytest.approx(float(base.lam) * lam_factor, rel=1e-9)


def test_auto_temperature_degenerate_cases():
    # all rewards equal: nothing to learn, uniform weights (lam = inf)
    lam = solve_temperature(torch.full((6,), 0.3))
    assert math.isinf(float(lam))
    step = ais_step(torch.zeros(1, 2), torch.randn(6, 1, 2), torch.full((6,), 0.3), lam="auto", alpha=1.0, sigma2=1.0)
    torch.testing.assert_close(step.weights, torch.full((6,), 1 / 6, **F64))
    # one finite reward: it takes all the weight
    rewards = torch.tensor([math.nan, 2.0, -math.inf])
    step = ais_step(torch.zeros(1, 1), torch.randn(3, 1, 1), rewards, lam="auto", alpha=1.0, sigma2=1.0)
    torch.testing.assert_close(step.weights, torch.tensor([0.0, 1.0, 0.0], **F64))
    # many ties at the best reward: the ESS cannot fall below the number of ties; lam ends tiny, weights on the ties
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0])
    step = ais_step(
        torch.zeros(1, 1), torch.randn(4, 1, 1), rewards, lam="auto", alpha=1.0, sigma2=1.0, ess_target=0.25
    )
    torch.testing.assert_close(step.weights, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0], **F64))


def test_auto_temperature_rejects_bad_target():
    with pytest.raises(ValueError, match="ess_target"):
        solve_temperature(torch.randn(4), ess_target=1.0)


# -- proposals: the weights stay correct (Monte Carlo against hand-computed tilted means) ----------------------
def _tilted_mean(proposal, mean, sigma2, a, lam, alpha, n=400_000, seed=7):
    """AIS estimate of E_p*[V], p*(V) ∝ exp(<a, V> / lam) N(V; alpha U, S); the exact answer is alpha U + S a / lam."""
    samples = proposal.draw(mean, sigma2, n, torch.Generator().manual_seed(seed))
    rewards = torch.einsum("td,ntd->n", a, samples)
    return ais_step(mean, samples, rewards, lam=lam, alpha=alpha, sigma2=sigma2, proposal=proposal)


def test_ar1_proposal_tilted_mean_by_hand():
    # tau = 3, rho = 0.5: S = s2 * K with K_st = 0.5^|s-t|; a = (1, 1, 1): K a = (1.75, 2, 1.75); s2 / lam = 0.25
    proposal = make_proposal("ar1", rho=0.5)
    a = torch.ones(3, 1, **F64)
    step = _tilted_mean(proposal, torch.zeros(3, 1, **F64), 0.25, a, lam=1.0, alpha=1.0)
    torch.testing.assert_close(step.mean, torch.tensor([[0.4375], [0.5], [0.4375]], **F64), atol=0.01, rtol=0)


def test_ar1_cross_term_with_alpha_by_hand():
    # U = (1, 0, -1), alpha = 0.8, lam = 2: E_p*[V] = 0.8 U + S a / lam = (0.8, 0, -0.8) + (0.21875, 0.25, 0.21875)
    # (the samples come from N(U, S); the i.i.d. cross term in place of the AR(1) one misses this by > 0.05)
    proposal = make_proposal("ar1", rho=0.5)
    mean = torch.tensor([[1.0], [0.0], [-1.0]], **F64)
    step = _tilted_mean(proposal, mean, 0.25, torch.ones(3, 1, **F64), lam=2.0, alpha=0.8)
    torch.testing.assert_close(step.mean, torch.tensor([[1.01875], [0.25], [-0.58125]], **F64), atol=0.01, rtol=0)


def test_steering_proposal_tilted_mean_by_hand():
    # one (1, d) vector: E = alpha u + s2 a / lam = 0.8 * (1, -1) + 0.5 * (0.2, 0.4) / 0.5 = (1.0, -0.4)
    proposal = make_proposal("steering")
    mean = torch.tensor([[1.0, -1.0]], **F64)
    step = _tilted_mean(proposal, mean, 0.5, torch.tensor([[0.2, 0.4]], **F64), lam=0.5, alpha=0.8)
    torch.testing.assert_close(step.mean, torch.tensor([[1.0, -0.4]], **F64), atol=0.01, rtol=0)


def test_iid_cross_term_is_eq_18():
    g = torch.Generator().manual_seed(8)
    mean, samples = torch.randn(4, 3, generator=g), torch.randn(5, 4, 3, generator=g)
    expected = (mean.unsqueeze(0) * samples).sum(dim=(-2, -1)).to(torch.float64)
    torch.testing.assert_close(cross_term(mean, samples), expected)
    torch.testing.assert_close(cross_term(mean, samples, make_proposal("ar1", rho=0.0)), expected)


def test_gaussian_log_density_matches_torch_distributions():
    # AR(1) with rho = 0.6 over 3 steps, d = 2, against MultivariateNormal with the full covariance
    proposal, s2, rho = make_proposal("ar1", rho=0.6), 0.3, 0.6
    g = torch.Generator().manual_seed(9)
    mean = torch.randn(3, 2, generator=g, **F64)
    samples = proposal.draw(mean, s2, 4, g)
    k = torch.tensor([[rho ** abs(s - t) for t in range(3)] for s in range(3)], **F64)
    cov = s2 * torch.kron(k, torch.eye(2, **F64))  # row-major (t, d) flattening
    mvn = torch.distributions.MultivariateNormal(mean.reshape(-1), covariance_matrix=cov)
    expected = mvn.log_prob(samples.reshape(4, -1))
    torch.testing.assert_close(gaussian_log_density(samples, mean, s2, proposal), expected)


def test_amis_first_iteration_equals_ais_step():
    g = torch.Generator().manual_seed(10)
    mean, samples = torch.randn(3, 2, generator=g), torch.randn(6, 3, 2, generator=g)
    rewards = torch.randn(6, generator=g)
    plain = ais_step(mean, samples, rewards, lam=0.4, alpha=0.9, sigma2=0.7)
    reused = amis_step(mean[None], torch.tensor([0.7]), samples[None], rewards[None], lam=0.4, alpha=0.9)
    torch.testing.assert_close(reused.weights, plain.weights)
    torch.testing.assert_close(reused.mean, plain.mean)


def test_amis_pool_estimates_the_tilted_mean():
    # two past proposals N(0, 0.5) and N(0.3, 0.2) (d = 1); the target of iteration 2 with alpha = 1 is
    # exp(a v / lam) N(v; 0.3, 0.2): mean 0.3 + 0.2 * a / lam = 0.3 + 0.2 * 0.5 / 0.25 = 0.7
    proposal, n = make_proposal("iid"), 200_000
    g = torch.Generator().manual_seed(11)
    means = torch.tensor([[[0.0]], [[0.3]]], **F64)
    sigma2s = torch.tensor([0.5, 0.2], **F64)
    samples = torch.stack([proposal.draw(means[j], float(sigma2s[j]), n, g) for j in range(2)])
    rewards = 0.5 * samples[..., 0, 0]
    step = amis_step(means, sigma2s, samples, rewards, lam=0.25, alpha=1.0, proposal=proposal)
    assert float(step.mean) == pytest.approx(0.7, abs=0.01)
    assert step.weights.shape == (2 * n,)
