"""The `Decoder` protocol every engine implements, and the completion cut every engine shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from torch import Tensor
from transformers import GenerationConfig

from ..hooks import PrelogitTransform
from .noise import PrelogitNoise

__all__ = ["Decoder", "cut_completion", "eos_ids"]


class Decoder(Protocol):
    """How the samplers decode. Rows are token-id lists (a query repeated once per sample); every method returns one
    completion per row: its new token ids, cut at the row's horizon and after the first EOS (kept)."""

    def greedy(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None = None,
        *,
        transform: PrelogitTransform | None = None,
        device: Any | None = None,
        **model_kwargs: Any,
    ) -> list[list[int]]:
        """Greedy decoding; with ``perturbations`` (a `(rows, tau, d)` tensor, or a `PrelogitNoise` whose `dense()`
        is that tensor), ``v_t`` is added to the pre-logit at step t; with ``transform`` (``(z_t, t) -> z_t'``, rows of
        `(rows, d)`), the LM head sees ``transform(z_t, t)`` instead (state-dependent controllers: RE-Control, an
        amortized AISP controller; HF only). Only the greedy path takes one. ``device``: where the input ids go (HF;
        default: the LM head's device)."""
        ...

    def sample(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        seed: int,
        *,
        device: Any | None = None,
        **model_kwargs: Any,
    ) -> list[list[int]]:
        """Sampled decoding with ``config`` (e.g. top-p), reproducible for a ``seed``; never touches global RNGs."""
        ...

    def greedy_with_nll(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None = None,
        *,
        device: Any | None = None,
        **model_kwargs: Any,
    ) -> tuple[list[list[int]], list[float]]:
        """`greedy`, and per row ``-log P_base(completion | row)`` summed over the completion's tokens under the
        unperturbed model (0.0 for an empty completion): the point-mass KL estimate of each decoded answer."""
        ...

    def sample_with_nll(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        seed: int,
        *,
        device: Any | None = None,
        **model_kwargs: Any,
    ) -> tuple[list[list[int]], list[float]]:
        """`sample`, and each row's ``-log P_base(completion | row)`` (the base model at T = 1, untruncated)."""
        ...


def eos_ids(config: GenerationConfig, fallback: int | list[int] | None = None) -> set[int]:
    """The EOS token ids of ``config`` (``fallback``, e.g. the tokenizer's, when it names none)."""
    eos = config.eos_token_id if config.eos_token_id is not None else fallback
    return set(eos) if isinstance(eos, list | tuple) else ({eos} if eos is not None else set())


def cut_completion(tokens: Sequence[int], tau: int, eos: set[int]) -> list[int]:
    """At most ``tau`` tokens, ending after the first EOS (kept): what every decoder returns per row."""
    tokens = list(tokens[:tau])
    stop = next((t + 1 for t, token in enumerate(tokens) if token in eos), len(tokens))
    return tokens[:stop]
