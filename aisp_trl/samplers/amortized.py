"""`AmortizedSampler`: AISP amortized into a controller: one greedy decode with ``z_t + scale * f(z_t)``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from .._validation import check_positive
from ..controllers import PrelogitController, attach_prelogit_module
from ..rewards.base import RewardFunction
from .greedy import GreedySampler

__all__ = ["AmortizedSampler"]


class AmortizedSampler(GreedySampler):
    """AISP amortized: one greedy decode with ``z_t + scale * f(z_t)``, ``f`` a trained `PrelogitController`.

    No search and no reward call during decoding (the reward only scores the one response, as for greedy).

    Args:
        model, tokenizer, queries_to_scores, length_sampler, generation_config: as in `aisp_trl.AISPSampler`.
        controller (`PrelogitController` or `str` / `os.PathLike`): the controller, or its safetensors file.
        scale (`float`, defaults to 1.0): multiplies ``u_t`` (0 decodes plain greedy).
        seed (`int`, *optional*): accepted for API compatibility; nothing is drawn.
        n_candidates (`int`, defaults to 1): must be 1 (one response per query).
        prompt_batch_size (`int`, defaults to 8): queries decoded together.

    Example:
        ```python
        >>> sampler = AmortizedSampler(model, tokenizer, reward, LengthSampler(32, 33), "controller.safetensors")
        >>> sampler.generate(tokenizer("The movie was").input_ids)  # [[text]]
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: RewardFunction | Callable[[list[str]], Sequence[float]],
        length_sampler: Callable[[], int],
        controller: PrelogitController | str | os.PathLike,
        seed: int | None = None,
        n_candidates: int = 1,
        generation_config: GenerationConfig | None = None,
        *,
        scale: float = 1.0,
        prompt_batch_size: int = 8,
    ):
        if n_candidates != 1:
            raise ValueError(
                f"`n_candidates` must be 1: the amortized controller decodes one response, got {n_candidates!r}."
            )
        check_positive("scale", scale, allow_zero=True)
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config, prompt_batch_size)
        self.controller = attach_prelogit_module(self, controller, PrelogitController, "controller", "controller")
        self.scale, self.seed = float(scale), seed

    def _prelogit_transform(self) -> Callable[[Tensor, int], Tensor]:
        def add_control(z: Tensor, t: int) -> Tensor:
            with torch.no_grad():
                return z + self.scale * self.controller(z).to(z.dtype)

        return add_control
