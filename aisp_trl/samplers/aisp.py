"""`AISPSampler`: Algorithm 1 of the paper, batched over prompts (Batched AISP, section 3.5)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import GenerationConfig

from ..config import AISPConfig
from ..decoding import NoiseDraw, PrelogitNoise
from ..ops import StepInfo, ais_step, amis_step
from ..proposals import make_proposal
from ..rewards.base import RewardFunction
from ..types import SearchResult
from .base import SamplerBase, SearchInputs, make_sample, query_seed, record_curves

__all__ = ["AISPSampler"]

_DEFAULTS = AISPConfig()


class AISPSampler(SamplerBase):
    """Adaptive importance sampling on pre-logits (AISP), a drop-in for trl's ``BestOfNSampler``.

    For each query it runs ``n_iterations`` rounds of ``sample_size`` greedy decodes whose pre-logits are
    perturbed by ``V ~ N(U, sigma2 L L^T)`` (``proposal``: by default AR(1) noise, correlated over steps by ``rho``,
    unit marginal variance; ``"iid"`` is the paper's ``v_t ~ N(u_t, sigma2 I)``), scores them, and moves the mean
    ``U`` by the importance weights of Eq. 18, ``r / lam - (1 - alpha) / sigma2 * <L^{-1} U, L^{-1} V>`` (the paper's
    ``sum_t <u_t, v_t>`` for i.i.d. noise). It returns the best of all ``sample_size * n_iterations`` samples.

    Args:
        model (`PreTrainedModel` or `vllm.LLM`): a causal LM: plain, PEFT, accelerate/DDP-wrapped or a value-head
            wrapper; or a vLLM engine built by `aisp_trl.vllm.load_llm` (same samples for the same seed).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer; without a pad token, the eos token pads (a warning).
        queries_to_scores (`Callable[[list[str]], list[float]]` or `RewardFunction`): scores the decoded
            texts (query included), as in trl; or an adapter from `aisp_trl.rewards`.
        length_sampler (`Callable[[], int]`): the horizon tau (max new tokens), drawn once per query.
        sample_size (`int`, defaults to 4): n, samples per iteration (trl's ``BestOfNSampler`` default; `AISPConfig`,
            the CLI's and the recipes' settings, defaults to 8).
        seed (`int`, *optional*): seed of the noise; each query gets its own stream derived from the seed and
            its token ids, so results do not depend on batching. The global RNG is never touched.
        n_candidates (`int`, defaults to 1): texts returned per query by `generate`.
        generation_config (`GenerationConfig`, *optional*): base generation settings (forced greedy).
        n_iterations, sigma2, lam, alpha, ess_target, proposal, rho, sigma_decay, reuse_samples, kl_coef,
            kl_per_token, prompt_batch_size: see `AISPConfig`. With ``kl_coef > 0`` the search weights and ranks
            by ``r - kl_coef * KL`` (each sample records ``kl`` and ``score``). ``lam="auto"`` (default) needs no
            tuning to the reward's scale.
        max_batch_rows (`int`, *optional*): decode the ``prompt_batch_size * sample_size`` rows of an iteration in
            slices of at most this many (GPU memory); the noise is drawn once per iteration, so the samples are the
            same as in one batch (up to floating-point noise). ``None`` decodes all rows at once.
        show_progress (`bool`, defaults to False): a tqdm bar over iterations.

    Each call of `generate` / `search` on a query this sampler has seen before draws fresh noise (how many earlier
    calls saw that query enters its noise stream, as trl's sampler drew from its RNG on every call); two samplers
    built with the same seed give the same sequence of calls. Because the count is per query, a query's result
    depends neither on the other queries of its call nor on how a run was cut into calls (resumable pipelines).

    Example:
        ```python
        >>> sampler = AISPSampler(model, tokenizer, queries_to_scores, LengthSampler(16, 17),
        ...                       sample_size=8, n_iterations=4, seed=0)
        >>> sampler.generate(tokenizer("The movie was").input_ids)  # [[best text]]
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
        n_iterations: int = _DEFAULTS.n_iterations,
        sigma2: float = _DEFAULTS.sigma2,
        lam: float | str = _DEFAULTS.lam,
        alpha: float = _DEFAULTS.alpha,
        ess_target: float = _DEFAULTS.ess_target,
        proposal: str = _DEFAULTS.proposal,
        rho: float = _DEFAULTS.rho,
        sigma_decay: float = _DEFAULTS.sigma_decay,
        reuse_samples: bool = _DEFAULTS.reuse_samples,
        kl_coef: float = _DEFAULTS.kl_coef,
        kl_per_token: bool = _DEFAULTS.kl_per_token,
        prompt_batch_size: int = 1,
        max_batch_rows: int | None = None,
        show_progress: bool = False,
    ):
        self.max_batch_rows = max_batch_rows  # validated by the decoder the base class builds
        self.config = AISPConfig(
            sample_size=sample_size,
            n_iterations=n_iterations,
            sigma2=sigma2,
            lam=lam,
            alpha=alpha,
            ess_target=ess_target,
            proposal=proposal,
            rho=rho,
            sigma_decay=sigma_decay,
            reuse_samples=reuse_samples,
            kl_coef=kl_coef,
            kl_per_token=kl_per_token,
            n_candidates=n_candidates,
            prompt_batch_size=prompt_batch_size,
            seed=seed,
        )
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config)
        self.kl_coef, self.kl_per_token = self.config.kl_coef, self.config.kl_per_token
        self.proposal = make_proposal(self.config.proposal, self.config.rho)
        self.seed = seed if seed is not None else secrets.randbits(63)
        self.sample_size, self.n_candidates, self.show_progress = sample_size, n_candidates, show_progress

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: Any,
        length_sampler: Any,
        config: AISPConfig,
        **kwargs: Any,
    ) -> AISPSampler:
        """Builds a sampler from an `AISPConfig` (e.g. parsed from a YAML file)."""
        return cls(
            model,
            tokenizer,
            queries_to_scores,
            length_sampler,
            sample_size=config.sample_size,
            seed=config.seed,
            n_candidates=config.n_candidates,
            n_iterations=config.n_iterations,
            sigma2=config.sigma2,
            lam=config.lam,
            alpha=config.alpha,
            ess_target=config.ess_target,
            proposal=config.proposal,
            rho=config.rho,
            sigma_decay=config.sigma_decay,
            reuse_samples=config.reuse_samples,
            kl_coef=config.kl_coef,
            kl_per_token=config.kl_per_token,
            prompt_batch_size=config.prompt_batch_size,
            **kwargs,
        )

    def _search(self, inputs: SearchInputs) -> list[SearchResult]:
        """Like `generate`, but returns an `SearchResult` per query with every sample, curves and ESS."""
        queries, prompt_texts, horizons, device, skip_special_tokens, generation_kwargs = inputs
        calls = self._next_calls(queries)  # fresh noise for a query seen before, and for each copy of one
        # Batched AISP: sort by token length so each batch pads little (paper 5.3: 37% -> 8% overhead)
        batches = self._prompt_batches(queries)
        results: list[SearchResult | None] = [None] * len(queries)
        with tqdm(
            total=len(batches) * self.config.n_iterations, desc="AISP", disable=not self.show_progress, unit="it"
        ) as progress:
            for batch in batches:
                batch_results = self._search_batch(
                    [calls[i] for i in batch],
                    [queries[i] for i in batch],
                    [prompt_texts[i] for i in batch],
                    [horizons[i] for i in batch],
                    device,
                    skip_special_tokens,
                    generation_kwargs,
                    progress,
                )
                for i, result in zip(batch, batch_results, strict=True):
                    results[i] = result
        return results  # type: ignore[return-value]

    def _noise_generator(self, query: list[int], call: int = 0) -> torch.Generator:
        """A noise stream per query and call: from the seed, how many earlier calls saw this query, and the query's
        token ids (not its slot in the batch, so batching does not change a query's result)."""
        return torch.Generator().manual_seed(query_seed(self.seed, call, query))

    def _search_batch(
        self,
        calls: list[int],
        queries: list[list[int]],
        prompts: list[str],
        horizons: list[int],
        device: torch.device,
        skip_special_tokens: bool,
        generation_kwargs: dict[str, Any],
        progress: tqdm,
    ) -> list[SearchResult]:
        """Algorithm 1 for ``b`` prompts at once: ``b * n`` rows, a mean ``U`` and weights per prompt."""
        cfg, n = self.config, self.config.sample_size
        width = self.prelogit_width
        tau_max = max(horizons)
        generation_kwargs = dict(generation_kwargs)  # _greedy_config moves generation settings into the config
        gen_config = self._greedy_config(tau_max, generation_kwargs)
        rows = [q for q in queries for _ in range(n)]  # prompt j owns rows j*n .. j*n + n - 1
        row_horizons = [tau for tau in horizons for _ in range(n)]
        generators = [self._noise_generator(q, c) for q, c in zip(queries, calls, strict=True)]
        proposal = self.proposal
        # U^1 = 0: shape (tau_j, d), or (1, d) for a steering vector; on CPU
        means = [torch.zeros(proposal.mean_shape(tau, width)) for tau in horizons]
        history: list[list[tuple[Tensor, float, Tensor, Tensor]]] = [[] for _ in queries]  # for reuse_samples
        best = [(-float("inf"), None)] * len(queries)  # per prompt: best finite reward so far and its V (tau, d)
        results = [
            SearchResult(prompt=p, query_ids=q, horizon=t, samples=[])
            for p, q, t in zip(prompts, queries, horizons, strict=True)
        ]

        for k in range(1, cfg.n_iterations + 1):
            sigma2 = cfg.sigma2 * cfg.sigma_decay ** (k - 1)  # the optional schedule; fixed in the paper
            # line 4: V^{i,k} ~ q(. | U^k, sigma^2), one (n, T, d) draw per prompt from its own stream; the decoder
            # gets the recipe (generator state before the draw, mean, sigma2), so an engine in another process
            # redraws the same numbers instead of receiving n * tau * d floats per prompt
            states = [g.get_state() for g in generators]
            samples = [proposal.draw(u, sigma2, n, g) for u, g in zip(means, generators, strict=True)]
            noise = PrelogitNoise(
                [
                    NoiseDraw(state, u, sigma2, n, tau, proposal, drawn=v)  # drawn once, here
                    for state, u, tau, v in zip(states, means, horizons, samples, strict=True)
                ],
                width,
            )
            # lines 5-16: greedy decoding with z_t <- z_t + v_t for t <= tau (the decoder knows the engine)
            # (with kl_coef, each row's base NLL read off the same decode: the unperturbed z_t it computed)
            completion_ids, nll = self._decode(
                "greedy", rows, row_horizons, gen_config, noise, device=device, **generation_kwargs
            )
            # line 17: rewards of every row, in one call
            texts, completions, rewards = self._score(
                rows, [p for p in prompts for _ in range(n)], completion_ids, skip_special_tokens
            )
            # what the weights and the best use: the reward, or r - beta * KL with kl_coef (the KL-constrained goal)
            objective, kl = self._objective(completion_ids, rewards, nll)
            for j, result in enumerate(results):
                r = objective[j * n : (j + 1) * n]
                if not torch.isfinite(r).any():
                    raise ValueError(
                        f"the reward function `{self.reward.name}` returned no finite score for any of the {n} "
                        f"samples of query {j} at iteration {k}; make it return finite floats."
                    )
                result.samples.extend(
                    make_sample(texts, completions, completion_ids, rewards, kl, objective, j * n + i, k, i)
                    for i in range(n)
                )
                # lines 18-20: the best so far, with the V that decoded it (strictly better: first one on ties)
                finite = torch.where(torch.isfinite(r), r, torch.full_like(r, -float("inf")))
                i_best = int(finite.argmax())
                if float(finite[i_best]) > best[j][0]:
                    best[j] = (
                        float(finite[i_best]),
                        proposal.to_steps(samples[j][i_best : i_best + 1], horizons[j])[0],
                    )
                # lines 22-23: weights of Eq. 18, then U^{k+1} = sum_i w^i V^i
                step = self._update(means[j], sigma2, samples[j], r, history[j])
                means[j] = step.mean
                record_curves(result, r, float(step.ess))
                result.lam.append(float(step.lam))
            progress.update(1)
        for result, mean, (_, v_best) in zip(results, means, best, strict=True):
            # per step, like best_perturbation: a steering mean (1, d) acts at each of the horizon steps
            result.final_mean = self.proposal.to_steps(mean[None], result.horizon)[0].contiguous()
            result.best_perturbation = v_best
        return results

    def _update(self, mean: Tensor, sigma2: float, samples: Tensor, rewards: Tensor, history: list[tuple]) -> StepInfo:
        """The mean update of one prompt: Eq. 18 on this iteration's samples, or on every sample so far (AMIS)."""
        cfg = self.config
        if not cfg.reuse_samples:
            return ais_step(
                mean,
                samples,
                rewards,
                lam=cfg.lam,
                alpha=cfg.alpha,
                sigma2=sigma2,
                proposal=self.proposal,
                ess_target=cfg.ess_target,
            )
        history.append((mean, sigma2, samples, rewards))
        means, sigma2s, pooled, pooled_rewards = zip(*history, strict=True)
        return amis_step(
            torch.stack(means),
            torch.tensor(sigma2s, dtype=torch.float64),
            torch.stack(pooled),
            torch.stack(pooled_rewards),
            lam=cfg.lam,
            alpha=cfg.alpha,
            proposal=self.proposal,
            ess_target=cfg.ess_target,
        )
