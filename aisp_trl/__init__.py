"""aisp-trl: test-time alignment by adaptive importance sampling on pre-logits (AISP) for trl users."""

from .config import AISPConfig
from .controllers import PrelogitController, ValueMLP
from .decoding import Decoder, HFDecoder
from .evaluation.curves import aggregate_curves, bon_curve, paired_win_rate
from .evaluation.metrics import kl_from_base, stepwise_kl_from_base, token_flip_rate
from .evaluation.text import coherence, distinct_ngram_diversity
from .hooks import capture_prelogits, find_output_layer, perturb_prelogits, transform_prelogits
from .proposals import AR1Proposal, IIDProposal, Proposal, SteeringProposal, make_proposal
from .rewards import (
    CompletionReward,
    JudgeReward,
    MeanReward,
    RelevanceReward,
    RewardFunction,
    SequenceClassifierReward,
    TextReward,
    VaderSentimentReward,
)
from .samplers import (
    AISPSampler,
    AmortizedSampler,
    ARGSSampler,
    BestOfNSampler,
    GaussianBestOfNSampler,
    GreedySampler,
    LengthSampler,
    REControlSampler,
)
from .types import AISPResult, Sample, SearchResult

__version__ = "0.1.0"

__all__ = [
    "ARGSSampler",
    "AmortizedSampler",
    "GaussianBestOfNSampler",
    "PrelogitController",
    "REControlSampler",
    "ValueMLP",
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
    "AR1Proposal",
    "CompletionReward",
    "Decoder",
    "HFDecoder",
    "IIDProposal",
    "JudgeReward",
    "MeanReward",
    "Proposal",
    "RelevanceReward",
    "SteeringProposal",
    "make_proposal",
    "GreedySampler",
    "LengthSampler",
    "RewardFunction",
    "Sample",
    "SearchResult",
    "SequenceClassifierReward",
    "TextReward",
    "VaderSentimentReward",
    "capture_prelogits",
    "find_output_layer",
    "perturb_prelogits",
    "transform_prelogits",
]
