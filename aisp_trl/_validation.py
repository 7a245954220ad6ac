"""Argument checks shared by the configs and samplers: each error names the argument, shows the value, says the fix."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_int", "check_positive", "is_int"]


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int = 1, *, optional: bool = False) -> None:
    """Raises unless ``value`` is an integer ``>= low`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if not is_int(value) or value < low:
        hint = " or None" if optional else ""
        raise ValueError(f"`{name}` must be an integer >= {low}{hint}, got {value!r}.")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raises unless ``value`` is a finite number ``> 0`` (``>= 0`` with ``allow_zero``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}.")
