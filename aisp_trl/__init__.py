"""aisp-trl: test-time alignment by adaptive importance sampling on pre-logits (AISP) for trl users."""

from .baselines import ARGSSampler, GaussianBestOfNSampler
from .config import AISPConfig
from .hooks import capture_prelogits, find_output_layer, perturb_prelogits
from .metrics import (
    aggregate_curves,
    bon_curve,
    coherence,
    distinct_ngram_diversity,
    kl_from_base,
    paired_win_rate,
    stepwise_kl_from_base,
    token_flip_rate,
)
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
    "ARGSSampler",
    "GaussianBestOfNSampler",
    "aggregate_curves",
    "bon_curve",
    "coherence",
    "distinct_ngram_diversity",
    "kl_from_base",
    "paired_win_rate",
    "stepwise_kl_from_base",
    "token_flip_rate",
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
