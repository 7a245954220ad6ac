"""`AISPSampler` (Algorithm 1, batched), the `BestOfNSampler` baseline, and `LengthSampler`.

Both samplers mirror trl's removed ``BestOfNSampler``: same constructor, same ``generate``. A trl user
changes one class name. ``search`` returns everything a run saw (see `AISPResult`).
"""

from __future__ import annotations

import copy
import hashlib
import numbers
import random
import secrets
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import GenerationConfig

from .config import AISPConfig
from .decoding import Decoder, HFDecoder, NoiseDraw, PrelogitNoise
from .decoding.vllm import VLLMDecoder, is_vllm_engine
from .hooks import find_output_layer, generation_model, unwrap_model
from .ops import StepInfo, ais_step, amis_step
from .proposals import make_proposal
from .rewards import RewardFunction, as_reward_function

QueryInput = list[int] | Tensor | list[Tensor] | list[list[int]]
_DEFAULTS = AISPConfig()


class LengthSampler:
    """Draws a generation length uniformly from ``[min_value, max_value)`` (trl's ``LengthSampler``).

    Unlike trl's, it owns its random stream (``seed``) and never touches numpy's global RNG.

    Args:
        min_value (`int`): smallest length, >= 1.
        max_value (`int`): one past the largest length, > ``min_value``.
        seed (`int`, *optional*): seed of the stream.
    """

    def __init__(self, min_value: int, max_value: int, seed: int | None = None):
        if not 1 <= min_value < max_value:
            raise ValueError(
                f"`LengthSampler` needs 1 <= min_value < max_value, got min_value={min_value!r}, "
                f"max_value={max_value!r}; for a fixed length L use LengthSampler(L, L + 1)."
            )
        self.values = range(min_value, max_value)
        self.rng = random.Random(seed)

    def __call__(self) -> int:
        return self.rng.choice(self.values)


@dataclass
class Sample:
    """One decoded sample and its reward."""

    text: str  # decoded query + completion: what trl's queries_to_scores sees
    completion: str
    completion_ids: list[int]
    reward: float
    iteration: int  # 1-based AISP iteration (always 1 for best-of-n)
    index: int  # position within its iteration


@dataclass
class AISPResult:
    """Everything one prompt's search produced.

    Attributes:
        prompt: the prompt text handed to the reward function.
        query_ids: the tokenized query.
        horizon: tau, the max new tokens for this prompt.
        samples: all ``n * kappa`` samples in order of generation.
        best: the highest-reward sample (the paper's answer), first one on ties.
        mean_reward, best_reward, best_so_far: per-iteration curves of the paper's Fig. 3 (finite rewards).
        ess: effective sample size of the weights at each iteration (``n`` for best-of-n).
        lam: the temperature used at each iteration (solved per iteration with ``lam="auto"``; ``inf`` when the
            rewards did not vary); empty for best-of-n.
        final_mean: ``U^{kappa+1}``, shape `(horizon, d)` (`(1, d)` for the steering proposal), on CPU (``None``
            for best-of-n).
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
        """The ``k`` highest-reward samples, best first; non-finite rewards (NaN, +inf, -inf: weight zero in AISP)
        rank last, ties keep order."""
        return sorted(self.samples, key=lambda s: -s.reward if abs(s.reward) < float("inf") else float("inf"))[:k]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (without ``final_mean`` and ``best_perturbation``)."""
        record = asdict(self)
        record.pop("final_mean")
        record.pop("best_perturbation")
        record["best"] = asdict(self.best)
        return record


