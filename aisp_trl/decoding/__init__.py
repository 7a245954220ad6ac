"""The decoding seam: "decode these rows, with these pre-logit perturbations or this sampling config -> token ids".

Algorithm 1 (`aisp_trl.samplers`) and the baselines only ask a `Decoder` for completion ids; they never call an
engine themselves, so the same search loop runs on any implementation, and a test can swap in a fake one.

- `Decoder` (`aisp_trl.decoding.base`): the protocol, two methods, and the EOS cut every engine applies.
- `HFDecoder` (`aisp_trl.decoding.hf`): transformers' ``generate`` with the pre-logit hook.
- `VLLMDecoder` (`aisp_trl.decoding.vllm`, imported on use: vLLM is optional): a ``vllm.LLM`` engine whose logits
  processor adds ``W v_t`` to the logits (`aisp_trl.decoding.vllm_processor`).
- `PrelogitNoise` (`aisp_trl.decoding.noise`): the perturbations as the recipe that draws them, so every backend
  draws the same numbers.
"""

from __future__ import annotations

from typing import Any

from .base import Decoder, cut_completion, eos_ids
from .hf import HFDecoder
from .noise import NoiseDraw, PrelogitNoise

__all__ = ["Decoder", "HFDecoder", "NoiseDraw", "PrelogitNoise", "VLLMDecoder", "cut_completion", "eos_ids"]


def __getattr__(name: str) -> Any:
    if name == "VLLMDecoder":  # imported on use: vLLM is an optional dependency
        from .vllm import VLLMDecoder

        return VLLMDecoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
