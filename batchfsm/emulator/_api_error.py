"""The API's answer other than success: :class:`ApiError`, raised by every call."""

from __future__ import annotations

from typing import Any

from .._errors import BatchFSMError
from ._params import Problem

__all__ = ["ApiError", "refuse"]


class ApiError(BatchFSMError):
    """An answer of the API other than success: HTTP status and error body.

    Example:
        >>> ApiError(404, "No batch found with id 'batch_x'.").body["error"]["type"]
        'invalid_request_error'
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(status_code, message)
        self.status_code = status_code
        self.body = body or {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        }

    def __str__(self) -> str:
        return f"{self.status_code}: {self.body['error']['message']}"


def refuse(problem: Problem) -> ApiError:
    """The :class:`ApiError` that answers a request's :class:`Problem`."""
    return ApiError(
        problem.status, problem.message, param=problem.param, code=problem.code
    )
