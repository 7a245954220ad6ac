"""`PrelogitPerturbation`: AISP's vLLM v1 logits processor, a thin adapter around `LogitShift`.

It runs in the engine's worker: it reads ``W`` there from the checkpoint (tied embeddings included, on the first
perturbed request) and redraws each request's noise from the recipe the sampler sent (see
`aisp_trl.decoding.logit_shift`). This module imports vLLM; `aisp_trl.vllm.load_llm` registers the class with the
engine. It targets vLLM's v1 model runner (``VLLM_USE_V2_MODEL_RUNNER=0``, which `load_llm` sets; the CPU backend
uses it anyway): the v2 GPU runner has another logits-processor interface (``add_request`` / ``remove_request``, no
output ids), not supported here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .logit_shift import EXTRA_KEY, LogitShift, load_output_weight, logit_scale

__all__ = ["PrelogitPerturbation"]


class PrelogitPerturbation(LogitsProcessor):
    """Adds ``scale * W v_t`` to the logits of each request carrying ``SamplingParams.extra_args[EXTRA_KEY]``.

    Args:
        vllm_config (`VllmConfig`): the engine's configuration (model path, revision, dtype, HF config).
        device (`torch.device`): where the logits live.
        is_pin_memory (`bool`): unused.

    Raises:
        ValueError: for a soft-capped model (see `logit_scale`).
    """

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
        model_config = vllm_config.model_config
        source = (str(model_config.model), model_config.hf_config, model_config.revision)
        self.shift = LogitShift(
            lambda: load_output_weight(*source), logit_scale(model_config.hf_config), device, model_config.dtype
        )

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        spec = (sampling_params.extra_args or {}).get(EXTRA_KEY)
        if spec is not None and not (isinstance(spec, dict) and ("draw" in spec or "steps" in spec)):
            raise ValueError(
                f"`extra_args[{EXTRA_KEY!r}]` must come from aisp_trl's encode_draw / encode_steps, got {spec!r}."
            )

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token greedy decoding picks: that is the point

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        self.shift.update(
            batch_update.removed,
            [(i, params.extra_args if params is not None else None, out) for i, params, _, out in batch_update.added],
            [(a, b, direction == MoveDirectionality.SWAP) for a, b, direction in batch_update.moved],
        )

    def apply(self, logits: Tensor) -> Tensor:
        return self.shift.apply(logits)
