"""Small shims over differences between the transformers versions this package supports (5.x)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def _forward_parameters(model: nn.Module) -> set[str]:
    """The names the forward of ``model`` (of a PEFT model: of its base model) takes; empty if unknown."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(target.forward).parameters)
    except (TypeError, ValueError):
        return set()


def cache_kwarg(model: nn.Module) -> str:
    """The forward's name for the key-value cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def last_logits_kwargs(model: nn.Module, keep: int = 1) -> dict[str, Any]:
    """Forward keyword arguments that make a causal LM compute the logits of the last ``keep`` positions only
    (``logits_to_keep=1``, as ``generate`` does in its prefill), or ``{}`` where its forward does not take them."""
    return {"logits_to_keep": keep} if "logits_to_keep" in _forward_parameters(model) else {}


def output_cache(output: Any) -> Any:
    """The key-value cache a forward returned, under either name."""
    return output.get("cache") if "cache" in output else output.get("past_key_values")
