"""The OpenAI protocol of ``aisp-trl serve``: request validation, prompt rendering and the response bodies.

A request is the OpenAI body plus AISP's fields (what ``extra_body={...}`` sends with the official client):

- ``method``: ``"aisp"`` (default; `AISPSampler`), ``"bon_top_p"`` (`BestOfNSampler`), ``"bon_gaussian"``
  (`GaussianBestOfNSampler`) or ``"greedy"`` (`GreedySampler`).
- ``reward``: a name the server was started with (``--reward NAME=SPEC``; default: the first).
- the budget: ``budget`` (N samples) and / or ``sample_size`` (n) and ``n_iterations`` (kappa), N = n * kappa. A
  ``budget`` alone takes the largest n <= the default n (8) dividing it. Best-of-n draws all N at once; greedy takes
  no budget.
- ``seed`` (the OpenAI field): the seed of every query's noise stream. Without it the batch draws one and the
  response reports it (``aisp.seed``): the same request with that seed gives the same answer.
- AISP's settings (method ``aisp``): ``sigma2``, ``lam``, ``alpha``, ``ess_target``, ``proposal``, ``rho``,
  ``sigma_decay`` (see `AISPConfig`); ``sigma2`` also for ``bon_gaussian``; ``temperature`` and ``top_p`` only for
  ``bon_top_p``.
- ``n`` -> the ``n`` best samples as choices (best first; at most N); ``max_tokens`` (or ``max_completion_tokens``)
  -> the horizon tau.

Supported OpenAI fields: ``model``, ``messages`` (chat; text content, roles system / developer / user / assistant,
the last one a user message) or ``prompt`` (completions; one string or one list of token ids), ``n``,
``max_tokens``, ``max_completion_tokens`` (chat), ``seed``, ``stream``, ``stream_options`` (``include_usage``),
``temperature`` / ``top_p`` (bon_top_p), ``echo`` (completions; false only).

Ignored, because they change nothing in the answer: ``user``, ``safety_identifier``, ``prompt_cache_key``,
``metadata``; also any OpenAI field sent as ``null`` or at its neutral value (``logprobs: false``,
``presence_penalty: 0``, ``frequency_penalty: 0``, ``logit_bias: {}``, ``tools: []``, ``stop: []``, ``best_of: 1``).
Everything else is refused with HTTP 400 naming the fields: unknown names and the OpenAI features this server does
not implement (``tools``, ``tool_choice``, ``functions``, ``logprobs``, ``top_logprobs``, ``logit_bias``,
``response_format``, ``stop``, penalties, ``audio``, ``modalities``, ``prediction``, ``reasoning_effort``,
``best_of``, ``suffix``, ...).

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` (see `APIError`).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import AISPConfig
from ..prompts import apply_chat_template
from .methods import METHOD_SETTINGS, SEARCHES_BUDGET

# -- errors -----------------------------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered in OpenAI's shape.

    Args:
        status (`int`): the HTTP status (400 bad request, 401, 404 unknown model, 429 queue full, 504 timeout, ...).
        message (`str`): one clear sentence: what is wrong, the value, the fix.
        type (`str`, defaults to ``"invalid_request_error"``): OpenAI's error type.
        param (`str`, *optional*): the request field at fault.
        code (`str`, *optional*): a short machine-readable code.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


# -- fields -------------------------------------------------------------------------------------------------------

AISP_FIELDS = (
    "method",
    "reward",
    "budget",
    "sample_size",
    "n_iterations",
    "sigma2",
    "lam",
    "alpha",
    "ess_target",
    "proposal",
    "rho",
    "sigma_decay",
)
"""The extra body fields of AISP (the OpenAI ``temperature`` / ``top_p`` / ``seed`` / ``n`` / ``max_tokens`` too)."""

_COMMON_FIELDS = ("model", "n", "max_tokens", "seed", "stream", "stream_options", "temperature", "top_p")
CHAT_FIELDS = frozenset(("messages", "max_completion_tokens", *_COMMON_FIELDS, *AISP_FIELDS))
COMPLETION_FIELDS = frozenset(("prompt", "echo", *_COMMON_FIELDS, *AISP_FIELDS))
IGNORED_FIELDS = frozenset(("user", "safety_identifier", "prompt_cache_key", "metadata"))
"""Accepted and ignored: they change nothing in the answer."""

NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "logit_bias": ({},),
    "tools": ([],),
    "stop": ([],),
    "best_of": (1,),
    "echo": (False,),
    "parallel_tool_calls": (False,),
}
"""Refused OpenAI features, accepted at these values (what some clients send by default)."""

OPENAI_FIELDS = frozenset(
    (
        "audio",
        "best_of",
        "echo",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "messages",
        "metadata",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "suffix",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
        "max_tokens",
    )
)
"""OpenAI request fields (to tell "not supported here" from "unknown" in error messages)."""

_SEED_LIMIT = 2**63


@dataclass(frozen=True)
class Limits:
    """What a request may ask for, from the server's start-up settings (`ServeArguments`)."""

    model_name: str
    rewards: tuple[str, ...]
    max_budget: int
    max_new_tokens: int
    default_max_tokens: int
    context_length: int | None = None
    default_sample_size: int = AISPConfig.sample_size
    default_n_iterations: int = AISPConfig.n_iterations


