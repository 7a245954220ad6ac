"""The result types every sampler returns, and the query forms they accept. A leaf: imports nothing of aisp_trl.

`Sample` is one decoded response with its reward; `SearchResult` (alias `AISPResult`) is everything one prompt's
search produced. `best_finite_index` is the one rule for "the best sample": the highest finite reward, the first one
on ties (non-finite rewards get weight zero in AISP and never rank as best).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["AISPResult", "QueryInput", "Sample", "SearchResult", "best_finite_index", "rank_finite"]

QueryInput = list[int] | Tensor | list[Tensor] | list[list[int]]
"""What ``generate`` / ``search`` accept, as trl's sampler did: one ``list[int]`` or 1-D tensor, or a list of them."""


def rank_finite(rewards: Sequence[float]) -> list[int]:
    """Indices of ``rewards`` best first: finite rewards by decreasing value (ties keep their order), then the
    non-finite ones (NaN, +inf, -inf) in order."""
    return sorted(range(len(rewards)), key=lambda i: -rewards[i] if math.isfinite(rewards[i]) else math.inf)


def best_finite_index(rewards: Sequence[float]) -> int | None:
    """Index of the highest finite reward, the first one on ties; ``None`` when no reward is finite."""
    order = rank_finite(rewards)
    return order[0] if order and math.isfinite(rewards[order[0]]) else None


@dataclass
class Sample:
    """One decoded sample and its reward."""

    text: str  # decoded query + completion: what trl's queries_to_scores sees
    completion: str
    completion_ids: list[int]
    reward: float
    iteration: int  # 1-based AISP iteration (always 1 for best-of-n)
    index: int  # position within its iteration
    kl: float | None = None  # with kl_coef > 0: -log P_base(completion | query), the point-mass KL estimate
    score: float | None = None  # with kl_coef > 0: reward - kl_coef * kl, what the search ranked and weighted by

    @property
    def objective(self) -> float:
        """What the search ranked this sample by: ``score`` when the search was KL-regularised, else ``reward``."""
        return self.reward if self.score is None else self.score


@dataclass
class SearchResult:
    """Everything one prompt's search produced.

    Attributes:
        prompt: the prompt text handed to the reward function.
        query_ids: the tokenized query.
        horizon: tau, the max new tokens for this prompt.
        samples: all ``n * kappa`` samples in order of generation.
        best: the highest-reward sample (the paper's answer; with ``kl_coef`` the highest score), first one on ties.
        mean_reward, best_reward, best_so_far: per-iteration curves of the paper's Fig. 3 (finite rewards).
        ess: effective sample size of the weights at each iteration (``n`` for best-of-n).
        lam: the temperature used at each iteration (solved per iteration with ``lam="auto"``; ``inf`` when the
            rewards did not vary); empty for best-of-n.
        final_mean: ``U^{kappa+1}`` as the perturbation mean of each step, shape `(horizon, d)`, on CPU (a steering
            vector is repeated at every step, as it acts while decoding; ``None`` for best-of-n). What
            `aisp_trl.evaluation.metrics.decode_with_mean` and the KL metrics take.
        best_perturbation: the per-step perturbation ``V`` that decoded ``best``, shape `(horizon, d)`, on CPU
            (``None`` for best-of-n); with ``final_mean``, the targets an amortized controller learns from.
    """

    prompt: str
    query_ids: list[int]
    horizon: int
    samples: list[Sample]
    mean_reward: list[float] = field(default_factory=list)
    best_reward: list[float] = field(default_factory=list)
    best_so_far: list[float] = field(default_factory=list)
    ess: list[float] = field(default_factory=list)
    lam: list[float] = field(default_factory=list)
    final_mean: Tensor | None = None
    best_perturbation: Tensor | None = None

    @property
    def best(self) -> Sample:
        return self.top(1)[0]

    def top(self, k: int) -> list[Sample]:
        """The ``k`` best samples by `Sample.objective` (the reward, or the KL-regularised score), best first;
        non-finite values (NaN, +inf, -inf: weight zero in AISP) rank last, ties keep order."""
        return [self.samples[i] for i in rank_finite([s.objective for s in self.samples])[:k]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (without ``final_mean`` and ``best_perturbation``; a sample's ``kl`` and
        ``score`` only when the search was KL-regularised)."""
        record = asdict(self)
        record.pop("final_mean")
        record.pop("best_perturbation")
        record["best"] = asdict(self.best)
        for sample in [*record["samples"], record["best"]]:
            for key in ("kl", "score"):
                if sample[key] is None:
                    del sample[key]
        return record


AISPResult = SearchResult
"""The name the package has always used for `SearchResult`."""
