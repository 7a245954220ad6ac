"""The decoding seam: "decode these rows, with these pre-logit perturbations or this sampling config -> token ids".

Algorithm 1 (`aisp_trl.samplers`) and the baselines only ask a `Decoder` for completion ids; they never call an
engine themselves, so the same search loop runs on any implementation, and a test can swap in a fake one.

- `Decoder`: the protocol, two methods.
- `HFDecoder` (`aisp_trl.decoding.hf`): transformers' ``generate`` with the pre-logit hook.
- `VLLMDecoder` (`aisp_trl.decoding.vllm`, imported on use: vLLM is optional): a ``vllm.LLM`` engine whose logits
  processor adds ``W v_t`` to the logits (`aisp_trl.decoding.vllm_processor`).
- `PrelogitNoise` (`aisp_trl.decoding.noise`): the perturbations as the recipe that draws them, so every backend
  draws the same numbers.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor
from transformers import GenerationConfig

from ..hooks import PrelogitTransform
from .hf import HFDecoder
from .noise import NoiseDraw, PrelogitNoise

__all__ = ["Decoder", "HFDecoder", "NoiseDraw", "PrelogitNoise", "VLLMDecoder"]


def __getattr__(name: str) -> Any:
    if name == "VLLMDecoder":  # imported on use: vLLM is an optional dependency
        from .vllm import VLLMDecoder

        return VLLMDecoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        **model_kwargs: Any,
    ) -> list[list[int]]:
        """Greedy decoding; with ``perturbations`` (a `(rows, tau, d)` tensor, or a `PrelogitNoise` whose `dense()`
        is that tensor), ``v_t`` is added to the pre-logit at step t; with ``transform`` (``(z_t, t) -> z_t'``, rows of
        `(rows, d)`), the LM head sees ``transform(z_t, t)`` instead (state-dependent controllers: RE-Control, an
        amortized AISP controller; HF only). Only the greedy path takes one."""
        ...

    def sample(
        self, rows: list[list[int]], horizons: list[int], config: GenerationConfig, seed: int, **model_kwargs: Any
    ) -> list[list[int]]:
        """Sampled decoding with ``config`` (e.g. top-p), reproducible for a ``seed``; never touches global RNGs."""
        ...
