"""The response bodies: ``ChatCompletion`` / ``Completion`` with ``usage`` and the extra ``aisp`` object, the stream
chunks, and ``GET /v1/models``."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .protocol import Limits, ParsedRequest


@dataclass
class Answer:
    """What the engine returns for one request: its search result and how it was run."""

    result: Any  # AISPResult
    seed: int
    batch_size: int  # distinct queries searched together
    rerun_alone: bool  # flagged by the tie check and searched again alone
    queued_seconds: float
    search_seconds: float
    eos_token_ids: frozenset[int] = frozenset()


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def choices_of(request: ParsedRequest, answer: Answer) -> list[dict[str, Any]]:
    """The ``n`` best samples as ``{"index", "text", "finish_reason", "reward"}`` (best first)."""
    picked = []
    for index, sample in enumerate(answer.result.top(request.n)):
        ended = bool(sample.completion_ids) and sample.completion_ids[-1] in answer.eos_token_ids
        finish = "stop" if ended else "length"  # the decode stopped at EOS, or ran to the horizon
        picked.append({"index": index, "text": sample.completion, "finish_reason": finish, "reward": sample.reward})
    return picked


def usage_of(answer: Answer) -> dict[str, int]:
    """OpenAI usage: ``completion_tokens`` counts every token of every sample of the search (the compute bill)."""
    prompt_tokens = len(answer.result.query_ids)
    completion_tokens = sum(len(s.completion_ids) for s in answer.result.samples)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def aisp_info(request: ParsedRequest, answer: Answer, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """The extra ``aisp`` object: how the answer was searched and what the search saw."""
    spec, result = request.spec, answer.result
    return {
        "method": spec.method,
        "reward": spec.reward,
        "seed": answer.seed,
        # as searched: AISP runs kappa iterations of n; best-of-n draws all N at once; greedy decodes one
        "sample_size": spec.sample_size if spec.method == "aisp" else spec.budget,
        "n_iterations": spec.n_iterations if spec.method == "aisp" else 1,
        "budget": spec.budget,
        "horizon": spec.horizon,
        "settings": dict(spec.settings),
        "samples_used": len(result.samples),
        "best_reward": result.best.reward,
        "choice_rewards": [c["reward"] for c in choices],
        "best_so_far": list(result.best_so_far),
        "mean_reward": list(result.mean_reward),
        "ess": list(result.ess),
        "batch_size": answer.batch_size,
        "rerun_alone": answer.rerun_alone,
        "queued_seconds": round(answer.queued_seconds, 4),
        "search_seconds": round(answer.search_seconds, 4),
    }


def completion_body(request: ParsedRequest, answer: Answer, model: str, response_id: str, created: int) -> dict:
    """A ``ChatCompletion`` (chat) or ``Completion`` body, with ``usage`` and the extra ``aisp`` object."""
    choices = choices_of(request, answer)
    if request.kind == "chat":
        body_choices = [
            {
                "index": c["index"],
                "message": {"role": "assistant", "content": c["text"]},
                "finish_reason": c["finish_reason"],
                "logprobs": None,
            }
            for c in choices
        ]
        obj = "chat.completion"
    else:
        body_choices = [
            {"index": c["index"], "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None}
            for c in choices
        ]
        obj = "text_completion"
    return {
        "id": response_id,
        "object": obj,
        "created": created,
        "model": model,
        "choices": body_choices,
        "usage": usage_of(answer),
        "aisp": aisp_info(request, answer, choices),
    }


_PIECES = re.compile(r"\s*\S+|\s+")


def stream_chunks(request: ParsedRequest, answer: Answer, model: str, response_id: str, created: int) -> list[dict]:
    """The answer as stream chunks: per choice a role chunk (chat), its text in word pieces and a finish chunk (which
    carries the ``aisp`` object), then a usage chunk when ``stream_options.include_usage`` asked for one."""
    choices = choices_of(request, answer)
    chat = request.kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choice_list: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body = {"id": response_id, "object": obj, "created": created, "model": model, "choices": choice_list}
        return {**body, **extra}

    def piece(index: int, text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}

    chunks = []
    for c in choices:
        if chat:
            chunks.append(chunk([piece(c["index"], "", None, role=True)]))
        chunks.extend(chunk([piece(c["index"], p, None)]) for p in _PIECES.findall(c["text"]))
        last = chunk([piece(c["index"], None if chat else "", c["finish_reason"])])
        if c is choices[-1]:
            last["aisp"] = aisp_info(request, answer, choices)
        chunks.append(last)
    if request.include_usage:
        chunks.append(chunk([], usage=usage_of(answer)))
    return chunks


def models_body(limits: Limits, methods: list[str], created: int | None = None) -> dict[str, Any]:
    """``GET /v1/models``: the served model, with the rewards, methods and limits a request may use."""
    return {
        "object": "list",
        "data": [
            {
                "id": limits.model_name,
                "object": "model",
                "created": created if created is not None else int(time.time()),
                "owned_by": "aisp-trl",
                "aisp": {
                    "rewards": list(limits.rewards),
                    "methods": methods,
                    "max_budget": limits.max_budget,
                    "max_new_tokens": limits.max_new_tokens,
                    "default_max_tokens": limits.default_max_tokens,
                    "context_length": limits.context_length,
                },
            }
        ],
    }
