"""`APIError`: an error answered in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any


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


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 ``invalid_request_error`` about ``param``."""
    return APIError(400, message, param=param, code=code)
