"""`create_app`: the FastAPI app of ``aisp-trl serve`` (OpenAI-compatible routes in front of an `Engine`).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` (Bearer auth when an API key is
set) and ``GET /health`` (open: queue depth and counters). Request bodies are described in
`aisp_trl.serve.protocol`. The event loop parses, tokenizes (on one thread of its own, with its own tokenizer copy)
and waits; the search runs on the engine's thread. Streaming (``stream: true``) sends SSE comments (lines starting
with ``:``, which clients ignore) while the request waits and its search runs, then the answer as chunks and
``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import prompting, protocol, responses
from .engine import Engine, EngineClosed, Job, QueueFull
from .errors import APIError
from .guard import SearchAbandoned
from .methods import METHOD_SETTINGS
from .protocol import Limits, ParsedRequest

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
"""How often a waiting request checks its future, its client and its deadline."""
HEARTBEAT_SECONDS = 1.0
"""A streamed request sends a progress comment at least this often while it waits (and so notices a gone client)."""


def create_app(
    engine: Engine,
    limits: Limits,
    *,
    api_key: str | None = None,
    request_timeout: float = 600.0,
) -> FastAPI:
    """The FastAPI app; starts ``engine`` with the app and closes it (finishing its requests) on shutdown.

    Args:
        engine (`Engine`): owns the model, tokenizer and rewards.
        limits (`Limits`): the served model name, reward names and per-request limits.
        api_key (`str`, *optional*): when set, ``/v1/*`` needs ``Authorization: Bearer <api_key>`` (401 otherwise).
        request_timeout (`float`, defaults to 600): seconds from arrival to answer; then 504 and the request's work
            stops (dropped from the queue, or its batch stops if no other request needs it).

    Returns:
        `fastapi.FastAPI`: serve it with uvicorn, e.g. ``uvicorn.run(app, host="127.0.0.1", port=8000)``.
    """
    tokenizer = copy.deepcopy(engine.tokenizer)  # the event loop's own copy: tokenizers are not thread-safe
    tokenize_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="aisp-tokenize")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        # uvicorn's graceful shutdown already waited for open requests; drain whatever is left and stop the worker
        await asyncio.to_thread(engine.close)
        tokenize_pool.shutdown(wait=False)

    app = FastAPI(title="aisp-trl", summary="AISP test-time alignment behind the OpenAI API", lifespan=lifespan)
    created = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {error.detail}"
        if error.status_code == 404:
            message += "; routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health"
        return JSONResponse(
            APIError(error.status_code, message, code=str(error.status_code)).body(), status_code=error.status_code
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        body = APIError(500, f"internal error: {type(error).__name__}: {error}", type="server_error").body()
        return JSONResponse(body, status_code=500)

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(
                401,
                "missing or wrong API key; send the header `Authorization: Bearer <key>` (the server's --api_key).",
                type="invalid_request_error",
                code="invalid_api_key",
            )

    async def read_json(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise APIError(400, f"the request body is not valid JSON: {error}.", code="invalid_json") from None

    def prepare(request: ParsedRequest) -> list[int]:
        prompting.render_prompt(request, tokenizer)
        return prompting.tokenize(request, tokenizer, engine.vocab_size, engine.context_length)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = engine.stats()
        return {"status": "draining" if stats["closing"] else "ok", **stats}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return responses.models_body(limits, list(METHOD_SETTINGS), created)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        check_auth(request)
        return await respond(request, protocol.parse_chat(await read_json(request), limits))

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> JSONResponse | StreamingResponse:
        check_auth(request)
        return await respond(request, protocol.parse_completion(await read_json(request), limits))

    async def respond(request: Request, parsed: ParsedRequest) -> JSONResponse | StreamingResponse:
        loop = asyncio.get_running_loop()
        query = await loop.run_in_executor(tokenize_pool, prepare, parsed)
        try:
            job = engine.submit(parsed.spec, query, parsed.reward_prompt)
        except QueueFull as error:
            raise APIError(
                429, f"the server is busy: {error}; retry later.", type="rate_limit_error", code="queue_full"
            ) from None
        except EngineClosed:
            raise APIError(
                503, "the server is shutting down; retry on another instance.", type="server_error"
            ) from None
        deadline = job.enqueued + request_timeout
        response_id = responses.new_id(parsed.kind)
        if parsed.stream:
            events = stream_events(request, parsed, job, deadline, response_id)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        answer = None
        try:
            answer = await wait_for(job, request, deadline)
        finally:
            if answer is None:
                engine.cancel(job)
        body = responses.completion_body(parsed, answer, limits.model_name, response_id, int(time.time()))
        return JSONResponse(body)

    async def wait_for(job: Job, request: Request, deadline: float, on_wait: Any = None) -> responses.Answer:
        """The job's answer; raises `APIError` on timeout (504), a gone client (499) or a failed search."""
        future = asyncio.wrap_future(job.future)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise APIError(
                    504,
                    f"the request did not finish within {request_timeout:g} s (--request_timeout); its work was "
                    "stopped. Ask for a smaller budget or retry when the server is less busy.",
                    type="timeout_error",
                    code="request_timeout",
                )
            done, _ = await asyncio.wait({future}, timeout=min(POLL_SECONDS, remaining))
            if done:
                return search_answer(future)
            if await request.is_disconnected():
                raise APIError(499, "the client disconnected", code="client_disconnected")
            if on_wait is not None:
                await on_wait()

    def search_answer(future: asyncio.Future) -> responses.Answer:
        if future.cancelled():
            raise APIError(499, "the request was cancelled", code="cancelled")
        error = future.exception()
        if error is None:
            return future.result()
        if isinstance(error, SearchAbandoned):
            raise APIError(499, "the request was cancelled", code="cancelled")
        # requests are validated before they are queued: what fails here is the server's (a reward, the model)
        raise APIError(
            500, f"the search failed: {type(error).__name__}: {error}", type="server_error", code="search_failed"
        )

    async def stream_events(
        request: Request, parsed: ParsedRequest, job: Job, deadline: float, response_id: str
    ) -> AsyncIterator[str]:
        notes: list[str] = []
        last = {"note": None, "time": time.monotonic()}

        async def on_wait() -> None:
            note = progress_note(job)
            now = time.monotonic()
            if note != last["note"] or now - last["time"] >= HEARTBEAT_SECONDS:
                notes.append(note)
                last.update(note=note, time=now)

        answer, wait = None, None
        try:
            yield f": {progress_note(job)}\n\n"  # headers and a first line at once: the client sees the stream open
            wait = asyncio.ensure_future(wait_for(job, request, deadline, on_wait))
            while not wait.done():
                await asyncio.wait({wait}, timeout=POLL_SECONDS)
                while notes:
                    yield f": {notes.pop(0)}\n\n"
            try:
                answer = wait.result()
            except APIError as error:
                if error.status == 499:
                    return
                yield f"data: {json.dumps(error.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            yield f": search done in {answer.search_seconds:.2f} s (batch of {answer.batch_size})\n\n"
            for chunk in responses.stream_chunks(parsed, answer, limits.model_name, response_id, int(time.time())):
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if wait is not None and not wait.done():
                wait.cancel()
            if answer is None:
                engine.cancel(job)

    def progress_note(job: Job) -> str:
        if job.state == "queued":
            position = engine.queue_position(job)
            return "queued" if position is None else f"queued, position {position + 1}"
        if job.state == "running":
            return f"searching: batch of {job.batch_size}, {job.decodes} decode call(s) done"
        return job.state

    return app
