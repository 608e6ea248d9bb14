"""What every route of the HTTP app shares: its limits, JSON answers, bodies read.

A JSON answer is written by batchfsm's one JSON engine; a body is refused
(413) as soon as it is known to pass its limit, never read whole first; a JSON
body must say ``Content-Type: application/json`` in UTF-8 (415 otherwise).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON

from .._json import encode
from ._api_error import ApiError
from ._files import MAX_FILE_BYTES
from ._params import is_count

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_JSON_BYTES",
    "MAX_UPLOAD_BYTES",
    "JSONResponse",
    "declared_length",
    "error_response",
    "json_body",
    "read_body",
    "too_large",
]

#: An upload may hold a 512 MB file plus its multipart framing.
MAX_UPLOAD_BYTES = MAX_FILE_BYTES + 64 * 1024
#: An upload's fields other than the file (a purpose, a number of seconds).
MAX_FIELD_BYTES = 64 * 1024
#: A JSON request body (create batch) is small.
MAX_JSON_BYTES = 1024 * 1024


class JSONResponse(_StarletteJSON):
    """A JSON answer written by batchfsm's one JSON engine (``batchfsm._json``).

    Compact, non-ASCII as raw UTF-8, as the library's :func:`batchfsm.dumps`.
    """

    def render(self, content: Any) -> bytes:
        return encode(content)


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """The API's error body ``{"error": {...}}`` with ``status``."""
    return JSONResponse(ApiError(status, message, param=param, code=code).body, status)


def too_large(limit: int) -> ApiError:
    """413: the body passes ``limit`` bytes."""
    return ApiError(413, f"Request body too large: the limit is {limit} bytes.")


def declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length, refused (400, 413) if it is no count or passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and not is_count(declared):
        raise ApiError(400, "Invalid Content-Length header.")
    if declared is not None and int(declared) > limit:
        raise too_large(limit)
    return None if declared is None else int(declared)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass ``limit``."""
    declared_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _charset(request: Request) -> str | None:
    """The ``charset`` parameter of the Content-Type, unquoted, if there is one."""
    for parameter in request.headers.get("content-type", "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"')
    return None


def _is_utf_8(charset: str) -> bool:
    # UTF-8's registered name (and the alias many clients send); no codec
    # lookup, which would take Python's own names for other things too.
    return charset.lower() in ("utf-8", "utf8")


def _check_content_type(request: Request) -> None:
    """415 unless the body is said to be JSON in UTF-8."""
    content_type = request.headers.get("content-type", "(none)")[:100]
    if _media_type(request) != "application/json":
        raise ApiError(
            415,
            f"Unsupported content type {content_type!r}: "
            "the body must be JSON, sent as 'Content-Type: application/json'.",
        )
    charset = _charset(request)
    if charset is not None and not _is_utf_8(charset):
        raise ApiError(
            415,
            f"Unsupported content type {content_type!r}: "
            "a JSON body must be UTF-8 (charset=utf-8, or no charset).",
        )


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; 415, 413 or 400 (naming why) if it is none."""
    _check_content_type(request)
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        # JSON exchanged between systems is UTF-8 (RFC 8259): json.loads of
        # bytes would also guess UTF-16 and UTF-32.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request: it is not UTF-8 "
            f"(byte {exc.start}). The body must be a JSON object in UTF-8.",
        ) from None
    try:
        # The standard library's parser keeps lone surrogates, so that the
        # refusal can name the parameter that holds one.
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The body must be a "
            "JSON object.",
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body of your request must be a JSON object.")
    return data
