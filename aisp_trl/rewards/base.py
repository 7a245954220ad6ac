"""The reward interface: everything the samplers score with goes through `RewardFunction.score`.

A sampler hands each adapter three aligned lists: the prompts, the completions (response only), and the full decoded
texts (query + response, what trl's ``queries_to_scores`` received). Each adapter reads what it needs:

- `TextReward`: a plain ``list[str] -> list[float]`` callable on the full texts (trl's BestOfNSampler).
- `CompletionReward`: a trl GRPO-style function ``f(prompts, completions, **kwargs) -> list[float | None]``.

The built-in rewards are in `aisp_trl.rewards.builtin`; `aisp_trl.rewards.build_reward` builds any of them by name.
"""

from __future__ import annotations

import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["CompletionReward", "RewardFunction", "TextReward", "as_reward_function", "check_rewards"]


class RewardFunction(ABC):
    """Base class of the reward adapters."""

    @abstractmethod
    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> Sequence[Any]:
        """Scores aligned lists of prompts, completions and full texts; returns one number per item."""

    def __call__(self, prompts: list[str], completions: list[str], texts: list[str]) -> torch.Tensor:
        """Scores and validates: returns a float64 tensor of shape `(len(texts),)`, see `check_rewards`."""
        return check_rewards(self.score(prompts, completions, texts), len(texts), name=self.name)

    @property
    def name(self) -> str:
        return type(self).__name__


class TextReward(RewardFunction):
    """Wraps trl's ``queries_to_scores(list[str]) -> list[float]``, called on the full texts (query included)."""

    def __init__(self, queries_to_scores: Callable[[list[str]], Sequence[float]]):
        if not callable(queries_to_scores):
            raise TypeError(
                f"`queries_to_scores` must be callable, got {type(queries_to_scores).__name__}; pass a "
                "function list[str] -> list[float] or a `RewardFunction`."
            )
        self.fn = queries_to_scores

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> Sequence[Any]:
        return self.fn(texts)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


class CompletionReward(RewardFunction):
    """Wraps a trl GRPO-style reward function ``f(prompts=..., completions=..., **kwargs)``.

    ``None`` entries (trl's "not applicable") become NaN, i.e. weight zero in AISP.

    Args:
        fn (`Callable`): the reward function.
        **kwargs: extra keyword arguments passed on every call (e.g. dataset columns).
    """

    def __init__(self, fn: Callable[..., Sequence[float | None]], **kwargs: Any):
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, got {type(fn).__name__}.")
        self.fn, self.kwargs = fn, kwargs

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> Sequence[Any]:
        values = self.fn(prompts=prompts, completions=completions, **self.kwargs)
        return [math.nan if v is None else v for v in values]

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


def as_reward_function(reward: RewardFunction | Callable[[list[str]], Sequence[float]]) -> RewardFunction:
    """Turns trl's ``queries_to_scores`` callable into a `TextReward`; adapters pass through unchanged."""
    return reward if isinstance(reward, RewardFunction) else TextReward(reward)


def _scalar(value: Any) -> Any:
    """A 0-d tensor or 0-d numpy array as the Python number it holds; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()  # np.float32(0.5) -> 0.5; np.bool_ -> bool (rejected below)
    return value


def check_rewards(values: Sequence[Any], expected: int, name: str = "reward") -> torch.Tensor:
    """Validates a reward function's output and returns it as a float64 tensor of shape `(expected,)`.

    Accepted: a sequence of real numbers (floats, ints, numpy scalars, 0-d tensors or 0-d arrays) or one 1-D tensor
    or array. Non-finite values are kept (they get weight zero in AISP) with a warning; the count and the types are
    checked strictly (bools, strings and None are not numbers).

    Raises:
        ValueError: wrong count, or an entry that is not a real number.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().reshape(-1).tolist()
    elif isinstance(values, list | tuple):
        values = [_scalar(v) for v in values]
    try:
        count = len(values)
    except TypeError:
        raise ValueError(
            f"the reward function `{name}` returned {type(values).__name__}, not a list of numbers; "
            "return one float per text."
        ) from None
    if count != expected:
        raise ValueError(
            f"the reward function `{name}` returned {count} scores for {expected} texts; return one float per text."
        )
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Real)]
    if bad:
        raise ValueError(
            f"the reward function `{name}` returned non-numbers (e.g. {bad[0]!r} of type "
            f"{type(bad[0]).__name__}); return floats."
        )
    rewards = torch.tensor([float(v) for v in values], dtype=torch.float64)
    n_bad = int((~torch.isfinite(rewards)).sum())
    if n_bad:
        warnings.warn(
            f"the reward function `{name}` returned {n_bad} non-finite score(s) (NaN or +-inf) out of "
            f"{expected}; those samples get weight zero.",
            RuntimeWarning,
            stacklevel=3,
        )
    return rewards
