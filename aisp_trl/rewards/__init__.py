"""Rewards: the `RewardFunction` interface and its adapters (`base`), the built-in rewards (`builtin`), the sentence
embedder they share with the metrics (`embedder`), and `build_reward`, the one parser of reward names (`factory`)."""

from .base import CompletionReward, RewardFunction, TextReward, as_reward_function, check_rewards
from .builtin import (
    JudgeReward,
    MeanReward,
    ReferenceReward,
    RelevanceReward,
    SequenceClassifierReward,
    VaderSentimentReward,
)
from .embedder import SentenceEmbedder, default_embedder_path
from .factory import REWARD_NAMES, build_reward, check_reward_spec

__all__ = [
    "REWARD_NAMES",
    "CompletionReward",
    "JudgeReward",
    "MeanReward",
    "ReferenceReward",
    "RelevanceReward",
    "RewardFunction",
    "SentenceEmbedder",
    "SequenceClassifierReward",
    "TextReward",
    "VaderSentimentReward",
    "as_reward_function",
    "build_reward",
    "check_reward_spec",
    "check_rewards",
    "default_embedder_path",
]