class _SamplerBase:
    """What both samplers share: argument checks, query parsing, left padding, decoding and scoring."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        queries_to_scores: RewardFunction | Callable[[list[str]], Sequence[float]],
        length_sampler: Callable[[], int],
        generation_config: GenerationConfig | None,
    ):
        # the decoding seam: the search loops ask it for completion ids and never call an engine themselves; a
        # vllm.LLM (built by aisp_trl.vllm.load_llm) decodes on vLLM, anything else is a transformers model
        self.decoder: Decoder
        if is_vllm_engine(model):
            self.decoder = VLLMDecoder(model, getattr(self, "max_batch_rows", None))  # checks the engine first
            self.output_layer, self.generator_model = None, None
        else:
            self.output_layer = find_output_layer(model)  # fails early, naming the fix, without an LM head
            self.generator_model = generation_model(model)
        # the id that left-pads the batch; as in trl, a tokenizer without a pad token pads with its eos token. Kept
        # here rather than written into the user's tokenizer (the attention mask hides the padding either way)
        self.pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if self.pad_token_id is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos = eos[0] if isinstance(eos, list | tuple) and eos else eos
            if not isinstance(eos, int):
                raise ValueError(
                    "`tokenizer` has neither a pad token nor an eos token (tokenizer.pad_token and "
                    "tokenizer.eos_token are None); batched generation pads the queries: set one before building "
                    "the sampler, e.g. `tokenizer.add_special_tokens({'pad_token': '<pad>'})` then "
                    "`model.resize_token_embeddings(len(tokenizer))`."
                )
            warnings.warn(
                f"`tokenizer` has no pad token; padding with its eos token {tokenizer.eos_token!r} (id {eos}) as trl "
                "did. Set `tokenizer.pad_token` to silence this warning.",
                UserWarning,
                stacklevel=3,
            )
            self.pad_token_id = eos
        if not callable(length_sampler):
            raise TypeError(
                f"`length_sampler` must be callable and return the max new tokens, got {length_sampler!r}; "
                "use `LengthSampler(min_value, max_value)`."
            )
        self.model, self.tokenizer, self.length_sampler = model, tokenizer, length_sampler
        self.queries_to_scores = queries_to_scores  # trl's attribute: the callable as passed
        self.reward = as_reward_function(queries_to_scores)
        self._calls: dict[tuple[int, ...], int] = {}  # per query: earlier search() calls that saw it
        self.gen_config = generation_config
        if self.output_layer is None:  # vLLM: the engine's model config says it all
            model_config = model.model_config
            self.base_generation_config = _generation_config(model_config.model)
            self.context_length = model_config.max_model_len
            self.vocab_size, self.prelogit_width = model_config.get_vocab_size(), model_config.get_hidden_size()
            return
        self.decoder = HFDecoder(model, self.pad_token_id, getattr(self, "max_batch_rows", None))
        # a value-head wrapper (trl's old AutoModelForCausalLMWithValueHead style) may have neither `config` nor
        # `generation_config`: read both from the model it wraps
        inner = unwrap_model(model)
        self.base_generation_config = getattr(self.generator_model, "generation_config", None) or getattr(
            inner, "generation_config", None
        )
        config = getattr(self.generator_model, "config", None) or getattr(inner, "config", None)
        self.context_length = _context_length(config)
        self.vocab_size, self.prelogit_width = self.output_layer.weight.shape

    n_candidates: int = 1

    def generate(
        self,
        tokenized_query: QueryInput,
        skip_special_tokens: bool = True,
        device: str | torch.device | None = None,
        **generation_kwargs: Any,
    ) -> list[list[str]]:
        """trl's contract: per query, the ``n_candidates`` best decoded texts (query included), best first.

        Args:
            tokenized_query (`list[int]`, 1-D `torch.Tensor`, `list[torch.Tensor]` or `list[list[int]]`):
                one query or several.
            skip_special_tokens (`bool`, defaults to True): passed to the tokenizer's decode.
            device (`str` or `torch.device`, *optional*): where inputs go; defaults to the model's device.
            **generation_kwargs: passed to ``model.generate``.

        Returns:
            `list[list[str]]`: one inner list of ``n_candidates`` texts per query.
        """
        results = self.search(
            tokenized_query, skip_special_tokens=skip_special_tokens, device=device, **generation_kwargs
        )
        return [[s.text for s in r.top(self.n_candidates)] for r in results]

    def search(self, tokenized_query: QueryInput, prompts: list[str] | None = None, **kwargs: Any) -> list[AISPResult]:
        """Every sample with its reward, one `AISPResult` per query; see the subclasses."""
        raise NotImplementedError

    # -- inputs ---------------------------------------------------------------------------------------------
    def _prepare(
        self, tokenized_query: QueryInput, prompts: list[str] | None, device: str | torch.device | None
    ) -> tuple[list[list[int]], list[str], list[int], torch.device]:
        """Validates everything before any model call: queries, prompt texts, one horizon per query (drawn in
        query order, so it does not depend on batching), the context length, and the device."""
        queries = self._parse_queries(tokenized_query)
        prompt_texts = self._prompt_texts(queries, prompts)
        horizons = [self._draw_horizon() for _ in queries]
        self._check_context(queries, horizons)
        return queries, prompt_texts, horizons, self._device(device)

    def _parse_queries(self, tokenized_query: QueryInput) -> list[list[int]]:
        """The four forms trl accepted: list[int], 1-D tensor, list[Tensor], list[list[int]]."""
        if isinstance(tokenized_query, Tensor):
            if tokenized_query.ndim != 1:
                raise ValueError(
                    f"`tokenized_query` as a tensor must be 1-D (one query), got shape "
                    f"{tuple(tokenized_query.shape)}; pass a list of 1-D tensors for several queries."
                )
            queries = [tokenized_query.tolist()]
        elif isinstance(tokenized_query, list) and tokenized_query and _is_int(tokenized_query[0]):
            queries = [tokenized_query]
        elif isinstance(tokenized_query, list) and tokenized_query:
            queries = []
            for query in tokenized_query:
                if isinstance(query, Tensor):
                    queries.append(query.reshape(-1).tolist())
                elif isinstance(query, list | tuple):
                    queries.append(list(query))
                else:
                    raise TypeError(_bad_query_type(query))
        elif isinstance(tokenized_query, list):
            raise ValueError("`tokenized_query` is an empty list; pass at least one tokenized query.")
        else:
            raise TypeError(_bad_query_type(tokenized_query))
        for i, query in enumerate(queries):
            if not query:
                raise ValueError(f"`tokenized_query[{i}]` is empty; every query needs at least one token.")
            if not all(_is_int(t) and 0 <= t < self.vocab_size for t in query):
                raise ValueError(
                    f"`tokenized_query[{i}]` holds values that are not token ids in [0, {self.vocab_size}); "
                    "tokenize with the model's tokenizer."
                )
        return [[int(t) for t in q] for q in queries]

    def _draw_horizon(self) -> int:
        tau = self.length_sampler()  # any integral number: int, numpy integer (trl's LengthSampler), 0-d tensor
        if not _is_int(tau) or tau < 1:
            raise ValueError(
                f"`length_sampler()` returned {tau!r}; it must return a positive integer (max new tokens)."
            )
        return int(tau)

    def _prompt_batches(self, queries: list[list[int]]) -> list[list[int]]:
        """Indices of the queries decoded together: sorted by token length (paper 5.3), then cut into batches of
        ``prompt_batch_size`` (AISP's and greedy's setting; one query at a time for the other samplers)."""
        config = getattr(self, "config", None)
        size = getattr(config, "prompt_batch_size", None) or getattr(self, "prompt_batch_size", None) or 1
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]))
        return [order[start : start + size] for start in range(0, len(order), size)]

    def _check_context(self, queries: list[list[int]], horizons: list[int]) -> None:
        """A batch left-pads to its longest prompt and decodes to its longest horizon: both must fit the context."""
        if self.context_length is None:
            return
        for i, (query, tau) in enumerate(zip(queries, horizons, strict=True)):
            if len(query) + tau > self.context_length:
                raise ValueError(
                    f"`tokenized_query[{i}]` has {len(query)} tokens and {tau} new tokens were requested, "
                    f"beyond the model's context of {self.context_length}; truncate the query or lower the "
                    "`length_sampler` range."
                )
        for batch in self._prompt_batches(queries):
            longest = max(batch, key=lambda i: len(queries[i]))
            widest = max(batch, key=lambda i: horizons[i])
            if len(queries[longest]) + horizons[widest] > self.context_length:
                raise ValueError(
                    f"`tokenized_query[{longest}]` ({len(queries[longest])} tokens) is decoded in one prompt batch "
                    f"with `tokenized_query[{widest}]`, whose horizon is {horizons[widest]} new tokens: every row "
                    f"of the batch runs to {len(queries[longest]) + horizons[widest]} positions, beyond the model's "
                    f"context of {self.context_length}; lower `prompt_batch_size`, truncate the query or lower the "
                    "`length_sampler` range."
                )

    def _next_calls(self, queries: list[list[int]]) -> list[int]:
        """For each query, how many earlier ``search`` calls saw it; counts this call. Enters the per-query random
        streams, so every call draws fresh samples (trl drew from one RNG seeded at construction), two samplers with
        the same seed repeat the same sequence of calls, and neither the other queries of a call nor how a run is cut
        into calls changes a query's result. Duplicates within one call share a stream."""
        calls = [self._calls.get(tuple(q), 0) for q in queries]
        for query in {tuple(q) for q in queries}:
            self._calls[query] = self._calls.get(query, 0) + 1
        return calls

    def _device(self, device: str | torch.device | None) -> torch.device:
        if device is not None:
            return torch.device(device)
        return self.output_layer.weight.device if self.output_layer is not None else torch.device("cpu")

    def _greedy_config(
        self, horizon: int, generation_kwargs: dict[str, Any], perturbed: bool = True
    ) -> GenerationConfig:
        """Greedy decoding as in Algorithm 1 (Appendix B: sampling hurts AISP), ``horizon`` new tokens.

        With ``perturbed`` (decoding under `perturb_prelogits`), settings that run the output layer other than once
        per generated token are refused: the hook counts one call per token."""
        for key in ("max_new_tokens", "num_return_sequences", "num_beams", "max_length"):
            if key in generation_kwargs:
                raise ValueError(
                    f"`{key}` is set by the sampler (the horizon comes from `length_sampler`, one beam, one "
                    f"sequence per row); remove `{key}={generation_kwargs[key]!r}` from the generation kwargs."
                )
        config = copy.deepcopy(self.gen_config or self.base_generation_config or GenerationConfig())
        asked_to_sample = generation_kwargs.pop("do_sample", False) or (self.gen_config and self.gen_config.do_sample)
        if asked_to_sample:  # the model's own default settings are overridden silently
            warnings.warn("AISP decodes greedily (paper, Appendix B); ignoring do_sample=True.", stacklevel=4)
        # generation settings among the kwargs go into the config; what is left (model kwargs) stays in the dict
        model_kwargs = config.update(**generation_kwargs)
        generation_kwargs.clear()
        generation_kwargs.update(model_kwargs)
        if perturbed:
            self._check_one_head_call_per_token(config, model_kwargs)
        config.update(do_sample=False, num_beams=1, num_return_sequences=1, max_new_tokens=horizon)
        config.update(temperature=None, top_p=None, top_k=None, min_p=None)
        self._fill_special_tokens(config)
        return config

    def _fill_special_tokens(self, config: GenerationConfig) -> None:
        """Pad with the sampler's pad id and stop at the tokenizer's eos when the config names neither."""
        if config.pad_token_id is None:
            config.pad_token_id = self.pad_token_id
        if config.eos_token_id is None and getattr(self.tokenizer, "eos_token_id", None) is not None:
            config.eos_token_id = self.tokenizer.eos_token_id

    # generation settings under which the output layer does not run once per generated token on one position
    _MULTI_POSITION_SETTINGS = {
        "prefill_chunk_size": "runs the output layer once per prompt chunk during the prefill",
        "assistant_model": "verifies several drafted tokens in one call of the output layer (assisted decoding)",
        "prompt_lookup_num_tokens": "verifies several drafted tokens in one call of the output layer (prompt lookup)",
        "assistant_early_exit": "drafts tokens with the model's own early layers and output layer (self-speculation)",
        "use_mtp": "drafts tokens with multi-token prediction heads (assisted decoding)",
        "dola_layers": "runs the output layer on several layers per step (DoLa)",
    }

    def _check_one_head_call_per_token(self, config: GenerationConfig, model_kwargs: dict[str, Any]) -> None:
        """Refuses generation settings that change how often the output layer runs per token: the pre-logit hook
        counts one call per generated token, so noise would land on the wrong steps."""
        for name, effect in self._MULTI_POSITION_SETTINGS.items():
            value = model_kwargs.get(name, getattr(config, name, None))
            if value is not None and value is not False:
                shown = repr(value) if isinstance(value, int | float | str) else f"<{type(value).__name__}>"
                raise ValueError(
                    f"`{name}={shown}` {effect}, but the pre-logit noise is added once per generated token, so "
                    f"it would land on the wrong steps; remove `{name}` from the generation kwargs and from the "
                    "`generation_config` (AISP decodes greedily, one token per step)."
                )

    # -- outputs --------------------------------------------------------------------------------------------
    def _eos_ids(self, config: GenerationConfig) -> set[int]:
        eos = config.eos_token_id if config.eos_token_id is not None else self.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())

    def _score(
        self,
        queries: list[list[int]],
        prompts: list[str],
        completion_ids: list[list[int]],
        skip_special_tokens: bool,
    ) -> tuple[list[str], list[str], Tensor]:
        """Decodes and scores aligned rows; returns texts (query + completion), completions and rewards."""
        decode = self.tokenizer.decode
        texts = [
            decode(q + c, skip_special_tokens=skip_special_tokens) for q, c in zip(queries, completion_ids, strict=True)
        ]
        completions = [decode(c, skip_special_tokens=True) for c in completion_ids]
        rewards = self.reward(prompts, completions, texts)
        return texts, completions, rewards

    def _prompt_texts(self, queries: list[list[int]], prompts: list[str] | None) -> list[str]:
        if prompts is None:
            return [self.tokenizer.decode(q, skip_special_tokens=True) for q in queries]
        if len(prompts) != len(queries):
            raise ValueError(f"`prompts` has {len(prompts)} entries for {len(queries)} queries; pass one per query.")
        return list(prompts)


