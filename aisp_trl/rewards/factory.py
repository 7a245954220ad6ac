"""`build_reward`: the one parser of reward names, used by the CLI, every recipe, benchmark and the server.

A spec is a built-in name (`REWARD_NAMES`), the folder / Hub id of a sequence-classification reward model, or
several of these joined by ``+`` (their mean). `check_reward_spec` validates a spec without loading anything heavy,
so entry points refuse a bad name before the policy model loads. A new reward is one class in `builtin.py` plus one
entry in `REWARD_NAMES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..models import check_device, check_pretrained_source, hub_offline
from .base import RewardFunction, as_reward_function
from .builtin import (
    JudgeReward,
    MeanReward,
    ReferenceReward,
    RelevanceReward,
    SequenceClassifierReward,
    VaderSentimentReward,
)
from .embedder import SentenceEmbedder

__all__ = ["REWARD_NAMES", "build_reward", "check_reward_spec"]


def _shared(embedder: SentenceEmbedder | Callable[[], SentenceEmbedder] | None) -> SentenceEmbedder | None:
    """The embedder to share: built on first use when given as a callable."""
    return embedder() if callable(embedder) and not isinstance(embedder, SentenceEmbedder) else embedder


REWARD_NAMES: dict[str, tuple[str, Callable[..., RewardFunction]]] = {
    "vader": ("VADER compound sentiment of the response, in [-1, 1]", lambda embedder: VaderSentimentReward()),
    "relevance": ("MiniLM cosine of prompt and response (RelevanceReward)", lambda e: RelevanceReward(_shared(e))),
    "reference": (
        "MiniLM cosine of the response and the prompt's reference answer (the 'fresh' prompts; ReferenceReward)",
        lambda e: ReferenceReward(embedder=_shared(e)),
    ),
    "judge": (
        "log P(Yes) - log P(No) of the embedded SmolLM2 asked if the answer is good",
        lambda e: JudgeReward.embedded(),
    ),
}
"""Built-in reward names -> (what it measures, builder taking the shared ``embedder``); case-insensitive."""


def _parts(spec: Any) -> list[str]:
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"`reward` must be a non-empty string, got {spec!r}; use one of {sorted(REWARD_NAMES)}, a reward-model "
            "folder, or several joined by '+' (e.g. 'vader+relevance')."
        )
    parts = [part.strip() for part in spec.split("+")]
    if any(not part for part in parts):
        raise ValueError(f"`reward` {spec!r} has an empty part around '+'; write e.g. 'vader+relevance'.")
    return parts


def check_reward_spec(spec: str) -> None:
    """Validates a reward spec without loading a model: every part is a built-in name or a reward-model folder / Hub
    id that loads here (in seconds without network, see `aisp_trl.models.check_pretrained_source`).

    Raises:
        ValueError: an empty spec or part.
        FileNotFoundError: a part that is neither a built-in name nor a loadable reward model.
    """
    for part in _parts(spec):
        if part.lower() not in REWARD_NAMES:
            _check_reward_model(part)


def _check_reward_model(name: str) -> dict[str, bool]:
    try:
        return check_pretrained_source(name, "reward")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error} (`reward` also takes {', '.join(repr(n) for n in REWARD_NAMES)}.)") from None


def build_reward(
    spec: str | RewardFunction | Callable[[list[str]], Any],
    device: str | torch.device | None = None,
    max_length: int = 1024,
    *,
    embedder: SentenceEmbedder | Callable[[], SentenceEmbedder] | None = None,
) -> RewardFunction:
    """A reward from its spec.

    Args:
        spec (`str`, `RewardFunction` or `Callable[[list[str]], list[float]]`): ``"vader"``, ``"relevance"``,
            ``"judge"`` (see `REWARD_NAMES`), the folder / Hub id of a sequence-classification reward model, or
            several of these joined by ``+`` (e.g. ``"vader+relevance"``: their mean, `MeanReward`). An adapter or a
            plain callable is returned as a `RewardFunction`.
        device (`str` or `torch.device`, *optional*): where a reward model goes.
        max_length (`int`, defaults to 1024): token limit of a reward model's inputs (paper App. C.3).
        embedder (`SentenceEmbedder` or a callable returning one, *optional*): the embedder of ``relevance`` (share
            it with the coherence metric); defaults to all-MiniLM-L6-v2.

    Returns:
        `RewardFunction`.

    Raises:
        ValueError: an empty spec, a bad device, or a folder that is not a sequence-classification model.
        FileNotFoundError: a part that is neither a built-in name nor a reward model that loads here.
    """
    if not isinstance(spec, str):
        return as_reward_function(spec)
    parts = _parts(spec)
    rewards = []
    for part in parts:
        builtin = REWARD_NAMES.get(part.lower())
        rewards.append(builtin[1](embedder) if builtin else _reward_model(part, device, max_length))
    return rewards[0] if len(rewards) == 1 else MeanReward(rewards, name=spec)


def _reward_model(name: str, device: str | torch.device | None, max_length: int) -> SequenceClassifierReward:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_device(device)
    extra = _check_reward_model(name)
    try:
        with hub_offline(bool(extra)):
            model = AutoModelForSequenceClassification.from_pretrained(name, **extra)
            tokenizer = AutoTokenizer.from_pretrained(name, **extra)
    except OSError as error:
        raise ValueError(
            f"`reward` {name!r} is neither one of {sorted(REWARD_NAMES)} nor a loadable sequence-classification reward "
            f"model ({error}); pass a built-in name or the folder of an AutoModelForSequenceClassification checkpoint."
        ) from error
    if device is not None:
        model.to(device)
    return SequenceClassifierReward(model, tokenizer, max_length=max_length)
