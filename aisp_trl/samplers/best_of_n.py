"""The best-of-N baselines: `BestOfNSampler` ("BoN (top-p)", trl's sampler) and `GaussianBestOfNSampler` ("BoN (N)")."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from transformers import GenerationConfig

from .._validation import check_positive
from ..config import AISPConfig
from ..rewards.base import RewardFunction
from ..types import SearchResult
from .aisp import AISPSampler
from .base import SamplerBase, SearchInputs, make_sample, query_seed, record_curves

__all__ = ["BestOfNSampler", "GaussianBestOfNSampler"]


class BestOfNSampler(SamplerBase):
    """trl's ``BestOfNSampler`` (removed in trl 0.25): ``sample_size`` sampled decodes, best by reward.

    The baseline "BoN (top-p)": nucleus sampling with the given ``generation_config``, which defaults to
    ``do_sample=True, top_p=0.9, temperature=1.0``. Unlike trl, the seed never touches the global RNG: each
    query's sampling runs under ``torch.random.fork_rng`` seeded from ``seed``, the number of earlier calls that saw
    the query, and its token ids. So each call of `generate` / `search` draws fresh samples (as trl's sampler, seeded
    once at construction, did), two samplers built with the same seed give the same sequence of calls, and a query's
    result depends neither on the other queries of its call nor on how a run was cut into calls.

    Args:
        model, tokenizer, queries_to_scores, length_sampler, sample_size, seed, n_candidates,
        generation_config: as in trl (see `AISPSampler`).
        max_batch_rows (`int`, *optional*): sample at most this many rows per ``generate`` call (GPU memory for a
            large ``sample_size``); one forked RNG stream runs across the slices, so results stay reproducible per
            seed (they differ from an unsliced run, since the slices consume the stream in another order).
        kl_coef (`float`, defaults to 0): with beta > 0 the best sample is the one with the highest ``r - beta * KL``
            (``KL = -log P_base(y | x)``; regularised best-of-N, RBoN's KL variant); each sample records ``kl``
            and ``score``. kl_per_token (`bool`, defaults to False): divide the KL by the answer's length.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: RewardFunction | Callable[[list[str]], Sequence[float]],
        length_sampler: Callable[[], int],
        sample_size: int = 4,
        seed: int | None = None,
        n_candidates: int = 1,
        generation_config: GenerationConfig | None = None,
        *,
        max_batch_rows: int | None = None,
        kl_coef: float = 0.0,
        kl_per_token: bool = False,
    ):
        self.max_batch_rows = max_batch_rows  # read by the decoder the base class builds
        for name, value in (("sample_size", sample_size), ("n_candidates", n_candidates)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if n_candidates > sample_size:
            raise ValueError(
                f"`n_candidates` ({n_candidates}) exceeds `sample_size` ({sample_size}); lower `n_candidates`."
            )
        check_positive("kl_coef", kl_coef, allow_zero=True)
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config)
        self.kl_coef, self.kl_per_token = float(kl_coef), bool(kl_per_token)
        if self.gen_config is None:  # BoN (top-p): the model's settings, with nucleus sampling switched on
            self.gen_config = copy.deepcopy(self.base_generation_config or GenerationConfig())
            self.gen_config.update(do_sample=True, top_p=0.9, top_k=0, temperature=1.0)
        self.sample_size, self.n_candidates = sample_size, n_candidates
        self.seed = seed if seed is not None else secrets.randbits(63)

    def _search(self, inputs: SearchInputs) -> list[SearchResult]:
        """Every sample with its reward, one `SearchResult` per query (a single iteration)."""
        queries, prompt_texts, horizons, device, skip_special_tokens, generation_kwargs = inputs
        calls = self._next_calls(queries)
        results = []
        for query, prompt, tau, call in zip(queries, prompt_texts, horizons, calls, strict=True):
            config = copy.deepcopy(self.gen_config)
            model_kwargs = config.update(**generation_kwargs)  # generation settings go into the config
            config.update(max_new_tokens=tau, num_return_sequences=1)
            self._fill_special_tokens(config)
            # the query's own stream: seed, earlier calls that saw this query, its token ids (not its slot)
            seed = query_seed(self.seed, call, query)
            rows = [query] * self.sample_size
            completion_ids, nll = self._decode(
                "sample", rows, [tau] * self.sample_size, config, seed, device=device, **model_kwargs
            )
            texts, completions, rewards = self._score(
                [query] * self.sample_size, [prompt] * self.sample_size, completion_ids, skip_special_tokens
            )
            objective, kl = self._objective(completion_ids, rewards, nll)  # with kl_coef: RBoN's r - beta * KL
            result = SearchResult(
                prompt=prompt,
                query_ids=query,
                horizon=tau,
                samples=[
                    make_sample(texts, completions, completion_ids, rewards, kl, objective, i, 1, i)
                    for i in range(self.sample_size)
                ],
            )
            record_curves(result, objective, float(self.sample_size))
            results.append(result)
        return results


