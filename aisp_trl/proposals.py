"""Proposal distributions of AISP: where the pre-logit perturbations ``V`` are drawn from.

Every proposal is a Gaussian ``q(V | U, sigma2) = N(U, sigma2 * L L^T)`` around the mean ``U`` with a fixed
correlation structure ``L`` (lower triangular, acting along the step axis): a sample is ``V = U + sigma * L eps``
with ``eps ~ N(0, I)``. The importance weights only need three things from a proposal, so that is its interface:

- ``color(eps)`` = ``L eps`` and ``whiten(x)`` = ``L^{-1} x`` (the coordinates in which the proposal is isotropic);
- ``log_det(shape)`` = ``log |det L|`` for one sample of that shape (the normaliser; only sample reuse needs it);
- ``to_steps(v, horizon)``: the ``(..., tau, d)`` perturbations ``v_t`` added to the pre-logits at each step.

**Why the weights stay correct for every proposal (the Eq. 18 cross term).** The paper relaxes the reference
distribution of the KL term from ``N(0, sigma2 I)`` to ``N(alpha U, sigma2 I)`` (MPPI). Keeping that relaxation
with the proposal's own covariance ``S = sigma2 L L^T`` (the reference is the zero-mean proposal, i.e. BoN with
the same noise), the log-weight of a sample is

    log w = r / lam + log N(V; alpha U, S) - log N(V; U, S)
          = r / lam - 1/2 (V - alpha U)^T S^{-1} (V - alpha U) + 1/2 (V - U)^T S^{-1} (V - U)
          = r / lam - (1 - alpha) U^T S^{-1} V + (terms without V, which cancel in the normalisation)
          = r / lam - (1 - alpha) / sigma2 * <L^{-1} U, L^{-1} V>.

For ``L = I`` (i.i.d. per step) this is Eq. 18: ``-(1 - alpha) / sigma2 * sum_t <u_t, v_t>``. Otherwise the inner
product is taken in whitened coordinates; `aisp_trl.ops.cross_term` computes it from ``whiten``.

The proposals:

- `IIDProposal` (the paper, Eq. 11): ``v_t`` independent across steps; mean of shape ``(tau, d)``.
- `SteeringProposal` (the paper's future work: temporally correlated noise, fully): one vector ``v`` added at every
  step; the mean is a single steering vector of shape ``(1, d)``, a search space of ``d`` instead of ``tau * d``.
- `AR1Proposal`: ``eps_1 = eta_1``, ``eps_t = rho eps_{t-1} + sqrt(1 - rho^2) eta_t`` (unit marginal variance,
  correlation ``rho^|s-t|`` between steps); mean of shape ``(tau, d)``. ``rho = 0`` is `IIDProposal`, ``rho -> 1``
  approaches `SteeringProposal`. Whitening: ``w_1 = x_1``, ``w_t = (x_t - rho x_{t-1}) / sqrt(1 - rho^2)``.

Example:
    ```python
    >>> import torch
    >>> from aisp_trl.proposals import make_proposal
    >>> proposal = make_proposal("ar1", rho=0.9)
    >>> v = proposal.draw(torch.zeros(16, 8), sigma2=0.5, n=4, generator=torch.Generator().manual_seed(0))
    >>> v.shape  # (n, tau, d)
    torch.Size([4, 16, 8])
    ```
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["PROPOSALS", "AR1Proposal", "IIDProposal", "Proposal", "SteeringProposal", "make_proposal"]

PROPOSALS: tuple[str, ...] = ("iid", "steering", "ar1")
"""Names accepted by `make_proposal` and `AISPConfig.proposal`."""


class Proposal:
    """A Gaussian proposal ``N(U, sigma2 L L^T)``; this base class is the i.i.d. case ``L = I``.

    Subclasses override ``mean_shape``, ``color``, ``whiten``, ``log_det`` and ``to_steps``; ``draw`` is shared.
    Tensors carry the mean's event shape ``(T, d)`` in their last two dimensions (``T = tau``, or 1 for a
    steering vector), with any leading sample / batch dimensions.
    """

    name = "iid"

    def mean_shape(self, horizon: int, width: int) -> tuple[int, int]:
        """Shape of the mean ``U`` for a prompt with ``horizon`` new tokens and pre-logit width ``width``."""
        return (horizon, width)

    def color(self, eps: Tensor) -> Tensor:
        """``L eps``: correlates standard normal noise of shape `(..., T, d)` along the step axis."""
        return eps

    def whiten(self, x: Tensor) -> Tensor:
        """``L^{-1} x`` for ``x`` of shape `(..., T, d)`: the inverse of `color`."""
        return x

    def log_det(self, shape: tuple[int, ...]) -> float:
        """``log |det L|`` of one sample of event shape ``shape`` = `(T, d)`."""
        return 0.0

    def to_steps(self, samples: Tensor, horizon: int) -> Tensor:
        """The per-step perturbations `(..., horizon, d)` that a sample `(..., T, d)` adds to the pre-logits."""
        return samples

    def draw(self, mean: Tensor, sigma2: float, n: int, generator: torch.Generator) -> Tensor:
        """``V^i = U + sigma * L eps^i``, ``eps^i ~ N(0, I)``, ``i = 1..n`` (Algorithm 1, line 4).

        Args:
            mean (`torch.Tensor` of shape `(T, d)`): the current mean ``U``.
            sigma2 (`float`): the noise variance ``sigma^2`` of this iteration.
            n (`int`): how many samples to draw.
            generator (`torch.Generator`): the random stream; must live on ``mean.device``.

        Returns:
            `torch.Tensor` of shape `(n, T, d)`.
        """
        eps = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device)
        return mean.unsqueeze(0) + math.sqrt(sigma2) * self.color(eps)

    def spec(self) -> dict[str, object]:
        """The proposal as plain data, ``make_proposal(**spec)`` rebuilds it (e.g. in a vLLM worker)."""
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IIDProposal(Proposal):
    """The paper's proposal (Eq. 11): ``v_t ~ N(u_t, sigma2 I)`` independently at every step."""