@dataclass(frozen=True)
class SearchSpec:
    """Everything that decides how a query is searched; requests with equal specs may share one batch.

    ``seed`` is ``None`` when the request gave none (the batch draws one for all its seedless requests).
    """

    method: str
    reward: str
    horizon: int
    sample_size: int
    n_iterations: int
    seed: int | None
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def budget(self) -> int:
        """N: samples drawn per query."""
        return self.sample_size * self.n_iterations if SEARCHES_BUDGET[self.method] else 1


@dataclass
class ParsedRequest:
    """A validated request: the search spec, the prompt to tokenize, and how to answer."""

    kind: str  # "chat" or "completion"
    spec: SearchSpec
    n: int
    stream: bool
    include_usage: bool
    prompt_text: str | None = None  # the text to tokenize (chat: rendered with the template)
    prompt_ids: list[int] | None = None  # completions may send token ids
    reward_prompt: str = ""  # what the reward sees as the prompt (chat: the last user message)
    add_special_tokens: bool = True
    echo: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)


# -- parsing ------------------------------------------------------------------------------------------------------


def parse_chat(body: Any, limits: Limits) -> ParsedRequest:
    """Validates a ``POST /v1/chat/completions`` body.

    Raises:
        APIError: 400 naming the field (unknown or unsupported fields, bad values, limits), 404 for another model.
    """
    body = _check_fields(body, CHAT_FIELDS)
    if "max_completion_tokens" in body:
        if "max_tokens" in body and body["max_tokens"] != body["max_completion_tokens"]:
            raise _bad("`max_tokens` and `max_completion_tokens` differ; send one of them.", "max_completion_tokens")
        body["max_tokens"] = body.pop("max_completion_tokens")
    messages = _parse_messages(body.get("messages"))
    request = _parse_common(body, limits, "chat")
    request.messages = messages
    request.reward_prompt = messages[-1]["content"]
    return request


