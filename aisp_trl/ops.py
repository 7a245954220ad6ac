"""Pure tensor math of AISP: no model, no global state.

Shapes: ``n`` samples per prompt, a mean of event shape ``(T, d)`` (``T = tau`` generated steps, or 1 for a
steering vector, see `aisp_trl.proposals`), pre-logit width ``d``. The weight functions also accept extra leading
batch dimensions (``...``), one slice per prompt, which is how Batched AISP keeps a separate mean and separate
weights for each prompt.

- `eq18_offsets`, `log_weights`, `normalize_log_weights`, `update_mean`, `effective_sample_size`: Eq. 18 and
  Eq. 14.
- `regularized_scores`: ``r - beta * KL`` (the KL-constrained objective), what the weights use with ``kl_coef``.
- `solve_temperature`: ``lam="auto"``, the temperature that gives the weights a target effective sample size
  (adaptive tempering, as in adaptive SMC), which makes AISP invariant to the reward's scale and offset.
- `ais_step`: one AISP update (the paper's); `amis_step`: the same update over every sample drawn so far, weighted
  against the mixture of all past proposals (adaptive multiple importance sampling, Cornuet et al. 2012).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .proposals import IIDProposal, Proposal

_IID = IIDProposal()


def cross_term(mean: Tensor, samples: Tensor, proposal: Proposal | None = None) -> Tensor:
    """``<L^{-1} U, L^{-1} V^i>`` = ``sigma2 * U^T S^{-1} V^i``: the sample-dependent part of Eq. 18's KL term.

    For the paper's i.i.d. proposal (``L = I``) it is ``sum_t <u_t, v^i_t>``; see `aisp_trl.proposals` for the
    derivation with a correlated proposal.

    Args:
        mean (`torch.Tensor` of shape `(..., T, d)`): the mean ``U`` the samples were drawn around.
        samples (`torch.Tensor` of shape `(..., n, T, d)`): the samples ``V^i``.
        proposal (`Proposal`, *optional*): the proposal they came from; the paper's i.i.d. one by default.

    Returns:
        `torch.Tensor` of shape `(..., n)`, float64.
    """
    proposal = proposal or _IID
    white_mean = proposal.whiten(mean.to(torch.float64))
    white_samples = proposal.whiten(samples.to(torch.float64))
    return torch.einsum("...td,...ntd->...n", white_mean, white_samples)


def eq18_offsets(mean: Tensor, samples: Tensor, *, alpha: float, sigma2: float, proposal: Proposal | None = None):
    """The sample-dependent KL term of Eq. 18, ``-(1 - alpha) / sigma2 * <L^{-1} U, L^{-1} V^i>``, or ``None``
    for ``alpha = 1`` (the term vanishes). With the paper's i.i.d. proposal the inner product is
    ``sum_t <u_t, v^i_t>``.

    Args:
        mean (`torch.Tensor` of shape `(..., T, d)`): the mean ``U`` the samples were drawn around.
        samples (`torch.Tensor` of shape `(..., n, T, d)`): the samples ``V^i``.
        alpha (`float`): relaxation ``alpha`` in (0, 1].
        sigma2 (`float`): the noise variance the samples were drawn with.
        proposal (`Proposal`, *optional*): the proposal; the paper's i.i.d. one by default.

    Returns:
        `torch.Tensor` of shape `(..., n)`, float64, or ``None``.
    """
    return None if alpha == 1.0 else -((1.0 - alpha) / sigma2) * cross_term(mean, samples, proposal)


def log_weights(rewards: Tensor, lam: float | Tensor, offsets: Tensor | None = None) -> Tensor:
    """Unnormalised log-weights of Eq. 18, ``r^i / lam + offsets^i`` (``offsets``: `eq18_offsets`, or the AMIS
    density ratio), in float64; ``-inf`` (weight zero) where the reward is not finite (NaN, +-inf).

    Args:
        rewards (`torch.Tensor` of shape `(..., n)`): reward of each sample.
        lam (`float` or `torch.Tensor` of shape `(...)`): temperature ``lambda > 0`` (``inf``: rewards ignored).
        offsets (`torch.Tensor` of shape `(..., n)`, *optional*): the reward-independent part.

    Returns:
        `torch.Tensor` of shape `(..., n)`, float64.
    """
    rewards = rewards.to(torch.float64)
    lam = torch.as_tensor(lam, dtype=torch.float64, device=rewards.device)
    log_w = rewards / lam.unsqueeze(-1) if lam.ndim else rewards / lam
    if offsets is not None:
        log_w = log_w + offsets
    return torch.where(torch.isfinite(rewards), log_w, torch.full_like(log_w, -torch.inf))


def regularized_scores(rewards: Tensor, kl: Tensor | None, kl_coef: float) -> Tensor:
    """The KL-regularised objective of each sample, ``s = r - kl_coef * kl`` (the paper's Eq. 3-6: reward minus KL to
    the base model, with the point-mass estimate ``kl = -log P_base(y | x)``), in float64; a non-finite reward stays
    non-finite (weight zero). ``kl_coef = 0`` (or no ``kl``) returns the rewards.

    Args:
        rewards (`torch.Tensor` of shape `(..., n)`): each sample's reward.
        kl (`torch.Tensor` of shape `(..., n)`, *optional*): each sample's KL estimate, >= 0.
        kl_coef (`float`): beta >= 0.

    Returns:
        `torch.Tensor` of shape `(..., n)`, float64.
    """
    rewards = rewards.to(torch.float64)
    if kl is None or kl_coef == 0.0:
        return rewards
    return rewards - kl_coef * kl.to(device=rewards.device, dtype=torch.float64)


def normalize_log_weights(log_weights: Tensor) -> Tensor:
    """Self-normalised weights ``w = softmax(log_w)``, computed with logsumexp (never ``exp`` of raw values).

    Args:
        log_weights (`torch.Tensor` of shape `(..., n)`): unnormalised log-weights; ``-inf`` means zero.

    Returns:
        `torch.Tensor` of shape `(..., n)` summing to one over the last dimension.

    Raises:
        ValueError: if every log-weight of some prompt is ``-inf`` or NaN (nothing to normalise).
    """
    # NaN means "no weight"; +inf would turn the softmax into NaN, so it becomes the largest finite value
    log_weights = torch.where(torch.isnan(log_weights), -torch.inf, log_weights)
    log_weights = log_weights.clamp(max=torch.finfo(log_weights.dtype).max)
    log_norm = torch.logsumexp(log_weights, dim=-1, keepdim=True)
    if not torch.isfinite(log_norm).all():
        raise ValueError(
            "every sample of a prompt has weight zero (all rewards non-finite); check the reward function."
        )
    return torch.exp(log_weights - log_norm)


def update_mean(weights: Tensor, samples: Tensor) -> Tensor:
    """The AIS mean update ``U <- sum_i w^i V^i`` (Eq. 14).

    Args:
        weights (`torch.Tensor` of shape `(..., n)`): normalised weights.
        samples (`torch.Tensor` of shape `(..., n, tau, d)`): the trajectories ``V^i``.

    Returns:
        `torch.Tensor` of shape `(..., tau, d)` in the dtype of ``samples``.
    """
    return torch.einsum("...n,...ntd->...td", weights.to(samples.dtype), samples)


def effective_sample_size(weights: Tensor) -> Tensor:
    """Kish's effective sample size ``1 / sum_i w_i^2`` of normalised weights: 1 (one sample) to n (uniform).

    Args:
        weights (`torch.Tensor` of shape `(..., n)`): normalised weights.

    Returns:
        `torch.Tensor` of shape `(...)`.
    """
    return 1.0 / (weights.to(torch.float64) ** 2).sum(dim=-1)


def gaussian_log_density(samples: Tensor, mean: Tensor, sigma2: float, proposal: Proposal | None = None) -> Tensor:
    """``log q(V^i | U, sigma2)`` of a Gaussian proposal ``N(U, sigma2 L L^T)``, normaliser included.

    ``-|L^{-1}(V - U)|^2 / (2 sigma2) - D/2 log(2 pi sigma2) - log|det L|`` with ``D = T * d``. Only sample reuse
    (`amis_step`) needs the normaliser: it compares proposals of different ``sigma2``.

    Args:
        samples (`torch.Tensor` of shape `(n, T, d)`): the samples ``V^i``.
        mean (`torch.Tensor` of shape `(T, d)`): the proposal's mean.
        sigma2 (`float`): the proposal's variance.
        proposal (`Proposal`, *optional*): its correlation structure; the paper's i.i.d. one by default.

    Returns:
        `torch.Tensor` of shape `(n,)`, float64.
    """
    proposal = proposal or _IID
    white = proposal.whiten(samples.to(torch.float64) - mean.to(torch.float64))
    dim = mean.numel()
    return (
        -0.5 * white.pow(2).sum(dim=(-2, -1)) / sigma2
        - 0.5 * dim * math.log(2 * math.pi * sigma2)
        - proposal.log_det(tuple(mean.shape))
    )


def solve_temperature(
    rewards: Tensor, offsets: Tensor | None = None, *, ess_target: float = 0.5, n_bisect: int = 60
) -> Tensor:
    """``lam="auto"``: the temperature whose weights ``softmax(r / lam + offsets)`` have ESS = ``ess_target * m``.

    ``m`` is the number of finite rewards. Adaptive tempering as in adaptive SMC: bisection on ``log(1 / lam)``
    after standardising the rewards, so the answer scales with the rewards: multiplying every reward by ``c > 0``
    multiplies ``lam`` by ``c``, adding a constant changes nothing, and the weights stay the same.

    Degenerate cases: when the finite rewards do not vary (all equal, or one finite reward) or the target cannot be
    reached even at ``lam = inf`` (the offsets alone concentrate the weights), ``lam = inf``: rewards carry no
    information and the weights come from the offsets alone. When even ``lam -> 0`` keeps the ESS above target (many
    samples tie at the best reward), ``lam`` is the smallest value searched (best-of-n among the ties).

    Args:
        rewards (`torch.Tensor` of shape `(..., n)`): rewards; non-finite ones get weight zero.
        offsets (`torch.Tensor` of shape `(..., n)`, *optional*): the reward-free part of the log-weights (Eq. 18's
            KL term, or the mixture correction of `amis_step`).
        ess_target (`float`, defaults to 0.5): target effective sample size as a fraction of the finite samples, in
            (0, 1).
        n_bisect (`int`, defaults to 60): bisection steps on ``log(1 / lam)`` over ``[-20, 20]`` in standardised
            units.

    Returns:
        `torch.Tensor` of shape `(...)`, float64: ``lam`` per prompt, possibly ``inf``.
    """
    if not 0.0 < ess_target < 1.0:
        raise ValueError(f"`ess_target` must lie in (0, 1), got {ess_target!r}; 0.5 is a good default.")
    r = rewards.to(torch.float64)
    finite = torch.isfinite(r)
    count = finite.sum(dim=-1)
    c = torch.zeros_like(r) if offsets is None else offsets.to(torch.float64)
    # standardise the finite rewards: z = (r - max r) / std(r) <= 0, so the search is scale- and shift-free
    r0 = torch.where(finite, r, torch.zeros_like(r))
    mean = r0.sum(dim=-1) / count.clamp(min=1)
    std = torch.sqrt(torch.where(finite, (r - mean.unsqueeze(-1)) ** 2, torch.zeros_like(r)).sum(-1) / count.clamp(1))
    best = torch.where(finite, r, torch.full_like(r, -torch.inf)).amax(dim=-1)
    scale = torch.where(std > 0, std, torch.ones_like(std))
    z = torch.where(finite, (r - best.unsqueeze(-1)) / scale.unsqueeze(-1), torch.full_like(r, -torch.inf))
    target = ess_target * count

    def ess(log_beta: Tensor) -> Tensor:
        log_w = torch.where(finite, log_beta.exp().unsqueeze(-1) * z + c, torch.full_like(r, -torch.inf))
        return effective_sample_size(torch.softmax(log_w, dim=-1))

    lo, hi = torch.full_like(std, -20.0), torch.full_like(std, 20.0)
    for _ in range(n_bisect):  # invariant: ess(lo) > target >= ess(hi) when a root exists
        mid = (lo + hi) / 2
        above = ess(mid) > target
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    lam = scale / ((lo + hi) / 2).exp()
    unreachable = ess(torch.full_like(std, -20.0)) <= target  # weights already too concentrated without rewards
    return torch.where((std > 0) & ~unreachable, lam, torch.full_like(lam, torch.inf))


class StepInfo(NamedTuple):
    """What one AISP update returns (`ais_step`, `amis_step`)."""

    mean: Tensor  # U^{k+1}, shape (..., T, d)
    weights: Tensor  # normalised weights of the samples used, (..., n) or (k * n,) for amis_step
    ess: Tensor  # effective sample size of those weights, (...)
    lam: Tensor  # the temperature used, (...); inf where the rewards carried no information


def ais_step(
    mean: Tensor,
    samples: Tensor,
    rewards: Tensor,
    *,
    lam: float | str,
    alpha: float,
    sigma2: float,
    proposal: Proposal | None = None,
    ess_target: float = 0.5,
) -> StepInfo:
    """One adaptive-importance-sampling update (Algorithm 1, lines 22-23): weights, then the new mean.

    Args:
        mean (`torch.Tensor` of shape `(..., T, d)`): the mean ``U^k`` the samples were drawn around.
        samples (`torch.Tensor` of shape `(..., n, T, d)`): the samples ``V^{i,k}``.
        rewards (`torch.Tensor` of shape `(..., n)`): their rewards; non-finite ones get weight zero.
        lam (`float` or ``"auto"``): the temperature, or ``"auto"`` to solve for ``ess_target`` (`solve_temperature`).
        alpha, sigma2: see `AISPConfig`; ``sigma2`` is the variance these samples were drawn with.
        proposal (`Proposal`, *optional*): the proposal the samples came from (i.i.d. by default).
        ess_target (`float`, defaults to 0.5): used when ``lam="auto"``.

    Returns:
        `StepInfo`: the new mean ``U^{k+1}`` `(..., T, d)`, the normalised weights `(..., n)`, the effective sample
        size `(...)` and the temperature used `(...)`.
    """
    offsets = eq18_offsets(mean, samples, alpha=alpha, sigma2=sigma2, proposal=proposal)
    lam_used = _temperature(rewards, offsets, lam, ess_target)
    weights = normalize_log_weights(log_weights(rewards, lam_used, offsets))  # Eq. 18, cross term computed once
    return StepInfo(update_mean(weights, samples), weights, effective_sample_size(weights), lam_used)


def amis_step(
    means: Tensor,
    sigma2s: Tensor,
    samples: Tensor,
    rewards: Tensor,
    *,
    lam: float | str,
    alpha: float,
    proposal: Proposal | None = None,
    ess_target: float = 0.5,
) -> StepInfo:
    """The AISP update over every sample drawn so far (adaptive multiple importance sampling, Cornuet et al. 2012).

    After ``k`` iterations, each of the ``k * n`` samples is weighted as if drawn from the equal mixture of the ``k``
    proposals used (deterministic-mixture weights), against the target of the current iteration:

        log w = r / lam + log N(V; alpha U^k, S^k) - log( (1/k) sum_j N(V; U^j, S^j) ),   S^j = sigma2_j L L^T.

    With ``k = 1`` this is exactly `ais_step` (the normalisers cancel). ``lam="auto"`` solves for an ESS of
    ``ess_target * n`` (a fraction of one iteration's samples, not of the pool).

    Args:
        means (`torch.Tensor` of shape `(k, T, d)`): the means ``U^1..U^k`` of the iterations so far.
        sigma2s (`torch.Tensor` of shape `(k,)`): the variance each iteration drew with.
        samples (`torch.Tensor` of shape `(k, n, T, d)`): every iteration's samples.
        rewards (`torch.Tensor` of shape `(k, n)`): their rewards; non-finite ones get weight zero.
        lam, alpha, proposal, ess_target: as in `ais_step`.

    Returns:
        `StepInfo` with the new mean `(T, d)` and the weights of the ``k * n`` pooled samples.
    """
    k, n = rewards.shape
    pool = samples.reshape(k * n, *samples.shape[2:])
    pooled_rewards = rewards.reshape(k * n)
    log_q = torch.stack([gaussian_log_density(pool, means[j], float(sigma2s[j]), proposal) for j in range(k)])
    log_mixture = torch.logsumexp(log_q, dim=0) - math.log(k)
    log_reference = gaussian_log_density(pool, alpha * means[-1], float(sigma2s[-1]), proposal)
    offsets = log_reference - log_mixture
    lam_used = _temperature(pooled_rewards, offsets, lam, ess_target * n / (k * n))
    weights = normalize_log_weights(log_weights(pooled_rewards, lam_used, offsets))
    return StepInfo(update_mean(weights, pool), weights, effective_sample_size(weights), lam_used)


def _temperature(rewards: Tensor, offsets: Tensor | None, lam: float | str, ess_target: float) -> Tensor:
    """The temperature tensor `(...)`: a fixed ``lam`` broadcast, or `solve_temperature` for ``"auto"``."""
    if lam == "auto":
        return solve_temperature(rewards, offsets, ess_target=ess_target)
    if isinstance(lam, str):
        raise ValueError(f"`lam` must be a number > 0 or 'auto', got {lam!r}.")
    return torch.full(rewards.shape[:-1], float(lam), dtype=torch.float64, device=rewards.device)
