"""`Engine`: the thread that owns the model, and the batcher in front of it.

Requests go into a bounded queue (`Engine.submit`, thread-safe; `QueueFull` when full). One worker thread takes the
oldest request, waits up to ``batch_wait`` for more with the same `SearchSpec` (method, reward, seed, budget,
horizon, settings), and searches them together in one ``sampler.search(queries, prompts=...)`` call of a sampler
built for that batch (Batched AISP: ``prompt_batch_size`` = the batch's distinct queries). The event loop only
waits on a `concurrent.futures.Future` per request; decoding never runs on it.

Why a request's answer is the same alone or in a batch:

- a fresh sampler per batch: the per-query call counts that enter the noise streams start at zero, so a query's
  noise is a function of the seed and its token ids only (`aisp_trl.samplers`);
- identical queries of a batch are searched once and share the result;
- rewards are scored query by query (`PerQueryReward`), so a reward model sees the same batch as alone;
- the tie check (`TieGuardDecoder`): the decode of a batch runs matrix products of other shapes than alone, which
  moves logits by ~1e-4 (float32); a query whose decode came within ``tie_margin`` of an argmax tie is searched
  again alone and answered from that run.

A request cancelled while queued (client gone, timeout) leaves the queue at once; a batch whose requests were all
cancelled stops before its next decode call.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..hooks import find_output_layer
from ..rewards import RewardFunction
from .guard import SearchAbandoned, StoppableDecoder, TieGuardDecoder
from .methods import build_sampler, rows_per_query
from .protocol import SearchSpec
from .responses import Answer
from .rewards import PerQueryReward

logger = logging.getLogger(__name__)

_SEED_BITS = 63


class QueueFull(Exception):
    """`Engine.submit` when ``max_queue_size`` requests are already waiting."""


class EngineClosed(Exception):
    """`Engine.submit` after `Engine.close` (the server is shutting down)."""


@dataclass(eq=False)
class Job:
    """One request in the engine: what to search, and its future (an `Answer`)."""

    spec: SearchSpec
    query: tuple[int, ...]
    prompt: str
    enqueued: float = field(default_factory=time.monotonic)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    id: int = 0
    state: str = "queued"  # queued -> running -> done | dropped
    abandoned: bool = False  # cancelled while its batch ran: the batch stops if all of its requests are
    decodes: int = 0  # decode calls of its search so far (progress)
    batch_size: int = 0
    started: float | None = None


class Engine:
    """Owns the model, the tokenizer and the rewards; searches queued requests in batches on one worker thread.

    Args:
        model: a causal LM (or a ``vllm.LLM``), loaded once.
        tokenizer: its tokenizer.
        rewards (`dict[str, RewardFunction]`): the start-up rewards, by name.
        max_queue_size (`int`, defaults to 64): requests waiting at most; `submit` raises `QueueFull` beyond.
        max_batch_size (`int`, defaults to 8): requests searched together at most.
        batch_wait (`float`, defaults to 0.01): seconds the oldest request waits for company.
        tie_margin (`float`, defaults to 5e-4): the tie check's logit margin (0: off); see `TieGuardDecoder`.
        use_vllm (`bool`, defaults to False): ``model`` is a ``vllm.LLM`` (`aisp_trl.vllm.load_llm`); the tie check
            needs the HF model's logits and is off then.

    Example:
        ```python
        >>> engine = Engine(model, tokenizer, {"vader": VaderSentimentReward()}).start()
        >>> job = engine.submit(SearchSpec("aisp", "vader", 16, 4, 2, seed=0), query_ids, "Hi")
        >>> answer = job.future.result()  # an Answer: the AISPResult and how it was run
        >>> engine.close()
        ```
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        rewards: dict[str, RewardFunction],
        *,
        max_queue_size: int = 64,
        max_batch_size: int = 8,
        batch_wait: float = 0.01,
        tie_margin: float = 5e-4,
        use_vllm: bool = False,
    ):
        if not rewards:
            raise ValueError("`rewards` is empty; the engine needs at least one reward.")
        self.model, self.tokenizer, self.rewards = model, tokenizer, rewards
        self.max_queue_size, self.max_batch_size = max_queue_size, max_batch_size
        self.batch_wait, self.tie_margin = batch_wait, tie_margin
        self.use_vllm = use_vllm
        self.output_layer = None if use_vllm else find_output_layer(model)
        if use_vllm and tie_margin > 0:
            logger.warning(
                "the tie check is off with vLLM (its logits are not visible here): batched answers equal alone ones "
                "up to floating-point ties."
            )
        self.context_length, self.vocab_size = _context_and_vocab(model, self.output_layer)
        self.eos_token_ids = _eos_ids(model, tokenizer)
        self._pending: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self.counters = dict.fromkeys(
            ("submitted", "completed", "failed", "dropped", "abandoned", "batches", "batched_queries", "reruns_alone"),
            0,
        )

    # -- the request side (any thread) --------------------------------------------------------------------------
    def start(self) -> Engine:
        """Starts the worker thread (once); returns the engine."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="aisp-engine", daemon=True)
            self._thread.start()
        return self

    def submit(self, spec: SearchSpec, query: list[int], prompt: str) -> Job:
        """Queues one query; its `Job.future` resolves to an `Answer` (or raises what the search raised).

        Raises:
            QueueFull: ``max_queue_size`` requests are waiting.
            EngineClosed: the engine is shutting down.
        """
        if spec.reward not in self.rewards:
            raise ValueError(f"`reward` {spec.reward!r} is not one of {list(self.rewards)}.")
        with self._cond:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            if len(self._pending) >= self.max_queue_size:
                raise QueueFull(f"{len(self._pending)} requests are waiting (--max_queue_size {self.max_queue_size})")
            job = Job(spec, tuple(query), prompt, id=next(self._ids))
            self._pending.append(job)
            self.counters["submitted"] += 1
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> None:
        """The request is no longer wanted: dropped if still queued; else its batch stops when none of its requests
        is wanted any more (before the next decode call)."""
        with self._cond:
            if job.state == "queued" and job in self._pending:
                self._pending.remove(job)
                job.state = "dropped"
                job.future.cancel()
                self.counters["dropped"] += 1
                self._cond.notify_all()
            elif job.state == "running":
                job.abandoned = True

    def queue_position(self, job: Job) -> int | None:
        """0-based position of a queued job, or None once it left the queue."""
        with self._cond:
            try:
                return self._pending.index(job)
            except ValueError:
                return None

    def stats(self) -> dict[str, Any]:
        """Queue depth, running requests and counters (for ``GET /health``)."""
        with self._cond:
            return {
                "queued": len(self._pending),
                "running": len(self._running),
                "closing": self._closing,
                **self.counters,
            }

    def close(self, timeout: float | None = None) -> None:
        """Stops taking requests, finishes the queued and running ones, and joins the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the worker thread ----------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    self._running = []

    def _next_batch(self) -> list[Job] | None:
        """The oldest request and those with its spec that arrive within ``batch_wait`` (up to ``max_batch_size``)."""
        with self._cond:
            while True:
                if not self._pending:
                    if self._closing:
                        return None
                    self._cond.wait()
                    continue
                first = self._pending[0]
                group = [job for job in self._pending if job.spec == first.spec][: self.max_batch_size]
                wait = first.enqueued + self.batch_wait - time.monotonic()
                if len(group) >= self.max_batch_size or wait <= 0 or self._closing:
                    break
                self._cond.wait(timeout=wait)
            now = time.monotonic()
            started = []
            for job in group:
                self._pending.remove(job)
                if job.future.set_running_or_notify_cancel():
                    job.state, job.started, job.batch_size = "running", now, len(group)
                    started.append(job)
            self._running = started
            return started

    def _run_batch(self, batch: list[Job]) -> None:
        spec = batch[0].spec
        seed = spec.seed if spec.seed is not None else secrets.randbits(_SEED_BITS)
        groups: dict[tuple[tuple[int, ...], str], list[Job]] = {}
        for job in batch:  # identical queries are searched once
            groups.setdefault((job.query, job.prompt), []).append(job)
        keys = list(groups)
        start = time.monotonic()
        try:
            results, flagged = self._search(spec, seed, keys, batch, check_ties=len(keys) > 1)
        except SearchAbandoned as error:
            self._finish(batch, error=error, counter="abandoned")
            return
        except Exception as error:  # a failing reward or model: this batch fails, the server keeps serving
            logger.exception("search of a batch of %d request(s) failed", len(batch))
            self._finish(batch, error=error, counter="failed")
            return
        with self._cond:
            self.counters["batches"] += 1
            self.counters["batched_queries"] += len(keys)
        reran, finished = set(), set()
        for i, key in enumerate(keys):  # near-ties: searched again alone, answered from that run
            if key[0] not in flagged:
                continue
            try:
                results[i] = self._search(spec, seed, [key], groups[key], check_ties=False)[0][0]
            except SearchAbandoned as error:
                self._finish(groups[key], error=error, counter="abandoned")
                finished.add(i)
            except Exception as error:
                logger.exception("search of a query again alone failed")
                self._finish(groups[key], error=error, counter="failed")
                finished.add(i)
            else:
                reran.add(i)
        seconds = time.monotonic() - start
        with self._cond:
            self.counters["reruns_alone"] += len(reran)
        for i, key in enumerate(keys):
            if i in finished:
                continue
            for job in groups[key]:
                answer = Answer(
                    result=results[i],
                    seed=seed,
                    batch_size=len(keys),
                    rerun_alone=i in reran,
                    queued_seconds=(job.started or start) - job.enqueued,
                    search_seconds=seconds,
                    eos_token_ids=self.eos_token_ids,
                )
                self._finish([job], answer=answer, counter="completed")

    def _search(
        self,
        spec: SearchSpec,
        seed: int,
        keys: list[tuple[tuple[int, ...], str]],
        jobs: list[Job],
        check_ties: bool,
    ) -> tuple[list[Any], set[tuple[int, ...]]]:
        """One ``search`` call over ``keys`` on a fresh sampler; returns the results and the queries to search again
        alone (empty without ``check_ties``)."""
        reward = PerQueryReward(
            self.rewards[spec.reward], rows_per_query(spec.method, spec.sample_size, spec.n_iterations)
        )
        sampler = build_sampler(
            spec.method,
            self.model,
            self.tokenizer,
            reward,
            spec.horizon,
            sample_size=spec.sample_size,
            n_iterations=spec.n_iterations,
            seed=seed,
            prompt_batch_size=len(keys),
            settings=dict(spec.settings),
        )
        guard = None
        if check_ties and self.tie_margin > 0 and self.output_layer is not None:
            guard = TieGuardDecoder(sampler.decoder, self.output_layer, self.tie_margin)
            sampler.decoder = guard

        def progressed() -> None:
            for job in jobs:
                job.decodes += 1

        sampler.decoder = StoppableDecoder(sampler.decoder, lambda: all(job.abandoned for job in jobs), progressed)
        results = sampler.search([list(query) for query, _ in keys], prompts=[prompt for _, prompt in keys])
        return list(results), (guard.flagged if guard is not None else set())

    def _finish(
        self,
        jobs: list[Job],
        *,
        answer: Answer | None = None,
        error: BaseException | None = None,
        counter: str,
    ) -> None:
        with self._cond:
            self.counters[counter] += len(jobs)
            for job in jobs:
                job.state = "done"
        for job in jobs:
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(answer)


def _context_and_vocab(model: Any, output_layer: Any) -> tuple[int | None, int]:
    """The model's context length (None when unknown) and vocabulary size."""
    if output_layer is None:  # vLLM: the engine's model config
        config = model.model_config
        return config.max_model_len, config.get_vocab_size()
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value, int(output_layer.weight.shape[0])
    return None, int(output_layer.weight.shape[0])


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Token ids that end a response (the tokenizer's eos and the generation config's)."""
    ids: set[int] = set()
    for value in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)
