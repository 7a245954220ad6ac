"""The server's rewards: parsed from ``--reward NAME=SPEC`` and built once, at start-up.

A request names one of these; it never makes the server load a model or call a URL. `build_spec` is the one place
that turns a SPEC into a reward (the package's reward factory, plus ``module:function`` for your own callable).
`PerQueryReward` scores each query's rows in a call of their own, so a model-based reward returns the same numbers
whether a query was searched alone or beside others (its batch shape is then always the query's own).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..rewards import RewardFunction, TextReward
from ..rewards import build_reward as build_named_reward

_NAME = re.compile(r"^[A-Za-z0-9_.\-+]+$")
_CALLABLE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def parse_reward_flags(flags: list[str]) -> dict[str, str]:
    """``["NAME=SPEC", "SPEC", ...]`` -> ``{NAME: SPEC}`` in order (a bare SPEC is its own name).

    Raises:
        ValueError: For an empty name or spec, a name with other characters than letters, digits and ``_.-+``, or a
            name given twice.
    """
    specs: dict[str, str] = {}
    for flag in flags:
        name, _, spec = flag.partition("=") if "=" in flag else (flag, "", flag)
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise ValueError(f"`reward` {flag!r} has an empty name or spec; write NAME=SPEC, e.g. --reward pos=vader.")
        if not _NAME.match(name):
            raise ValueError(
                f"`reward` name {name!r} may only hold letters, digits and '_.-+'; e.g. --reward sentiment=vader."
            )
        if name in specs:
            raise ValueError(f"`reward` name {name!r} is given twice ({specs[name]!r} and {spec!r}); rename one.")
        specs[name] = spec
    return specs


def build_spec(spec: str, device: str | torch.device | None = None, max_length: int = 1024) -> RewardFunction:
    """One reward from its SPEC: ``module:function`` (a ``list[str] -> list[float]`` callable on the full texts, or a
    `RewardFunction` instance), else the package's names (vader, relevance, judge, a reward-model folder, ``a+b``).

    Raises:
        ValueError: If ``module:function`` does not import or is not callable, or the package refuses the spec.
        FileNotFoundError: If a reward-model folder or Hub id cannot be loaded here.
    """
    if _CALLABLE.match(spec) and not Path(spec).exists():
        module_name, _, attr = spec.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as error:
            raise ValueError(
                f"`reward` {spec!r}: cannot import {attr!r} from module {module_name!r} ({error}); check "
                "PYTHONPATH and the name."
            ) from None
        if isinstance(target, RewardFunction):
            return target
        if not callable(target):
            raise ValueError(
                f"`reward` {spec!r} is a {type(target).__name__}, not a callable list[str] -> list[float]."
            )
        return TextReward(target)
    return build_named_reward(spec, device=device, max_length=max_length)


def build_rewards(
    flags: list[str], device: str | torch.device | None = None, max_length: int = 1024
) -> dict[str, RewardFunction]:
    """Every reward of the ``--reward`` flags, by name, built once (the first is the server's default)."""
    return {name: build_spec(spec, device, max_length) for name, spec in parse_reward_flags(flags).items()}


class PerQueryReward(RewardFunction):
    """Scores consecutive groups of ``rows_per_query`` rows in separate calls of ``reward``.

    The samplers lay a batch out query by query (a query's ``sample_size`` rows are consecutive), so each call sees
    exactly the rows the same query would bring alone: a reward model's padding and batch shape, hence its floating-
    point result, do not depend on the other queries of the batch.

    Args:
        reward (`RewardFunction`): the reward to call.
        rows_per_query (`int`): rows of one query in a scoring call (``sample_size``; 1 for greedy).
    """

    def __init__(self, reward: RewardFunction, rows_per_query: int):
        if rows_per_query < 1:
            raise ValueError(f"`rows_per_query` must be >= 1, got {rows_per_query}.")
        self.reward, self.rows_per_query = reward, rows_per_query

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> Sequence[Any]:
        size = self.rows_per_query
        parts = [
            self.reward(prompts[lo : lo + size], completions[lo : lo + size], texts[lo : lo + size])
            for lo in range(0, len(texts), size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    @property
    def name(self) -> str:
        return self.reward.name
