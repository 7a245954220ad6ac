"""``aisp-trl serve``: AISP behind an OpenAI-compatible endpoint.

- `aisp_trl.serve.config`: `ServeArguments`, the start-up flags and limits.
- `aisp_trl.serve.errors`: `APIError`, OpenAI's error shape.
- `aisp_trl.serve.protocol`: the request fields and their validation (`parse_chat`, `parse_completion`).
- `aisp_trl.serve.prompting`: chat rendering and tokenization, checked against the context.
- `aisp_trl.serve.responses`: the response bodies, stream chunks and the model list.
- `aisp_trl.serve.rewards`: ``--reward NAME=SPEC`` -> rewards, built once; `PerQueryReward`.
- `aisp_trl.serve.methods`: method name -> sampler (`build_sampler`).
- `aisp_trl.serve.guard`: decoder wrappers (the tie check, stop and progress).
- `aisp_trl.serve.engine`: `Engine`, the model's thread and the batcher.
- `aisp_trl.serve.app`: `create_app`, the FastAPI routes.
- `aisp_trl.serve.cli`: ``aisp-trl serve`` / ``python -m aisp_trl.serve``.

FastAPI and uvicorn load only when `create_app` or the command is used (``import aisp_trl`` never imports them).
"""

from __future__ import annotations

from typing import Any

from .config import ServeArguments

__all__ = ["Engine", "ServeArguments", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # imports FastAPI
        from .app import create_app

        return create_app
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
