"""`SamplerBase`, what every sampler shares (argument checks, query parsing, decoding, scoring), and `LengthSampler`.

A sampler turns tokenized queries into `SearchResult`s through a `aisp_trl.decoding.Decoder`, so the search loops
never know which engine decodes. A new sampler subclasses `SamplerBase`, implements ``search``, and gets one entry in
`aisp_trl.samplers.registry.METHODS`.
"""

from __future__ import annotations

import copy
import hashlib
import numbers
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from ..decoding import Decoder, HFDecoder
from ..decoding.vllm import VLLMDecoder, is_vllm_engine
from ..hooks import find_output_layer, generation_model, unwrap_model
from ..models import check_device
from ..ops import regularized_scores
from ..rewards.base import RewardFunction, as_reward_function
from ..types import QueryInput, Sample, SearchResult

__all__ = ["LengthSampler", "SamplerBase", "SearchInputs", "make_sample", "query_seed", "record_curves"]


class SearchInputs(NamedTuple):
    """A ``search`` call's inputs after validation: the parsed queries, the prompt texts the reward sees, one horizon
    per query, the device, and the decoding options."""

    queries: list[list[int]]
    prompts: list[str]
    horizons: list[int]
    device: torch.device | None  # where input ids go; None on vLLM
    skip_special_tokens: bool
    generation_kwargs: dict[str, Any]


def query_seed(seed: int, call: int, query: Sequence[int]) -> int:
    """A 63-bit seed for one query's random stream: from the sampler's seed, how many earlier calls drew for this
    query, and its token ids (never its slot in a batch, so batching does not change a query's result)."""
    digest = hashlib.sha256(f"{seed}:{call}:{','.join(map(str, query))}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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


class SamplerBase:
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
            device (`str` or `torch.device`, *optional*): where the input ids go (as in trl; the model must accept them
                there); defaults to the LM head's device. Refused for a vLLM engine.
            **generation_kwargs: passed to ``model.generate``.

        Returns:
            `list[list[str]]`: one inner list of ``n_candidates`` texts per query.
        """
        results = self.search(
            tokenized_query, skip_special_tokens=skip_special_tokens, device=device, **generation_kwargs
        )
        return [[s.text for s in r.top(self.n_candidates)] for r in results]

    def search(
        self,
        tokenized_query: QueryInput,
        prompts: list[str] | None = None,
        skip_special_tokens: bool = True,
        device: str | torch.device | None = None,
        **generation_kwargs: Any,
    ) -> list[SearchResult]:
        """Like `generate`, but returns a `SearchResult` per query: every sample with its reward, the per-iteration
        curves and ESS.

        Args:
            tokenized_query, skip_special_tokens, device, generation_kwargs: see `generate`.
            prompts (`list[str]`, *optional*): the prompt text the reward function sees for each query (e.g. the raw
                user message before the chat template); defaults to the decoded query.

        Returns:
            `list[SearchResult]`: one per query, in query order.
        """
        queries, prompt_texts, horizons, device = self._prepare(tokenized_query, prompts, device)  # checks first
        return self._search(
            SearchInputs(queries, prompt_texts, horizons, device, skip_special_tokens, dict(generation_kwargs))
        )

    def _search(self, inputs: SearchInputs) -> list[SearchResult]:
        """The method itself, on validated inputs: one `SearchResult` per query (``inputs.horizons[i]`` new tokens)."""
        raise NotImplementedError

    # -- inputs ---------------------------------------------------------------------------------------------
    def _prepare(
        self, tokenized_query: QueryInput, prompts: list[str] | None, device: str | torch.device | None
    ) -> tuple[list[list[int]], list[str], list[int], torch.device | None]:
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
        """For each query, how many draws for it came before: earlier ``search`` calls plus its earlier copies in this
        call; counts this call. Enters the per-query random streams, so every call draws fresh samples (trl drew from
        one RNG seeded at construction), a query repeated k times in one call gets k independent draws (the same as k
        calls in a row: GRPO-style group sampling), two samplers with the same seed repeat the same sequence of calls,
        and neither the other queries of a call nor how a run is cut into calls changes a query's result."""
        calls = []
        for query in map(tuple, queries):
            calls.append(self._calls.get(query, 0))
            self._calls[query] = calls[-1] + 1
        return calls

    def _device(self, device: str | torch.device | None) -> torch.device | None:
        """Where the input ids go, as in trl: ``device``, else the LM head's device; ``None`` on vLLM, which places
        its inputs itself (a ``device`` there is refused)."""
        if self.output_layer is None:
            if device is not None:
                raise ValueError(
                    f"`device={device!r}` was given, but the model is a vLLM engine, which places its own inputs; "
                    "drop `device` (choose the GPUs when building the engine, e.g. `load_llm(..., "
                    "tensor_parallel_size=2)`)."
                )
            return None
        if device is None:
            return self.output_layer.weight.device
        check_device(device)
        return torch.device(device)

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

    # the KL-regularised objective (`AISPConfig.kl_coef`); subclasses that support it set these
    kl_coef: float = 0.0
    kl_per_token: bool = False

    def _decode(self, how: str, *args: Any, **kwargs: Any) -> tuple[list[list[int]], list[float] | None]:
        """``decoder.greedy`` / ``decoder.sample`` (``how``), and with ``kl_coef > 0`` each row's base NLL read off
        the same decode (``greedy_with_nll`` / ``sample_with_nll``); ``None`` without ``kl_coef``."""
        if self.kl_coef == 0.0:
            return getattr(self.decoder, how)(*args, **kwargs), None
        return getattr(self.decoder, f"{how}_with_nll")(*args, **kwargs)

    def _objective(
        self, completion_ids: list[list[int]], rewards: Tensor, nll: list[float] | None
    ) -> tuple[Tensor, Tensor | None]:
        """What the search ranks and weights each row by, `(rows,)`: the rewards, or with ``kl_coef > 0`` the
        regularised score ``r - kl_coef * KL`` (`aisp_trl.ops.regularized_scores`), ``KL = -log P_base(y | x)``
        summed over the completion (``nll``, from `_decode`; divided by its length with ``kl_per_token``). Returns
        the objective and the KL estimates (``None`` without ``kl_coef``)."""
        if self.kl_coef == 0.0 or nll is None:
            return rewards, None
        kl = torch.tensor(nll, dtype=torch.float64)
        if self.kl_per_token:
            kl = kl / torch.tensor([max(len(c), 1) for c in completion_ids], dtype=torch.float64)
        return regularized_scores(rewards, kl, self.kl_coef), kl

    def _prompt_texts(self, queries: list[list[int]], prompts: list[str] | None) -> list[str]:
        if prompts is None:
            return [self.tokenizer.decode(q, skip_special_tokens=True) for q in queries]
        if len(prompts) != len(queries):
            raise ValueError(f"`prompts` has {len(prompts)} entries for {len(queries)} queries; pass one per query.")
        return list(prompts)


def record_curves(result: SearchResult, rewards: Tensor, ess: float) -> None:
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


def make_sample(texts, completions, completion_ids, rewards, kl, objective, row: int, iteration: int, index: int):
    """The `Sample` of one row: its reward and, when the search was KL-regularised, its KL estimate and score."""
    extra = {} if kl is None else {"kl": float(kl[row]), "score": float(objective[row])}
    return Sample(texts[row], completions[row], completion_ids[row], float(rewards[row]), iteration, index, **extra)
