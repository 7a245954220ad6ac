"""`ARGSSampler`: ARGS-greedy (Khanov et al., ICLR 2024), reward-guided greedy decoding over the top-k next tokens."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from .._compat import cache_kwarg, output_cache
from ..decoding.base import eos_ids
from ..decoding.vllm import is_vllm_engine
from ..hooks import unwrap_model
from ..rewards.base import RewardFunction
from ..types import Sample, SearchResult
from .base import SamplerBase, SearchInputs

__all__ = ["ARGSSampler", "args_greedy_scores"]


class ARGSSampler(SamplerBase):
    """ARGS-greedy (Khanov et al., 2024): reward-guided greedy decoding over the top-k next tokens.

    At each step ``t`` (up to the horizon from ``length_sampler``, or until EOS) it takes the ``top_k`` tokens with
    the highest logits, scores each extended prefix ``y_<t + token`` with the reward function (the decoded text,
    as the samplers score full responses), and appends the token maximising ``logit + weight * reward``. With
    ``weight = 0`` this is plain greedy decoding. Deterministic; one sample per query. The model runs with its key-
    value cache, one query at a time; ``top_k`` reward calls are made per generated token (in one batched call).

    The logits are the model's raw next-token logits: logits processors from the generation config (repetition
    penalty, bad words, ...) are not applied.

    Args:
        model, tokenizer, queries_to_scores, length_sampler, generation_config: as in `AISPSampler`; the
            generation config only supplies the EOS token(s).
        top_k (`int`, defaults to 32): candidates per step (the paper sets it to 32, AISP's n).
        weight (`float`, defaults to 1.0): ``w``, the weight of the reward (the paper tunes it in 1e-5 .. 1e3,
            depending on the reward's scale).
        seed (`int`, *optional*): accepted for API compatibility; ARGS-greedy draws nothing.
        n_candidates (`int`, defaults to 1): must be 1 (one response per query).
        show_progress (`bool`, defaults to False): a tqdm bar over queries.

    Example:
        ```python
        >>> args = ARGSSampler(model, tokenizer, queries_to_scores, LengthSampler(16, 17), top_k=32, weight=1.0)
        >>> args.generate(tokenizer("The movie was").input_ids)  # [[text]]
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: RewardFunction | Callable[[list[str]], Sequence[float]],
        length_sampler: Callable[[], int],
        top_k: int = 32,
        weight: float = 1.0,
        seed: int | None = None,
        n_candidates: int = 1,
        generation_config: GenerationConfig | None = None,
        *,
        show_progress: bool = False,
    ):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"`top_k` must be an integer >= 1, got {top_k!r}; the paper uses 32.")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError(f"`weight` must be a finite number, got {weight!r}; 0 gives plain greedy decoding.")
        if n_candidates != 1:
            raise ValueError(
                f"`n_candidates` must be 1 for ARGS-greedy, which decodes one response per query; got {n_candidates!r}."
            )
        if is_vllm_engine(model):
            raise TypeError(
                "`model` is a vllm.LLM, but ARGS-greedy scores the top-k tokens with the reward at every step, which "
                "runs on the HF backend only; pass a transformers model (e.g. from "
                "`aisp_trl.models.load_model_and_tokenizer`)."
            )
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config)
        self.top_k, self.weight, self.seed = top_k, float(weight), seed
        self.n_candidates, self.show_progress = 1, show_progress
        self.forward_model = unwrap_model(model)
        self.cache_kwarg = cache_kwarg(self.forward_model)

    def _search(self, inputs: SearchInputs) -> list[SearchResult]:
        """Decodes each query with ARGS-greedy; one `SearchResult` per query holding its single sample."""
        queries, prompt_texts, horizons, device, skip_special_tokens, generation_kwargs = inputs
        if generation_kwargs:
            raise ValueError(
                f"`ARGSSampler` runs its own decoding loop and takes no generation kwargs, got "
                f"{sorted(generation_kwargs)}; remove them (the horizon comes from `length_sampler`)."
            )
        from tqdm.auto import tqdm

        # a value-head wrapper may lack generation_config: fall back to the unwrapped model's
        config = self.gen_config or getattr(self.generator_model, "generation_config", None)
        eos = eos_ids(config or self.forward_model.generation_config, self.tokenizer.eos_token_id)
        results = []
        for query, prompt, tau in tqdm(
            list(zip(queries, prompt_texts, horizons, strict=True)), desc="ARGS", disable=not self.show_progress
        ):
            completion = self._decode(query, prompt, tau, eos, device, skip_special_tokens)
            texts, completions, rewards = self._score([query], [prompt], [completion], skip_special_tokens)
            reward = float(rewards[0])
            results.append(
                SearchResult(
                    prompt=prompt,
                    query_ids=query,
                    horizon=tau,
                    samples=[Sample(texts[0], completions[0], completion, reward, 1, 0)],
                    mean_reward=[reward],
                    best_reward=[reward],
                    best_so_far=[reward],
                    ess=[1.0],
                )
            )
        return results

    @torch.no_grad()
    def _decode(
        self, query: list[int], prompt: str, horizon: int, eos: set[int], device: torch.device, skip_special: bool
    ) -> list[int]:
        """The ARGS-greedy loop for one query; returns the completion ids (EOS kept, at most ``horizon``)."""
        input_ids = torch.tensor([query], dtype=torch.long, device=device)  # (1, L_q) prefill, then (1, 1)
        cache: Any = None
        completion: list[int] = []
        while len(completion) < horizon:
            logits, cache = self._next_logits(input_ids, cache, len(query) + len(completion))
            token = self._choose(logits, query, prompt, completion, skip_special)
            completion.append(token)
            if token in eos:
                break
            input_ids = torch.tensor([[token]], dtype=torch.long, device=device)
        return completion

    def _next_logits(self, input_ids: Tensor, cache: Any, length: int) -> tuple[Tensor, Any]:
        """One forward step with the key-value cache; returns the last position's logits `(V,)` and the cache."""
        attention_mask = torch.ones((1, length), dtype=torch.long, device=input_ids.device)
        kwargs: dict[str, Any] = {"use_cache": True}
        if cache is not None:
            kwargs[self.cache_kwarg] = cache
        output = self.forward_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_cache = output_cache(output)
        return output.logits[0, -1].float(), new_cache

    def _choose(self, logits: Tensor, query: list[int], prompt: str, completion: list[int], skip_special: bool) -> int:
        """``argmax`` over the top-k tokens of ``logit + weight * reward``; plain argmax when ``weight == 0``."""
        if self.weight == 0.0:
            return int(logits.argmax())
        k = min(self.top_k, logits.shape[-1])
        top_logits, top_tokens = torch.topk(logits, k)  # (k,), (k,)
        candidates = [completion + [int(t)] for t in top_tokens]
        _, _, rewards = self._score([query] * k, [prompt] * k, candidates, skip_special)
        scores = args_greedy_scores(top_logits.double().cpu(), rewards, self.weight)
        if not torch.isfinite(scores).any():
            raise ValueError(
                f"the reward function `{self.reward.name}` returned no finite score for any of the {k} candidate "
                "tokens; make it return finite floats."
            )
        return int(top_tokens[int(_first_argmax(scores))])


def args_greedy_scores(logits: Tensor, rewards: Tensor, weight: float) -> Tensor:
    """ARGS's score of each candidate token: ``logit + weight * reward``; non-finite rewards score ``-inf``.

    Args:
        logits (`torch.Tensor` of shape `(k,)`): the candidates' next-token logits.
        rewards (`torch.Tensor` of shape `(k,)`): the reward of the prefix extended by each candidate.
        weight (`float`): ``w``.

    Returns:
        `torch.Tensor` of shape `(k,)`, float64.
    """
    logits, rewards = logits.to(torch.float64), rewards.to(torch.float64)
    scores = logits + weight * rewards
    return torch.where(torch.isfinite(rewards), scores, torch.full_like(scores, -torch.inf))


def _first_argmax(values: Tensor) -> int:
    """Index of the first maximum (ties go to the earlier, i.e. higher-logit, candidate)."""
    return int((values == values.max()).nonzero()[0, 0])
