"""Small shims over differences between the transformers versions this package supports (5.x)."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def cache_kwarg(model: nn.Module) -> str:
    """The forward's name for the key-value cache: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        parameters = inspect.signature(target.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The key-value cache a forward returned, under either name."""
    return output.get("cache") if "cache" in output else output.get("past_key_values")
