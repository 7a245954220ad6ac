"""`PrelogitNoise`: the pre-logit perturbations of one decoding call, as the recipe that draws them.

AISP draws each prompt's ``n`` samples ``V = U + sigma * L eps`` from that prompt's own ``torch.Generator`` (see
`aisp_trl.proposals`). Rather than the dense `(rows, tau, d)` tensor, the samplers hand the decoder the generator
state before each draw, the mean, ``sigma2`` and the proposal. A decoder in this process (HF) materialises the
tensor; the vLLM decoder sends the recipe to its engine, whose worker redraws the same numbers (same torch, same
CPU generator: bit-identical), so the same seed gives the same noise, hence the same samples, on both backends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..proposals import IIDProposal, Proposal

__all__ = ["NoiseDraw", "PrelogitNoise"]


@dataclass(frozen=True)
class NoiseDraw:
    """One prompt's ``n`` pre-logit samples: ``proposal.draw(mean, sigma2, n, generator)`` with the generator in
    ``state``.

    Args:
        state (`torch.Tensor`): the CPU ``torch.Generator`` state (``get_state()``, uint8) before the draw.
        mean (`torch.Tensor` of shape `(T, d)`): the proposal mean ``U`` (``T = horizon``, or 1 for a steering vector).
        sigma2 (`float`): the noise variance of this iteration.
        n (`int`): samples drawn (rows of this prompt).
        horizon (`int`): tau, the steps that get a perturbation.
        proposal (`Proposal`): the proposal with its parameters (e.g. `AR1Proposal(rho=0.9)`).
        drawn (`torch.Tensor` of shape `(n, T, d)`, *optional*): the samples when the caller has already drawn them
            from ``state`` (the sampler needs them for its update): `draw` returns them instead of drawing again.
            Never sent to another process (a vLLM worker redraws from ``state``).
    """

    state: Tensor
    mean: Tensor
    sigma2: float
    n: int
    horizon: int
    proposal: Proposal = field(default_factory=IIDProposal)
    drawn: Tensor | None = field(default=None, compare=False, repr=False)

    def draw(self) -> Tensor:
        """The samples ``V``, shape `(n, T, d)`, float32 on CPU; the same numbers on every call."""
        if self.drawn is not None:
            return self.drawn
        generator = torch.Generator()
        generator.set_state(self.state)
        return self.proposal.draw(self.mean, self.sigma2, self.n, generator)

    def steps(self) -> Tensor:
        """The per-step perturbations ``v_t``, shape `(n, horizon, d)`."""
        return self.proposal.to_steps(self.draw(), self.horizon)

    def key(self) -> str:
        """A digest naming this draw (state, mean, settings): equal draws share it, so a worker draws them once."""
        digest = hashlib.sha256(self.state.numpy().tobytes())
        digest.update(self.mean.contiguous().numpy().tobytes())
        digest.update(f"{self.sigma2!r}:{self.n}:{self.horizon}:{self.proposal!r}".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class PrelogitNoise:
    """The perturbations of one greedy decoding call: prompt ``j`` owns rows ``j*n .. j*n + n - 1`` (its draw's
    ``n``), and row ``i`` of prompt ``j`` gets sample ``i`` of ``draws[j]``.

    Args:
        draws (`list[NoiseDraw]`): one per prompt, in row order.
        width (`int`): d, the pre-logit width.
    """

    draws: list[NoiseDraw]
    width: int

    @property
    def rows(self) -> int:
        return sum(draw.n for draw in self.draws)

    def row_sources(self) -> list[tuple[int, int]]:
        """For each row, ``(draw index, sample index)``."""
        return [(j, i) for j, draw in enumerate(self.draws) for i in range(draw.n)]

    def dense(self) -> Tensor:
        """The `(rows, tau_max, d)` tensor the HF hook adds (steps past a row's horizon are zero)."""
        tau_max = max(draw.horizon for draw in self.draws)
        out = torch.zeros(self.rows, tau_max, self.width)
        start = 0
        for draw in self.draws:
            out[start : start + draw.n, : draw.horizon] = draw.steps()
            start += draw.n
        return out
