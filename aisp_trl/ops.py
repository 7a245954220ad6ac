"""Pure tensor math of AISP: no model, no global state.

Shapes: ``n`` samples per prompt, horizon ``tau`` generated steps, pre-logit width ``d``. Every function
also accepts extra leading batch dimensions (``...``), one slice per prompt, which is how Batched AISP
keeps a separate mean and separate weights for each prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sample_prelogit_noise(mean: Tensor, sigma2: float, n: int, generator: torch.Generator) -> Tensor:
    """Draws ``V^i = U + sigma * eps^i`` with ``eps^i ~ N(0, I)`` (Algorithm 1, line 4).

    Args:
        mean (`torch.Tensor` of shape `(tau, d)`): the current mean ``U``.
        sigma2 (`float`): the noise variance ``sigma^2``.
        n (`int`): how many samples to draw.
        generator (`torch.Generator`): the random stream; must live on ``mean.device``.

    Returns:
        `torch.Tensor` of shape `(n, tau, d)`: the perturbation trajectories ``V^1..V^n``.
    """
    eps = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
    return mean.unsqueeze(0) + (sigma2**0.5) * eps


def log_importance_weights(
    rewards: Tensor, mean: Tensor, samples: Tensor, *, lam: float, alpha: float, sigma2: float
) -> Tensor:
    """Unnormalised log-weights of Eq. 18: ``r^i / lam - (1 - alpha) / sigma2 * sum_t <u_t, v^i_t>``.

    Non-finite rewards (NaN, +-inf) get log-weight ``-inf``, i.e. weight zero.

    Args:
        rewards (`torch.Tensor` of shape `(..., n)`): reward of each sample.
        mean (`torch.Tensor` of shape `(..., tau, d)`): the mean ``U`` the samples were drawn around.
        samples (`torch.Tensor` of shape `(..., n, tau, d)`): the trajectories ``V^i``.
        lam (`float`): temperature ``lambda > 0``.
        alpha (`float`): relaxation ``alpha`` in (0, 1]; 1 removes the second term.
        sigma2 (`float`): the noise variance.

    Returns:
        `torch.Tensor` of shape `(..., n)`, float64.
    """
    rewards = rewards.to(torch.float64)
    log_w = rewards / lam
    if alpha != 1.0:
        # <u_t, v^i_t> summed over steps and width: the cross term of log q(V|0) - log q(V|U).
        cross = torch.einsum("...td,...ntd->...n", mean.to(torch.float64), samples.to(torch.float64))
        log_w = log_w - ((1.0 - alpha) / sigma2) * cross
    return torch.where(torch.isfinite(rewards), log_w, torch.full_like(log_w, -torch.inf))


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


def ais_step(
    mean: Tensor, samples: Tensor, rewards: Tensor, *, lam: float, alpha: float, sigma2: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One adaptive-importance-sampling update (Algorithm 1, lines 22-23): weights, then the new mean.

    Args:
        mean (`torch.Tensor` of shape `(..., tau, d)`): the mean ``U^k`` the samples were drawn around.
        samples (`torch.Tensor` of shape `(..., n, tau, d)`): the trajectories ``V^{i,k}``.
        rewards (`torch.Tensor` of shape `(..., n)`): their rewards; non-finite ones get weight zero.
        lam, alpha, sigma2: see `AISPConfig`.

    Returns:
        `tuple` of the new mean ``U^{k+1}`` `(..., tau, d)`, the normalised weights `(..., n)` and the
        effective sample size `(...)`.
    """
    log_w = log_importance_weights(rewards, mean, samples, lam=lam, alpha=alpha, sigma2=sigma2)
    weights = normalize_log_weights(log_w)
    return update_mean(weights, samples), weights, effective_sample_size(weights)