class GaussianBestOfNSampler(AISPSampler):
    """ "BoN (N)": ``sample_size`` greedy decodes with i.i.d. pre-logit noise ``v_t ~ N(0, sigma2 I)``, best by reward.

    The paper's Theorem 3.3 baseline: AISP with ``n_iterations=1`` and the paper's i.i.d. proposal — the mean stays
    at zero and the importance weights never act. Its samples are those of the first iteration of an `AISPSampler`
    with the same ``seed``, ``sigma2``, ``sample_size`` and ``proposal="iid"``; they differ from the first iteration
    of an `AISPSampler` with the package defaults, whose proposal is AR(1) noise with ``sigma2 = 0.25``.
    ``search`` reports ``ess = N`` (uniform) and ``final_mean = None``, as for `BestOfNSampler`.

    Memory: a prompt's ``N`` decodes run as one batch of ``N`` rows (times ``prompt_batch_size`` prompts) unless
    ``max_batch_rows`` caps it: the noise is still drawn once, so the samples do not change, only how many rows
    ``generate`` sees at a time.

    Args:
        model, tokenizer, queries_to_scores, length_sampler, seed, n_candidates, generation_config: as in
            `AISPSampler` (trl's ``BestOfNSampler`` signature).
        sample_size (`int`, defaults to 4): N, the number of noisy greedy decodes per query.
        sigma2 (`float`, defaults to 0.5): the noise variance (the paper tunes it in [0.1, 1.0]).
        prompt_batch_size (`int`, defaults to 1): queries decoded together (``prompt_batch_size * N`` rows).
        max_batch_rows (`int`, *optional*): decode at most this many rows at a time (same samples).
        show_progress (`bool`, defaults to False): a tqdm bar.

    Example:
        ```python
        >>> bon = GaussianBestOfNSampler(model, tokenizer, queries_to_scores, LengthSampler(16, 17),
        ...                              sample_size=32, sigma2=0.5, seed=0)
        >>> bon.generate(tokenizer("The movie was").input_ids)  # [[best text]]
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: RewardFunction | Callable[[list[str]], Sequence[float]],
        length_sampler: Callable[[], int],
        sample_size: int = 4,
        seed: int | None = None,
        n_candidates: int = 1,
        generation_config: GenerationConfig | None = None,
        *,
        sigma2: float = 0.5,
        prompt_batch_size: int = 1,
        max_batch_rows: int | None = None,
        show_progress: bool = False,
        kl_coef: float = 0.0,
        kl_per_token: bool = False,
    ):
        # one iteration: U^1 = 0 is the only mean used; lam and alpha only shape the (unused) update
        super().__init__(
            model,
            tokenizer,
            queries_to_scores,
            length_sampler,
            sample_size=sample_size,
            seed=seed,
            n_candidates=n_candidates,
            generation_config=generation_config,
            n_iterations=1,
            sigma2=sigma2,
            lam=1.0,
            alpha=1.0,
            proposal="iid",  # the paper's BoN (N): i.i.d. per-step noise, whatever AISP's default proposal is
            sigma_decay=1.0,
            reuse_samples=False,
            prompt_batch_size=prompt_batch_size,
            max_batch_rows=max_batch_rows,
            show_progress=show_progress,
            kl_coef=kl_coef,
            kl_per_token=kl_per_token,
        )

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: Any,
        length_sampler: Any,
        config: AISPConfig,
        **kwargs: Any,
    ) -> GaussianBestOfNSampler:
        """BoN (N) with the budget of an AISP configuration: ``N = sample_size * n_iterations``, same ``sigma2``."""
        return cls(
            model,
            tokenizer,
            queries_to_scores,
            length_sampler,
            sample_size=config.total_samples,
            seed=config.seed,
            n_candidates=config.n_candidates,
            sigma2=config.sigma2,
            prompt_batch_size=config.prompt_batch_size,
            kl_coef=config.kl_coef,
            kl_per_token=config.kl_per_token,
            **kwargs,
        )

    def _search(self, inputs: SearchInputs) -> list[SearchResult]:
        """Every sample with its reward, one `SearchResult` per query (a single iteration); see `AISPSampler.search`."""
        queries, prompt_texts, horizons, device, skip_special_tokens, generation_kwargs = inputs
        results = super()._search(inputs)
        for result in results:
            # best-of-n keeps no weights and no mean: report them as BestOfNSampler does
            result.ess = [float(self.config.sample_size)]
            result.final_mean = None
        return results