def parse_completion(body: Any, limits: Limits) -> ParsedRequest:
    """Validates a ``POST /v1/completions`` body (one prompt: a string or a list of token ids).

    Raises:
        APIError: as `parse_chat`.
    """
    body = _check_fields(body, COMPLETION_FIELDS)
    if body.get("echo", False) is not False:
        raise _bad("`echo` is not supported (the answer never repeats the prompt); remove it.", "echo", "unsupported")
    request = _parse_common(body, limits, "completion")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise _bad("`prompt` is empty; send at least one character.", "prompt")
        request.prompt_text = request.reward_prompt = prompt
    elif isinstance(prompt, list) and prompt and all(_is_int(t) and t >= 0 for t in prompt):
        request.prompt_ids = [int(t) for t in prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        raise _bad(
            f"`prompt` holds {len(prompt)} prompts; send one prompt per request (concurrent requests are batched "
            "together by the server).",
            "prompt",
        )
    else:
        raise _bad("`prompt` must be a non-empty string or a non-empty list of token ids.", "prompt", "missing_prompt")
    return request


def _check_fields(body: Any, supported: frozenset[str]) -> dict[str, Any]:
    """The body as a dict without ignored fields; refuses unknown and unsupported ones, naming all of them."""
    if not isinstance(body, dict):
        raise _bad(f"the request body must be a JSON object, got {type(body).__name__}.", None, "invalid_body")
    kept, unknown, unsupported = {}, [], []
    for name, value in body.items():
        if name in IGNORED_FIELDS:
            continue
        if name in supported:
            if value is not None:  # null: the default, as OpenAI treats it
                kept[name] = value
        elif name in OPENAI_FIELDS:
            if value is not None and not any(_same(value, v) for v in NEUTRAL_VALUES.get(name, ())):
                unsupported.append(name)
        else:
            unknown.append(name)
    if unknown or unsupported:
        parts = []
        if unknown:
            parts.append(f"unknown field(s) {', '.join(map(repr, sorted(unknown)))}")
        if unsupported:
            parts.append(f"OpenAI field(s) this server does not support {', '.join(map(repr, sorted(unsupported)))}")
        allowed = ", ".join(sorted(supported))
        raise _bad(
            f"{' and '.join(parts)}; remove them. Accepted fields: {allowed}.",
            sorted(unknown + unsupported)[0],
            "unknown_field" if unknown else "unsupported_field",
        )
    return kept


def _same(value: Any, neutral: Any) -> bool:
    if _is_number(value) and _is_number(neutral):
        return value == neutral
    return type(value) is type(neutral) and value == neutral


def _parse_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _bad("`messages` must be a non-empty list of {role, content} objects.", "messages", "missing_messages")
    parsed = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"`{where}` must be an object with `role` and `content`.", where)
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise _bad(
                f"`{where}` has field(s) {', '.join(map(repr, extra))} this server does not support (text messages "
                "only: role, content, name); remove them.",
                f"{where}.{extra[0]}",
                "unsupported_field",
            )
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad(
                f"`{where}.role` {role!r} is not supported; use system, developer, user or assistant.", f"{where}.role"
            )
        parsed.append(
            {"role": "system" if role == "developer" else role, "content": _text(message.get("content"), where)}
        )
    if parsed[-1]["role"] != "user":
        raise _bad(
            f"`messages` ends with a {parsed[-1]['role']!r} message; end with the user message to answer.",
            f"messages[{len(parsed) - 1}].role",
        )
    return parsed


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": ...}`` parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = []
        for j, part in enumerate(content):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(
                    f"`{where}.content[{j}]` is a {part.get('type')!r} part; only text parts are supported.",
                    f"{where}.content",
                    "unsupported_content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"`{where}.content` must be a string or a list of text parts.", f"{where}.content")


def _parse_common(body: dict[str, Any], limits: Limits, kind: str) -> ParsedRequest:
    """The fields both endpoints share: model, method, reward, budget, horizon, seed, settings, n, stream."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad(f"`model` is required; this server serves {limits.model_name!r}.", "model", "missing_model")
    if model != limits.model_name:
        raise APIError(
            404,
            f"model {model!r} is not served here; this server serves {limits.model_name!r} (GET /v1/models).",
            param="model",
            code="model_not_found",
        )
    method = body.get("method", "aisp")
    if not isinstance(method, str) or method not in METHOD_SETTINGS:
        raise _bad(f"`method` {method!r} is not one of {', '.join(METHOD_SETTINGS)}.", "method")
    reward = body.get("reward", limits.rewards[0])
    if not isinstance(reward, str) or reward not in limits.rewards:
        raise _bad(
            f"`reward` {reward!r} is not one of this server's rewards: {', '.join(limits.rewards)} (GET /v1/models "
            "lists them; rewards are chosen when the server starts, with --reward NAME=SPEC).",
            "reward",
            "unknown_reward",
        )
    settings = _method_settings(body, method)
    sample_size, n_iterations = _budget(body, method, limits)
    horizon = body.get("max_tokens", limits.default_max_tokens)
    if not _is_int(horizon) or horizon < 1:
        raise _bad(f"`max_tokens` must be an integer >= 1, got {horizon!r}.", "max_tokens")
    if horizon > limits.max_new_tokens:
        raise _bad(
            f"`max_tokens` {horizon} exceeds this server's limit of {limits.max_new_tokens} new tokens "
            "(--max_new_tokens); ask for fewer.",
            "max_tokens",
            "limit_exceeded",
        )
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < _SEED_LIMIT):
        raise _bad(f"`seed` must be an integer in [0, 2**63), got {seed!r}.", "seed")
    spec = SearchSpec(method, reward, int(horizon), sample_size, n_iterations, seed, tuple(sorted(settings.items())))
    n = body.get("n", 1)
    if not _is_int(n) or n < 1:
        raise _bad(f"`n` must be an integer >= 1, got {n!r}.", "n")
    if n > spec.budget:
        raise _bad(
            f"`n` {n} exceeds the {spec.budget} sample(s) method {method!r} draws; lower `n` or raise the budget.",
            "n",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad(f"`stream` must be true or false, got {stream!r}.", "stream")
    options = body.get("stream_options", {})
    if options and not stream:
        raise _bad("`stream_options` is only allowed with `stream: true`.", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise _bad('`stream_options` supports only {"include_usage": true|false}.', "stream_options")
    return ParsedRequest(kind, spec, int(n), stream, bool(options.get("include_usage", False)))


def _method_settings(body: dict[str, Any], method: str) -> dict[str, Any]:
    """The method's own settings from the body, validated; settings of other methods are refused."""
    allowed = METHOD_SETTINGS[method]
    tuning = ("sigma2", "lam", "alpha", "ess_target", "proposal", "rho", "sigma_decay", "temperature", "top_p")
    foreign = [name for name in tuning if name in body and name not in allowed]
    if foreign:
        users = {name: [m for m, names in METHOD_SETTINGS.items() if name in names] for name in foreign}
        hint = "; ".join(f"`{name}` applies to method {' / '.join(map(repr, m))}" for name, m in users.items())
        raise _bad(
            f"method {method!r} does not take {', '.join(map(repr, foreign))} ({hint}); remove them or change "
            "`method`.",
            foreign[0],
            "unsupported_setting",
        )
    settings = {name: body[name] for name in allowed if name in body}
    if method in ("aisp", "bon_gaussian"):
        for name, value in settings.items():
            if name == "proposal" and not isinstance(value, str):
                raise _bad(f"`proposal` must be a string such as 'ar1', got {value!r}.", name)
            if name != "proposal" and not (name == "lam" and isinstance(value, str)) and not _is_number(value):
                raise _bad(f"`{name}` must be a number, got {value!r}.", name)
        try:
            checked = AISPConfig(**settings)
        except (ValueError, TypeError) as error:
            raise _bad(str(error), _named_field(str(error), settings)) from None
        if "lam" in settings:
            settings["lam"] = checked.lam
    if method == "bon_top_p":
        temperature, top_p = settings.get("temperature", 1.0), settings.get("top_p", 0.9)
        if not _is_number(temperature) or not 0 < temperature < float("inf"):
            raise _bad(
                f"`temperature` must be a number > 0 for method 'bon_top_p', got {temperature!r}; for greedy decoding "
                "use method 'greedy'.",
                "temperature",
            )
        if not _is_number(top_p) or not 0 < top_p <= 1:
            raise _bad(f"`top_p` must lie in (0, 1], got {top_p!r}.", "top_p")
        settings = {name: float(value) for name, value in settings.items()}
    return settings


def _budget(body: dict[str, Any], method: str, limits: Limits) -> tuple[int, int]:
    """(sample_size, n_iterations) from ``budget`` / ``sample_size`` / ``n_iterations`` and the server's limit."""
    given = {name: body[name] for name in ("budget", "sample_size", "n_iterations") if name in body}
    for name, value in given.items():
        if not _is_int(value) or value < 1:
            raise _bad(f"`{name}` must be an integer >= 1, got {value!r}.", name)
    if not SEARCHES_BUDGET[method]:
        if given:
            raise _bad(
                f"method {method!r} decodes one response and takes no budget; remove {', '.join(map(repr, given))}.",
                next(iter(given)),
                "unsupported_setting",
            )
        return 1, 1
    budget, n, kappa = given.get("budget"), given.get("sample_size"), given.get("n_iterations")
    if budget is not None:
        if n is not None and kappa is not None:
            if n * kappa != budget:
                raise _bad(
                    f"`budget` {budget} != sample_size {n} * n_iterations {kappa}; send two of the three.", "budget"
                )
        elif n is not None or kappa is not None:
            name, value = ("sample_size", n) if n is not None else ("n_iterations", kappa)
            if budget % value:
                raise _bad(
                    f"`budget` {budget} is not a multiple of `{name}` {value}; pick values whose product is the "
                    "budget.",
                    "budget",
                )
            n, kappa = (n, budget // n) if n is not None else (budget // kappa, kappa)
        else:  # the largest n <= the default n that divides the budget
            n = max(d for d in range(1, min(limits.default_sample_size, budget) + 1) if budget % d == 0)
            kappa = budget // n
    n = n if n is not None else limits.default_sample_size
    kappa = kappa if kappa is not None else limits.default_n_iterations
    if n * kappa > limits.max_budget:
        raise _bad(
            f"the budget sample_size * n_iterations = {n} * {kappa} = {n * kappa} exceeds this server's limit of "
            f"{limits.max_budget} samples (--max_budget); ask for fewer.",
            "budget" if budget is not None else ("sample_size" if "sample_size" in given else "n_iterations"),
            "limit_exceeded",
        )
    return int(n), int(kappa)


def _named_field(message: str, settings: dict[str, Any]) -> str | None:
    match = re.match(r"`(\w+)`", message)
    return match.group(1) if match and match.group(1) in settings else next(iter(settings), None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- prompts ------------------------------------------------------------------------------------------------------


def render_prompt(request: ParsedRequest, tokenizer: Any) -> None:
    """Sets ``request.prompt_text`` (and ``add_special_tokens``) for a chat request from its messages.

    A single user message goes through `aisp_trl.prompts.apply_chat_template` (as ``aisp-trl generate`` renders
    prompts); a conversation through the tokenizer's own chat template. A tokenizer without a template takes a single
    user message as plain text.
    """
    if request.kind != "chat":
        return
    messages = request.messages
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if len(messages) == 1:
        request.prompt_text = apply_chat_template(tokenizer, [messages[0]["content"]])[0]
    elif has_template:
        request.prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        raise _bad(
            "this model's tokenizer has no chat template, so only a single user message can be answered; send one "
            "message or use /v1/completions.",
            "messages",
            "no_chat_template",
        )
    request.add_special_tokens = not has_template  # the template holds the special tokens
    if not request.prompt_text:
        raise _bad("the prompt is empty; send a non-empty user message.", "messages")


def tokenize(request: ParsedRequest, tokenizer: Any, vocab_size: int, context_length: int | None) -> list[int]:
    """The query's token ids, checked against the vocabulary and the model's context (prompt + horizon)."""
    if request.prompt_ids is not None:
        ids = request.prompt_ids
        bad = next((t for t in ids if t >= vocab_size), None)
        if bad is not None:
            raise _bad(f"`prompt` holds token id {bad}, outside this model's vocabulary of {vocab_size}.", "prompt")
    else:
        ids = tokenizer(request.prompt_text, add_special_tokens=request.add_special_tokens).input_ids
    if not ids:
        raise _bad(
            "the prompt tokenizes to no tokens; send a non-empty prompt.",
            "messages" if request.kind == "chat" else "prompt",
        )
    if request.prompt_ids is not None:
        request.reward_prompt = tokenizer.decode(ids, skip_special_tokens=True)
    if context_length is not None and len(ids) + request.spec.horizon > context_length:
        raise _bad(
            f"the prompt has {len(ids)} tokens and `max_tokens` is {request.spec.horizon}: "
            f"{len(ids) + request.spec.horizon} positions, beyond this model's context of {context_length}; shorten "
            "the prompt or lower `max_tokens`.",
            "messages" if request.kind == "chat" else "prompt",
            "context_length_exceeded",
        )
    return list(ids)


# -- responses ----------------------------------------------------------------------------------------------------


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
