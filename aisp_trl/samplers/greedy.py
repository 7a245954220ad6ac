"""Greedy decoding and the methods that steer one greedy decode through the pre-logit (no search):

- `GreedySampler`: the base model's greedy response with the samplers' API (the reference of every comparison);
- `REControlSampler` (RE-Control, Kong et al., NeurIPS 2024): gradient ascent on a value MLP of the pre-logit before
  each argmax; `collect_value_data` / `train_re_control` sample base-model responses and fit that value model;
- `AmortizedSampler`: AISP amortized into a controller, one greedy decode with ``z_t + scale * f(z_t)``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from .._validation import check_int, check_positive
from ..controllers import (
    PrelogitController,
    REControlConfig,
    ValueMLP,
    attach_prelogit_module,
    gradient_ascent,
    prelogits_along,
    train_value_model,
)
from ..hooks import generation_model
from ..rewards.base import RewardFunction
from ..types import Sample, SearchResult
from .base import LengthSampler, SamplerBase, SearchInputs, record_curves
from .best_of_n import BestOfNSampler

__all__ = ["AmortizedSampler", "GreedySampler", "REControlSampler", "collect_value_data", "train_re_control"]


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
            completion_ids = self.decoder.greedy(rows, [horizons[i] for i in batch], config, device=device, **kwargs)
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


# ------------------------------------------------------------------------------------------------ RE-Control


def collect_value_data(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Callable[[list[str]], Sequence[float]],
    queries: list[list[int]],
    prompts: list[str] | None,
    config: REControlConfig,
) -> dict[str, Tensor]:
    """Samples ``samples_per_prompt`` base-model responses per query, scores them, records their pre-logits.

    Returns:
        `dict` with ``states`` `(M, T, d)` (zero-padded), ``mask`` `(M, T)` (1 on the steps of each response) and
        ``rewards`` `(M,)`, for the ``M = len(queries) * samples_per_prompt`` responses (empty ones dropped).
    """
    base = getattr(generation_model(model), "generation_config", None)
    sampling = copy.deepcopy(base) if base is not None else GenerationConfig()
    sampling.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    horizon = LengthSampler(config.max_new_tokens, config.max_new_tokens + 1)
    sampler = BestOfNSampler(
        model, tokenizer, reward, horizon, config.samples_per_prompt, config.seed, config.samples_per_prompt, sampling
    )
    trajectories, rewards = [], []
    for i, query in enumerate(queries):  # one query at a time: BestOfNSampler decodes one query per call anyway
        result = sampler.search([query], prompts=None if prompts is None else [prompts[i]])[0]
        for sample in result.samples:
            if sample.completion_ids and math.isfinite(sample.reward):
                trajectories.append(prelogits_along(model, query, sample.completion_ids))
                rewards.append(sample.reward)
    if not trajectories:
        raise ValueError("no sampled response had tokens and a finite reward; check the reward and `max_new_tokens`.")
    width, length = trajectories[0].shape[1], max(len(z) for z in trajectories)
    states = torch.zeros(len(trajectories), length, width)
    mask = torch.zeros(len(trajectories), length)
    for m, z in enumerate(trajectories):
        states[m, : len(z)], mask[m, : len(z)] = z, 1.0
    return {"states": states, "mask": mask, "rewards": torch.tensor(rewards, dtype=torch.float32)}


def train_re_control(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Callable[[list[str]], Sequence[float]],
    queries: list[list[int]],
    prompts: list[str] | None,
    config: REControlConfig,
) -> tuple[ValueMLP, dict[str, Any]]:
    """`collect_value_data` then `train_value_model`; the record holds both costs (``collect_seconds``,
    ``train_seconds``), the data size and the settings."""
    start = time.perf_counter()
    data = collect_value_data(model, tokenizer, reward, queries, prompts, config)
    collect_seconds = time.perf_counter() - start
    value, record = train_value_model(data, config)
    return value, {
        **record,
        "collect_seconds": collect_seconds,
        "num_prompts": len(queries),
        "num_trajectories": len(data["rewards"]),
        "num_states": int(data["mask"].sum()),
        "reward_mean": float(data["rewards"].mean()),
        "config": asdict(config),
    }


class REControlSampler(GreedySampler):
    """RE-Control (Kong et al., NeurIPS 2024): greedy decoding steered by gradient ascent on a value function.

    At each generated step the pre-logit ``z_t`` is moved by ``n_steps`` steps ``z <- z + step_size * grad V(z)``
    before the LM head (`aisp_trl.controllers.gradient_ascent`, through `aisp_trl.hooks.transform_prelogits`). ``V``
    is a `aisp_trl.controllers.ValueMLP` trained with `train_re_control` on the pre-logits of
    sampled base-model responses and their rewards. One decode per query and no reward call while decoding (the
    reward only scores the response, as for greedy). ``n_steps=0`` decodes plain greedy.

    Args:
        model, tokenizer, queries_to_scores, length_sampler, generation_config: as in `AISPSampler`.
        value_model (`ValueMLP` or `str` / `os.PathLike`): the value function, or its safetensors file.
        n_steps (`int`, defaults to 30): ascent steps per token (the authors' setting).
        step_size (`float`, defaults to 1.0): the step size (the authors' setting; depends on the value scale).
        seed (`int`, *optional*): accepted for API compatibility; nothing is drawn.
        n_candidates (`int`, defaults to 1): must be 1 (one response per query).
        prompt_batch_size (`int`, defaults to 8): queries decoded together.

    Example:
        ```python
        >>> from aisp_trl.controllers import REControlConfig, train_re_control
        >>> value, info = train_re_control(model, tokenizer, reward, train_queries, None, REControlConfig())
        >>> sampler = REControlSampler(model, tokenizer, reward, LengthSampler(32, 33), value, n_steps=30)
        >>> sampler.generate(tokenizer("The movie was").input_ids)  # [[text]]
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: RewardFunction | Callable[[list[str]], Sequence[float]],
        length_sampler: Callable[[], int],
        value_model: ValueMLP | str | os.PathLike,
        n_steps: int = 30,
        step_size: float = 1.0,
        seed: int | None = None,
        n_candidates: int = 1,
        generation_config: GenerationConfig | None = None,
        *,
        prompt_batch_size: int = 8,
    ):
        check_int("n_steps", n_steps, 0)
        check_positive("step_size", step_size, allow_zero=True)
        if n_candidates != 1:
            raise ValueError(
                f"`n_candidates` must be 1: RE-Control decodes one response per query, got {n_candidates!r}."
            )
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config, prompt_batch_size)
        self.value_model = attach_prelogit_module(self, value_model, ValueMLP, "value", "value_model")
        self.n_steps, self.step_size, self.seed = n_steps, float(step_size), seed

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: Any,
        length_sampler: Any,
        value_model: ValueMLP | str | os.PathLike,
        config: REControlConfig,
        **kwargs: Any,
    ) -> REControlSampler:
        """The sampler with the test-time settings (``n_steps``, ``step_size``) of a `REControlConfig`."""
        return cls(
            model,
            tokenizer,
            queries_to_scores,
            length_sampler,
            value_model,
            n_steps=config.n_steps,
            step_size=config.step_size,
            seed=config.seed,
            **kwargs,
        )

    def _prelogit_transform(self) -> Callable[[Tensor, int], Tensor]:
        def ascend(z: Tensor, t: int) -> Tensor:
            return gradient_ascent(self.value_model, z, self.n_steps, self.step_size)

        return ascend


# ---------------------------------------------------------------------------------------------- amortized AISP


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