class SteeringProposal(Proposal):
    """One perturbation ``v ~ N(u, sigma2 I)`` of shape ``(1, d)`` added at every step: a steering vector."""

    name = "steering"

    def mean_shape(self, horizon: int, width: int) -> tuple[int, int]:
        return (1, width)

    def to_steps(self, samples: Tensor, horizon: int) -> Tensor:
        if samples.shape[-2] != 1:
            raise ValueError(
                f"a steering-vector sample must have one step, shape (..., 1, d), got {tuple(samples.shape)}."
            )
        return samples.expand(*samples.shape[:-2], horizon, samples.shape[-1])


class AR1Proposal(Proposal):
    """Noise correlated over steps: ``eps_t = rho eps_{t-1} + sqrt(1 - rho^2) eta_t``, unit marginal variance.

    Args:
        rho (`float`): correlation between consecutive steps, in ``[0, 1)``; 0 is `IIDProposal`.
    """

    name = "ar1"

    def __init__(self, rho: float):
        if isinstance(rho, bool) or not isinstance(rho, int | float) or not 0.0 <= rho < 1.0:
            raise ValueError(
                f"`rho` must lie in [0, 1), got {rho!r}; use e.g. 0.9 (rho -> 1 approaches the 'steering' proposal)."
            )
        self.rho = float(rho)
        self.scale = math.sqrt(1.0 - self.rho**2)

    def color(self, eps: Tensor) -> Tensor:
        out = torch.empty_like(eps)
        out[..., 0, :] = eps[..., 0, :]
        for t in range(1, eps.shape[-2]):  # tau is small (tens of steps): a plain recursion reads best
            out[..., t, :] = self.rho * out[..., t - 1, :] + self.scale * eps[..., t, :]
        return out

    def whiten(self, x: Tensor) -> Tensor:
        out = x.clone()
        out[..., 1:, :] = (x[..., 1:, :] - self.rho * x[..., :-1, :]) / self.scale
        return out

    def log_det(self, shape: tuple[int, ...]) -> float:
        steps, width = shape[-2], shape[-1]
        return (steps - 1) * width * math.log(self.scale)

    def spec(self) -> dict[str, object]:
        return {"name": self.name, "rho": self.rho}

    def __repr__(self) -> str:
        return f"AR1Proposal(rho={self.rho})"


def make_proposal(name: str, rho: float = 0.9) -> Proposal:
    """The proposal called ``name`` (one of `PROPOSALS`); ``rho`` is used by ``"ar1"`` only. Inverse of
    `Proposal.spec`: ``make_proposal(**proposal.spec())`` is an equal proposal."""
    if name == "iid":
        return IIDProposal()
    if name == "steering":
        return SteeringProposal()
    if name == "ar1":
        return AR1Proposal(rho)
    raise ValueError(f"`proposal` must be one of {list(PROPOSALS)}, got {name!r}.")
