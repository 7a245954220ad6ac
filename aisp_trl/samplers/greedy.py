"""`GreedySampler`: the base model's greedy response with the samplers' API, and the hook for steered greedy decodes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from transformers import GenerationConfig

from ..rewards.base import RewardFunction
from ..types import Sample, SearchResult
from .base import SamplerBase, SearchInputs, record_curves

__all__ = ["GreedySampler"]


class GreedySampler(SamplerBase):
    """Plain greedy decoding with the samplers' API: the base model's response, scored by the same reward.

    The reference point of every comparison ("greedy" in the CLI, the base model in the recipes' reports).

    Args:
        model, tokenizer, queries_to_scores, length_sampler, generation_config: see `AISPSampler`.
        prompt_batch_size (`int`, defaults to 8): queries decoded together (left padded, sorted by length).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: RewardFunction | Callable[[list[str]], Sequence[float]],
        length_sampler: Callable[[], int],
        generation_config: GenerationConfig | None = None,
        prompt_batch_size: int = 8,
    ):
        if isinstance(prompt_batch_size, bool) or not isinstance(prompt_batch_size, int) or prompt_batch_size < 1:
            raise ValueError(f"`prompt_batch_size` must be an integer >= 1, got {prompt_batch_size!r}.")
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config)
        self.prompt_batch_size = prompt_batch_size

    def _search(self, inputs: SearchInputs) -> list[SearchResult]:
        """One greedy sample per query, as an `SearchResult` (a single iteration of one sample)."""
        queries, prompt_texts, horizons, device, skip_special_tokens, generation_kwargs = inputs
        results: list[SearchResult | None] = [None] * len(queries)
        for batch in self._prompt_batches(queries):  # sorted by length, prompt_batch_size at a time
            kwargs = dict(generation_kwargs)
            transform = self._prelogit_transform()
            config = self._greedy_config(max(horizons[i] for i in batch), kwargs, perturbed=transform is not None)
            rows = [queries[i] for i in batch]
            if transform is not None:  # a controlled greedy decode (RE-Control, an amortized controller)
                kwargs["transform"] = transform
            completion_ids = self.decoder.greedy(rows, [horizons[i] for i in batch], config, **kwargs)
            texts, completions, rewards = self._score(
                [queries[i] for i in batch], [prompt_texts[i] for i in batch], completion_ids, skip_special_tokens
            )
            for j, i in enumerate(batch):
                sample = Sample(texts[j], completions[j], completion_ids[j], float(rewards[j]), 1, 0)
                results[i] = SearchResult(prompt_texts[i], queries[i], horizons[i], [sample])
                record_curves(results[i], rewards[j : j + 1], 1.0)
        return results  # type: ignore[return-value]

    def _prelogit_transform(self) -> Any:
        """``(z_t, t) -> z_t'`` applied to the pre-logits while decoding, or None (plain greedy). Subclasses that
        steer the decode (`aisp_trl.samplers.REControlSampler`, `aisp_trl.samplers.AmortizedSampler`) return one."""
        return None
