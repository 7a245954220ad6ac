"""Reward adapters: everything the samplers score with goes through `RewardFunction.score`.

A sampler hands each adapter three aligned lists: the prompts, the completions (response only), and the
full decoded texts (query + response, what trl's ``queries_to_scores`` received). Each adapter reads
what it needs:

- `TextReward`: a plain ``list[str] -> list[float]`` callable on the full texts (trl's BestOfNSampler).
- `CompletionReward`: a trl GRPO-style function ``f(prompts, completions, **kwargs) -> list[float | None]``.
- `SequenceClassifierReward`: an ``AutoModelForSequenceClassification`` reward model, ``logits[:, 0]``.
- `VaderSentimentReward`: VADER's compound sentiment of the completion, in [-1, 1] (the embedded default).
"""

from __future__ import annotations

import math
import numbers
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


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


class VaderSentimentReward(RewardFunction):
    """VADER compound sentiment of the completion (``-1`` very negative to ``+1`` very positive).

    The classic trl best-of-n task: steer generation toward positive text. Pure Python, ~50 us a text.
    """

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        return [self.analyzer.polarity_scores(c)["compound"] for c in completions]


class SequenceClassifierReward(RewardFunction):
    """A sequence-classification reward model; the reward is ``logits[:, 0]``.

    When the reward model's tokenizer has a chat template, each (prompt, completion) pair is rendered as a
    user / assistant conversation; otherwise the prompt and completion are joined by ``separator``.

    Args:
        model (`PreTrainedModel`): an ``AutoModelForSequenceClassification``.
        tokenizer (`PreTrainedTokenizerBase`): the reward model's own tokenizer.
        max_length (`int`, *optional*, defaults to 1024): inputs are truncated to this many tokens.
        batch_size (`int`, *optional*, defaults to 16): texts scored per forward pass.
        separator (`str`, *optional*, defaults to `"\\n"`): joins prompt and completion without a template.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, max_length: int = 1024, batch_size: int = 16, separator: str = "\n"
    ):
        if max_length < 1 or batch_size < 1:
            raise ValueError(f"`max_length` and `batch_size` must be >= 1, got {max_length!r} and {batch_size!r}.")
        vocab = getattr(model.config, "vocab_size", None)
        if vocab is not None and len(tokenizer) > vocab:
            raise ValueError(
                f"the reward model's tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                f"{vocab} (`model.config.vocab_size`); pass the tokenizer saved with the reward model."
            )
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "the reward model's tokenizer has no pad token and no eos token; set "
                    "`tokenizer.pad_token` before building `SequenceClassifierReward`."
                )
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size, self.separator = max_length, batch_size, separator

    def _render(self, prompt: str, completion: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return prompt + self.separator + completion

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        rendered = [self._render(p, c) for p, c in zip(prompts, completions, strict=True)]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(rendered), self.batch_size):
            batch = self.tokenizer(
                rendered[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(device)
            logits = self.model(**batch).logits  # (B, num_labels)
            scores.extend(logits[:, 0].float().tolist())
        return scores


def as_reward_function(reward: RewardFunction | Callable[[list[str]], Sequence[float]]) -> RewardFunction:
    """Turns trl's ``queries_to_scores`` callable into a `TextReward`; adapters pass through unchanged."""
    return reward if isinstance(reward, RewardFunction) else TextReward(reward)


def check_rewards(values: Sequence[Any], expected: int, name: str = "reward") -> torch.Tensor:
    """Validates a reward function's output and returns it as a float64 tensor of shape `(expected,)`.

    Non-finite values are kept (they get weight zero in AISP) with a warning; the count and the types are
    checked strictly.

    Raises:
        ValueError: wrong count, or an entry that is not a real number.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().reshape(-1).tolist()
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
