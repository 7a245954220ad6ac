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

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` (see `aisp_trl.serve.errors`).
Prompt rendering and tokenization live in `aisp_trl.serve.prompting`, the response bodies in
`aisp_trl.serve.responses`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import AISPConfig
from ..config import SEARCH_SETTINGS
from .errors import APIError, bad_request
from .methods import METHOD_SETTINGS, SEARCHES_BUDGET

# -- fields -------------------------------------------------------------------------------------------------------

AISP_FIELDS = ("method", "reward", "budget", "sample_size", "n_iterations", *SEARCH_SETTINGS)
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
        "max_tokens",
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
            raise bad_request(
                "`max_tokens` and `max_completion_tokens` differ; send one of them.", "max_completion_tokens"
            )
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
        raise bad_request(
            "`echo` is not supported (the answer never repeats the prompt); remove it.", "echo", "unsupported_field"
        )
    request = _parse_common(body, limits, "completion")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise bad_request("`prompt` is empty; send at least one character.", "prompt")
        request.prompt_text = request.reward_prompt = prompt
    elif isinstance(prompt, list) and prompt and all(_is_int(t) and t >= 0 for t in prompt):
        request.prompt_ids = [int(t) for t in prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        raise bad_request(
            f"`prompt` holds {len(prompt)} prompts; send one prompt per request (concurrent requests are batched "
            "together by the server).",
            "prompt",
        )
    else:
        raise bad_request(
            "`prompt` must be a non-empty string or a non-empty list of token ids.", "prompt", "missing_prompt"
        )
    return request


def _check_fields(body: Any, supported: frozenset[str]) -> dict[str, Any]:
    """The body as a dict without ignored fields; refuses unknown and unsupported ones, naming all of them."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}.", None, "invalid_body")
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
        raise bad_request(
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
        raise bad_request(
            "`messages` must be a non-empty list of {role, content} objects.", "messages", "missing_messages"
        )
    parsed = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"`{where}` must be an object with `role` and `content`.", where)
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise bad_request(
                f"`{where}` has field(s) {', '.join(map(repr, extra))} this server does not support (text messages "
                "only: role, content, name); remove them.",
                f"{where}.{extra[0]}",
                "unsupported_field",
            )
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise bad_request(
                f"`{where}.role` {role!r} is not supported; use system, developer, user or assistant.", f"{where}.role"
            )
        parsed.append(
            {"role": "system" if role == "developer" else role, "content": _text(message.get("content"), where)}
        )
    if parsed[-1]["role"] != "user":
        raise bad_request(
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
                raise bad_request(
                    f"`{where}.content[{j}]` is a {part.get('type')!r} part; only text parts are supported.",
                    f"{where}.content",
                    "unsupported_content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"`{where}.content` must be a string or a list of text parts.", f"{where}.content")


def _parse_common(body: dict[str, Any], limits: Limits, kind: str) -> ParsedRequest:
    """The fields both endpoints share: model, method, reward, budget, horizon, seed, settings, n, stream."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(f"`model` is required; this server serves {limits.model_name!r}.", "model", "missing_model")
    if model != limits.model_name:
        raise APIError(
            404,
            f"model {model!r} is not served here; this server serves {limits.model_name!r} (GET /v1/models).",
            param="model",
            code="model_not_found",
        )
    method = body.get("method", "aisp")
    if not isinstance(method, str) or method not in METHOD_SETTINGS:
        raise bad_request(f"`method` {method!r} is not one of {', '.join(METHOD_SETTINGS)}.", "method")
    reward = body.get("reward", limits.rewards[0])
    if not isinstance(reward, str) or reward not in limits.rewards:
        raise bad_request(
            f"`reward` {reward!r} is not one of this server's rewards: {', '.join(limits.rewards)} (GET /v1/models "
            "lists them; rewards are chosen when the server starts, with --reward NAME=SPEC).",
            "reward",
            "unknown_reward",
        )
    settings = _method_settings(body, method)
    sample_size, n_iterations = _budget(body, method, limits)
    horizon = body.get("max_tokens", limits.default_max_tokens)
    if not _is_int(horizon) or horizon < 1:
        raise bad_request(f"`max_tokens` must be an integer >= 1, got {horizon!r}.", "max_tokens")
    if horizon > limits.max_new_tokens:
        raise bad_request(
            f"`max_tokens` {horizon} exceeds this server's limit of {limits.max_new_tokens} new tokens "
            "(--max_new_tokens); ask for fewer.",
            "max_tokens",
            "limit_exceeded",
        )
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < _SEED_LIMIT):
        raise bad_request(f"`seed` must be an integer in [0, 2**63), got {seed!r}.", "seed")
    spec = SearchSpec(method, reward, int(horizon), sample_size, n_iterations, seed, tuple(sorted(settings.items())))
    n = body.get("n", 1)
    if not _is_int(n) or n < 1:
        raise bad_request(f"`n` must be an integer >= 1, got {n!r}.", "n")
    if n > spec.budget:
        raise bad_request(
            f"`n` {n} exceeds the {spec.budget} sample(s) method {method!r} draws; lower `n` or raise the budget.",
            "n",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request(f"`stream` must be true or false, got {stream!r}.", "stream")
    options = body.get("stream_options", {})
    if options and not stream:
        raise bad_request("`stream_options` is only allowed with `stream: true`.", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise bad_request('`stream_options` supports only {"include_usage": true|false}.', "stream_options")
    return ParsedRequest(kind, spec, int(n), stream, bool(options.get("include_usage", False)))


def _method_settings(body: dict[str, Any], method: str) -> dict[str, Any]:
    """The method's own settings from the body, validated; settings of other methods are refused."""
    allowed = METHOD_SETTINGS[method]
    tuning = ("sigma2", "lam", "alpha", "ess_target", "proposal", "rho", "sigma_decay", "temperature", "top_p")
    foreign = [name for name in tuning if name in body and name not in allowed]
    if foreign:
        users = {name: [m for m, names in METHOD_SETTINGS.items() if name in names] for name in foreign}
        hint = "; ".join(f"`{name}` applies to method {' / '.join(map(repr, m))}" for name, m in users.items())
        raise bad_request(
            f"method {method!r} does not take {', '.join(map(repr, foreign))} ({hint}); remove them or change "
            "`method`.",
            foreign[0],
            "unsupported_setting",
        )
    settings = {name: body[name] for name in allowed if name in body}
    if method in ("aisp", "bon_gaussian"):
        for name, value in settings.items():
            if name == "proposal" and not isinstance(value, str):
                raise bad_request(f"`proposal` must be a string such as 'ar1', got {value!r}.", name)
            if name != "proposal" and not (name == "lam" and isinstance(value, str)) and not _is_number(value):
                raise bad_request(f"`{name}` must be a number, got {value!r}.", name)
        try:
            checked = AISPConfig(**settings)
        except (ValueError, TypeError) as error:
            raise bad_request(str(error), _named_field(str(error), settings)) from None
        if "lam" in settings:
            settings["lam"] = checked.lam
    if method == "bon_top_p":
        temperature, top_p = settings.get("temperature", 1.0), settings.get("top_p", 0.9)
        if not _is_number(temperature) or not 0 < temperature < float("inf"):
            raise bad_request(
                f"`temperature` must be a number > 0 for method 'bon_top_p', got {temperature!r}; for greedy decoding "
                "use method 'greedy'.",
                "temperature",
            )
        if not _is_number(top_p) or not 0 < top_p <= 1:
            raise bad_request(f"`top_p` must lie in (0, 1], got {top_p!r}.", "top_p")
        settings = {name: float(value) for name, value in settings.items()}
    return settings


def _budget(body: dict[str, Any], method: str, limits: Limits) -> tuple[int, int]:
    """(sample_size, n_iterations) from ``budget`` / ``sample_size`` / ``n_iterations`` and the server's limit."""
    given = {name: body[name] for name in ("budget", "sample_size", "n_iterations") if name in body}
    for name, value in given.items():
        if not _is_int(value) or value < 1:
            raise bad_request(f"`{name}` must be an integer >= 1, got {value!r}.", name)
    if not SEARCHES_BUDGET[method]:
        if given:
            raise bad_request(
                f"method {method!r} decodes one response and takes no budget; remove {', '.join(map(repr, given))}.",
                next(iter(given)),
                "unsupported_setting",
            )
        return 1, 1
    budget, n, kappa = given.get("budget"), given.get("sample_size"), given.get("n_iterations")
    if budget is not None:
        if n is not None and kappa is not None:
            if n * kappa != budget:
                raise bad_request(
                    f"`budget` {budget} != sample_size {n} * n_iterations {kappa}; send two of the three.", "budget"
                )
        elif n is not None or kappa is not None:
            name, value = ("sample_size", n) if n is not None else ("n_iterations", kappa)
            if budget % value:
                raise bad_request(
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
        raise bad_request(
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
