"""The samplers: one method per module, all with trl's ``BestOfNSampler`` API (``generate``) plus ``search``.

- `base`: `SamplerBase` (checks, query parsing, decoding, scoring) and `LengthSampler`;
- `aisp`: `AISPSampler` (Algorithm 1, batched); `best_of_n`: `BestOfNSampler` (top-p), `GaussianBestOfNSampler`
  (BoN (N)); `greedy`: `GreedySampler` and the steered greedy decodes, `REControlSampler` (with its value training)
  and `AmortizedSampler`; `args`: `ARGSSampler`;
- `registry`: `METHODS`, the one table from a method name to its label and builder.
"""

from .aisp import AISPSampler
from .args import ARGSSampler, args_greedy_scores
from .base import LengthSampler, SamplerBase
from .best_of_n import BestOfNSampler, GaussianBestOfNSampler
from .greedy import AmortizedSampler, GreedySampler, REControlSampler, collect_value_data, train_re_control

__all__ = [
    "AISPSampler",
    "ARGSSampler",
    "AmortizedSampler",
    "BestOfNSampler",
    "GaussianBestOfNSampler",
    "GreedySampler",
    "LengthSampler",
    "REControlSampler",
    "SamplerBase",
    "args_greedy_scores",
    "collect_value_data",
    "train_re_control",
]
