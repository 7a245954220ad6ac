"""aisp-trl: test-time alignment by adaptive importance sampling on pre-logits (AISP) for trl users."""

from .config import AISPConfig
from .hooks import capture_prelogits, find_output_layer, perturb_prelogits
from .rewards import (
    CompletionReward,
    RewardFunction,
    SequenceClassifierReward,
    TextReward,
    VaderSentimentReward,
)
from .sampler import AISPResult, AISPSampler, BestOfNSampler, GreedySampler, LengthSampler, Sample

__version__ = "0.1.0"

__all__ = [
    "AISPConfig",
    "AISPResult",
    "AISPSampler",
    "BestOfNSampler",
    "CompletionReward",
    "GreedySampler",
    "LengthSampler",
    "RewardFunction",
    "Sample",
    "SequenceClassifierReward",
    "TextReward",
    "VaderSentimentReward",
    "capture_prelogits",
    "find_output_layer",
    "perturb_prelogits",
]
