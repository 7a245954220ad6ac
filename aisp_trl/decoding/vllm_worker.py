"""`LogitShiftProbe`: a vLLM worker extension that measures how the engine's logits move with the pre-logit.

`aisp_trl.vllm.load_llm` builds its engines with ``worker_extension_cls`` set to this class and calls
``llm.collective_rpc("aisp_probe_logit_shift", ...)`` once after the engine starts; the comparison with the processor's
``scale * W v`` is `aisp_trl.decoding.logit_shift.check_logit_shift` (pure, tested without vLLM). This module imports
vLLM only inside the method, in the engine's worker.
"""

from __future__ import annotations

from typing import Any

import torch

from .logit_shift import _pack

__all__ = ["LogitShiftProbe"]


class LogitShiftProbe:
    """Mixed into every vLLM worker (vLLM adds it to the worker's bases: keep to this one method, whose name no
    worker has)."""

    def aisp_probe_logit_shift(self, seed: int, rows: int) -> dict[str, Any] | None:
        """The change of the engine's logits when ``v`` is added to the hidden state entering its output layer.

        Runs the model's own ``compute_logits`` twice on random hidden states `(rows, d)`, the second time with ``v``
        added at the input of vLLM's logits-processor layer (the input of ``W``, where the HF hook adds it), so that
        every factor, soft cap or post-multiplication the model applies after it is in the measured difference.

        Args:
            seed (`int`): seeds the hidden states and ``v`` (the same on every tensor-parallel rank).
            rows (`int`): how many hidden states to probe.

        Returns:
            `dict` or `None`: ``{"delta": (rows, vocab), "perturbation": (rows, d), "architecture": str}`` packed as
            in `aisp_trl.decoding.logit_shift` (float32); ``{"error": str}`` where the model has no single logits
            layer to probe; `None` on a rank that holds no logits (tensor-parallel ranks > 0, pipeline stages before
            the last).
        """
        from vllm.model_executor.layers.logits_processor import LogitsProcessor

        model = self.get_model()
        layers = [module for module in model.modules() if isinstance(module, LogitsProcessor)]
        if not layers:
            return None  # a pipeline stage without the output layer
        if len(layers) > 1:
            return {"error": f"{type(model).__name__} has {len(layers)} logits layers (one expected)"}
        parameter = next(model.parameters())
        width = self.vllm_config.model_config.get_hidden_size()
        generator = torch.Generator().manual_seed(seed)
        hidden = torch.randn(rows, width, generator=generator).to(parameter.device, self.vllm_config.model_config.dtype)
        shift = torch.randn(rows, width, generator=generator).to(hidden.device, hidden.dtype)

        def add_shift(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if len(args) >= 2:  # forward(lm_head, hidden_states, ...)
                return (args[0], args[1] + shift, *args[2:]), kwargs
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + shift}

        with torch.inference_mode():
            base = model.compute_logits(hidden)
            handle = layers[0].register_forward_pre_hook(add_shift, with_kwargs=True)
            try:
                moved = model.compute_logits(hidden)
            finally:
                handle.remove()
        if base is None:  # gathered on tensor-parallel rank 0 only
            return None
        return {
            "delta": _pack((moved.float() - base.float()).cpu()),
            "perturbation": _pack(shift.float().cpu()),
            "architecture": type(model).__name__,
        }