class AISPSampler(_SamplerBase):
    """Adaptive importance sampling on pre-logits (AISP), a drop-in for trl's ``BestOfNSampler``.

    For each query it runs ``n_iterations`` rounds of ``sample_size`` greedy decodes whose pre-logits are
    perturbed by ``v_t ~ N(u_t, sigma2 I)``, scores them, and moves the mean ``U`` by the importance weights
    of Eq. 18. It returns the best of all ``sample_size * n_iterations`` samples.

    Args:
        model (`PreTrainedModel` or `vllm.LLM`): a causal LM: plain, PEFT, accelerate/DDP-wrapped or a value-head
            wrapper; or a vLLM engine built by `aisp_trl.vllm.load_llm` (same samples for the same seed).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer; without a pad token, the eos token pads (a warning).
        queries_to_scores (`Callable[[list[str]], list[float]]` or `RewardFunction`): scores the decoded
            texts (query included), as in trl; or an adapter from `aisp_trl.rewards`.
        length_sampler (`Callable[[], int]`): the horizon tau (max new tokens), drawn once per query.
        sample_size (`int`, defaults to 4): n, samples per iteration.
        seed (`int`, *optional*): seed of the noise; each query gets its own stream derived from the seed and
            its token ids, so results do not depend on batching. The global RNG is never touched.
        n_candidates (`int`, defaults to 1): texts returned per query by `generate`.
        generation_config (`GenerationConfig`, *optional*): base generation settings (forced greedy).
        n_iterations, sigma2, lam, alpha, ess_target, proposal, rho, sigma_decay, reuse_samples,
            prompt_batch_size: see `AISPConfig`. ``lam="auto"`` (default) needs no tuning to the reward's scale.
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
            n_candidates=n_candidates,
            prompt_batch_size=prompt_batch_size,
            seed=seed,
        )
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config)
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
            prompt_batch_size=config.prompt_batch_size,
            **kwargs,
        )

    def search(
        self,
        tokenized_query: QueryInput,
        prompts: list[str] | None = None,
        skip_special_tokens: bool = True,
        device: str | torch.device | None = None,
        **generation_kwargs: Any,
    ) -> list[AISPResult]:
        """Like `generate`, but returns an `AISPResult` per query with every sample, curves and ESS.

        Args:
            prompts (`list[str]`, *optional*): the prompt text the reward function sees for each query
                (e.g. the raw user message before the chat template); defaults to the decoded query.
        """
        queries, prompt_texts, horizons, device = self._prepare(tokenized_query, prompts, device)
        calls = self._next_calls(queries)  # fresh noise for a query seen before; duplicates share a stream
        # Batched AISP: sort by token length so each batch pads little (paper 5.3: 37% -> 8% overhead)
        batches = self._prompt_batches(queries)
        results: list[AISPResult | None] = [None] * len(queries)
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
        digest = hashlib.sha256(f"{self.seed}:{call}:{','.join(map(str, query))}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)

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
    ) -> list[AISPResult]:
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
            AISPResult(prompt=p, query_ids=q, horizon=t, samples=[])
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
                    NoiseDraw(state, u, sigma2, n, tau, proposal.name, getattr(proposal, "rho", 0.0))
                    for state, u, tau in zip(states, means, horizons, strict=True)
                ],
                width,
            )
            # lines 5-16: greedy decoding with z_t <- z_t + v_t for t <= tau (the decoder knows the engine)
            completion_ids = self.decoder.greedy(rows, row_horizons, gen_config, noise, **generation_kwargs)
            # line 17: rewards of every row, in one call
            texts, completions, rewards = self._score(
                rows, [p for p in prompts for _ in range(n)], completion_ids, skip_special_tokens
            )
            for j, result in enumerate(results):
                r = rewards[j * n : (j + 1) * n]
                if not torch.isfinite(r).any():
                    raise ValueError(
                        f"the reward function `{self.reward.name}` returned no finite score for any of the {n} "
                        f"samples of query {j} at iteration {k}; make it return finite floats."
                    )
                result.samples.extend(
                    Sample(texts[j * n + i], completions[j * n + i], completion_ids[j * n + i], float(r[i]), k, i)
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
                _record_curves(result, r, float(step.ess))
                result.lam.append(float(step.lam))
            progress.update(1)
        for result, mean, (_, v_best) in zip(results, means, best, strict=True):
            result.final_mean, result.best_perturbation = mean, v_best
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


class BestOfNSampler(_SamplerBase):
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
    ):
        self.max_batch_rows = max_batch_rows  # read by the decoder the base class builds
        for name, value in (("sample_size", sample_size), ("n_candidates", n_candidates)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        if n_candidates > sample_size:
            raise ValueError(
                f"`n_candidates` ({n_candidates}) exceeds `sample_size` ({sample_size}); lower `n_candidates`."
            )
        super().__init__(model, tokenizer, queries_to_scores, length_sampler, generation_config)
        if self.gen_config is None:  # BoN (top-p): the model's settings, with nucleus sampling switched on
            self.gen_config = copy.deepcopy(self.base_generation_config or GenerationConfig())
            self.gen_config.update(do_sample=True, top_p=0.9, top_k=0, temperature=1.0)
        self.sample_size, self.n_candidates = sample_size, n_candidates
        self.seed = seed if seed is not None else secrets.randbits(63)

    def search(
        self,
        tokenized_query: QueryInput,
        prompts: list[str] | None = None,
        skip_special_tokens: bool = True,
        device: str | torch.device | None = None,
        **generation_kwargs: Any,
    ) -> list[AISPResult]:
        """Every sample with its reward, one `AISPResult` per query (a single iteration)."""
        queries, prompt_texts, horizons, device = self._prepare(tokenized_query, prompts, device)
        calls = self._next_calls(queries)
        results = []
        for query, prompt, tau, call in zip(queries, prompt_texts, horizons, calls, strict=True):
            config = copy.deepcopy(self.gen_config)
            model_kwargs = config.update(**generation_kwargs)  # generation settings go into the config
            config.update(max_new_tokens=tau, num_return_sequences=1)
            self._fill_special_tokens(config)
            # the query's own stream: seed, earlier calls that saw this query, its token ids (not its slot)
            digest = hashlib.sha256(f"{self.seed}:{call}:{','.join(map(str, query))}".encode()).digest()
            seed = int.from_bytes(digest[:8], "little") >> 1
            rows = [query] * self.sample_size
            completion_ids = self.decoder.sample(rows, [tau] * self.sample_size, config, seed, **model_kwargs)
            texts, completions, rewards = self._score(
                [query] * self.sample_size, [prompt] * self.sample_size, completion_ids, skip_special_tokens
            )
            result = AISPResult(
                prompt=prompt,
                query_ids=query,
                horizon=tau,
                samples=[
                    Sample(texts[i], completions[i], completion_ids[i], float(rewards[i]), 1, i)
                    for i in range(self.sample_size)
                ],
            )
            _record_curves(result, rewards, float(self.sample_size))
            results.append(result)
        return results


class GreedySampler(_SamplerBase):
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

    def search(
        self,
        tokenized_query: QueryInput,
        prompts: list[str] | None = None,
        skip_special_tokens: bool = True,
        device: str | torch.device | None = None,
        **generation_kwargs: Any,
    ) -> list[AISPResult]:
        """One greedy sample per query, as an `AISPResult` (a single iteration of one sample)."""
        queries, prompt_texts, horizons, device = self._prepare(tokenized_query, prompts, device)
        results: list[AISPResult | None] = [None] * len(queries)
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
                results[i] = AISPResult(prompt_texts[i], queries[i], horizons[i], [sample])
                _record_curves(results[i], rewards[j : j + 1], 1.0)
        return results  # type: ignore[return-value]

    def _prelogit_transform(self) -> Any:
        """``(z_t, t) -> z_t'`` applied to the pre-logits while decoding, or None (plain greedy). Subclasses that
        steer the decode (`aisp_trl.baselines.REControlSampler`, `aisp_trl.controllers.AmortizedSampler`) return one."""
        return None


def _record_curves(result: AISPResult, rewards: Tensor, ess: float) -> None:
    """Appends one iteration's mean / best / best-so-far (finite rewards only) and ESS (paper Fig. 3)."""
    finite = rewards[torch.isfinite(rewards)]
    mean, best = (float(finite.mean()), float(finite.max())) if len(finite) else (float("nan"), float("nan"))
    previous = result.best_so_far[-1] if result.best_so_far else -float("inf")
    result.mean_reward.append(mean)
    result.best_reward.append(best)
    result.best_so_far.append(max(previous, best) if best == best else previous)
    result.ess.append(ess)


def _generation_config(folder: str) -> GenerationConfig | None:
    """The checkpoint's generation config, or ``None`` where it has none (or it cannot be read offline)."""
    try:
        return GenerationConfig.from_pretrained(folder)
    except (OSError, ValueError):
        return None


def _context_length(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _is_int(value: Any) -> bool:
    """An integral number: an int (not a bool), a numpy integer, or a 0-d integer tensor."""
    if isinstance(value, Tensor):
        return value.ndim == 0 and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _bad_query_type(value: Any) -> str:
    return (
        f"`tokenized_query` must be a list[int], a 1-D torch.Tensor, a list[torch.Tensor] or a list[list[int]], "
        f"got {type(value).__name__}; tokenize the text first, e.g. tokenizer(text).input_ids."
    )
