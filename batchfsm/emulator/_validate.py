"""The ``validating`` phase: judge an input file the way the Batch service does.

Every problem is reported, one :class:`batchfsm.BatchError` per bad line and
per missing parameter, with the line number (1-based) and the codes the live
API was seen to use. Where no real code is known, a clear snake_case one is
used; :data:`CODES` lists them all.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Any

import attrs

from .. import _json
from .._endpoints import CATALOGUE, ENDPOINT_MODELS
from .._model import BatchError

__all__ = [
    "CODES",
    "DEFAULT_MODELS",
    "MAX_BYTES",
    "MAX_EMBEDDING_INPUTS",
    "MAX_ERRORS",
    "MAX_REQUESTS",
    "ORGANIZATION",
    "Outcome",
    "Request",
    "body_errors",
    "file_too_large_error",
    "is_blank",
    "iter_lines",
    "line_errors",
    "make_input_file",
    "missing_file_error",
    "scan_input",
    "validate_input",
]

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 50_000
#: At most this many entries in a failed batch's ``errors.data``; the last is
#: then ``too_many_errors``.
MAX_ERRORS = 100

#: Every error code validation reports, and whether the live API uses it.
CODES: dict[str, str] = {
    "invalid_json_line": "a line is not a JSON object (live API)",
    "missing_required_parameter": "custom_id, method, url or body missing (live API)",
    "invalid_url": "url differs from the batch's endpoint (live API)",
    "model_not_found": "body.model is not a model of the endpoint (live API)",
    "streaming_unsupported": "body.stream is true (live API)",
    "invalid_request": "body.model or the endpoint's main input missing, or the "
    "input file not found (live API); method not POST, a wrongly typed field "
    "(emulator)",
    "duplicate_custom_id": "custom_id repeats an earlier line's (emulator)",
    "mixed_models": "a line's body.model differs from the file's first (emulator)",
    "too_many_requests": f"more than {MAX_REQUESTS:,} requests (emulator)",
    "too_many_inputs": f"embeddings inputs add up to more than {MAX_EMBEDDING_INPUTS:,}"
    " (emulator)",
    "file_too_large": f"the file is over {MAX_BYTES:,} bytes (emulator)",
    "empty_file": "the file holds no request (emulator)",
    "too_many_errors": f"more than {MAX_ERRORS - 1} problems: the last entry, the"
    " scan stopped (emulator)",
    "token_limit_exceeded": "the model's enqueued batches would hold more prompt"
    " tokens than its enqueued token limit, when one is set (live API)",
}

#: Models the emulator knows, per endpoint; ``model_not_found`` otherwise.
DEFAULT_MODELS: Mapping[str, frozenset[str]] = ENDPOINT_MODELS

#: The organization named in "Cannot find file ..." (the emulator has one).
ORGANIZATION = "org-batchfsm-emulator"

_REQUIRED = ("custom_id", "method", "url", "body")
_NOT_JSON = "This line is not parseable as valid JSON."


@attrs.frozen
class Request:
    """One valid line of an input file."""

    line: int
    custom_id: str
    body: Mapping[str, Any]


def _error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> BatchError:
    return BatchError(code=code, line=line, message=message, param=param)


def missing_file_error(file_id: str) -> BatchError:
    """Why a batch fails whose input file does not exist (or expired).

    Example:
        >>> missing_file_error("file-x").message
        'Cannot find file file-x, or organization org-batchfsm-emulator does not have access to it.'
    """  # noqa: E501
    return _error(
        "invalid_request",
        f"Cannot find file {file_id}, or organization {ORGANIZATION} does not "
        "have access to it.",
        None,
        "file_id",
    )


def body_errors(
    number: int, body: Mapping[str, Any], endpoint: str, models: Container[str] | None
) -> list[BatchError]:
    """The problems of one request body (``models`` None: any model is known)."""
    errors = []
    model = body.get("model")
    if model is None:
        errors.append(
            _error(
                "invalid_request", "Model parameter is required.", number, "body.model"
            )
        )
    elif not isinstance(model, str) or (models is not None and model not in models):
        shown = model if isinstance(model, str) else _json.encode_str(model)
        errors.append(
            _error(
                "model_not_found",
                f"The provided model '{shown}' is not supported by the Batch API.",
                number,
                "body.model",
            )
        )
    known = CATALOGUE.get(endpoint)
    field = None if known is None else known.input_field
    if field is not None and body.get(field) is None:
        errors.append(
            _error(
                "invalid_request",
                f"{field.capitalize()} parameter is required.",
                number,
                f"body.{field}",
            )
        )
    if body.get("stream") is True:
        errors.append(
            _error(
                "streaming_unsupported",
                f"{endpoint if known is None else known.api_name}: Streaming is "
                "not supported in the Batch API.",
                number,
                "body.stream",
            )
        )
    return errors


def line_errors(
    number: int, item: Any, endpoint: str, models: Container[str] | None
) -> list[BatchError]:
    """The problems of one parsed line on its own (``models``: the endpoint's)."""
    if not isinstance(item, dict):
        return [_error("invalid_json_line", _NOT_JSON, number)]
    errors = [
        _error(
            "missing_required_parameter",
            f"Missing required parameter: '{name}'.",
            number,
            name,
        )
        for name in _REQUIRED
        if name not in item
    ]
    if "custom_id" in item and not isinstance(item["custom_id"], str):
        errors.append(
            _error(
                "invalid_request", "custom_id must be a string.", number, "custom_id"
            )
        )
    if "method" in item and item["method"] != "POST":
        errors.append(
            _error(
                "invalid_request",
                f"Invalid method {item['method']!r}: only POST is supported.",
                number,
                "method",
            )
        )
    if "url" in item and item["url"] != endpoint:
        errors.append(
            _error(
                "invalid_url",
                "The URL provided for this request does not match the batch endpoint.",
                number,
                "url",
            )
        )
    body = item.get("body")
    if "body" in item and not isinstance(body, dict):
        errors.append(
            _error("invalid_request", "body must be a JSON object.", number, "body")
        )
    elif isinstance(body, dict):
        errors += body_errors(number, body, endpoint, models)
    return errors


def _inputs(body: Mapping[str, Any]) -> int:
    value = body.get("input")
    return len(value) if isinstance(value, list) else 1


def iter_lines(chunks: Iterable[bytes], offset: int = 0) -> Iterator[tuple[int, bytes]]:
    r"""The lines of a file read in chunks: ``(offset past the line, line)``.

    Lines end at ``"\n"`` only (JSON strings may hold U+2028 and friends,
    which :meth:`str.splitlines` would also split on); the newline is not part
    of the line; the last line need not end in one. ``offset`` is where the
    first chunk starts in the file; at 0, a UTF-8 byte order mark is left out
    of the first line (the upload accepts one: our choice, the live API's is
    unknown). Only one line is held at a time.

    Example:
        >>> list(iter_lines([b"a\nb", b"c\n", b"d"]))
        [(2, b'a'), (5, b'bc'), (6, b'd')]
        >>> list(iter_lines([b"\xef\xbb", b"\xbfa\n"]))
        [(5, b'a')]
    """
    lines = _lines(chunks, offset)
    if offset == 0:
        for past, line in lines:
            yield past, line.removeprefix(codecs.BOM_UTF8)
            break
    yield from lines


def _lines(chunks: Iterable[bytes], offset: int) -> Iterator[tuple[int, bytes]]:
    pending = bytearray()
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            offset += end - start + 1
            if pending:
                pending += chunk[start:end]
                yield offset, bytes(pending)
                pending.clear()
            else:
                yield offset, chunk[start:end]
            start = end + 1
        if start < len(chunk):
            pending += chunk[start:]
            offset += len(chunk) - start
    if pending:
        yield offset, bytes(pending)


def is_blank(raw: bytes) -> bool:
    """Whether a line holds no request (only whitespace, or not even that)."""
    if not raw.strip():
        return True
    try:
        return not raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


@attrs.frozen
class Outcome:
    """What validating a whole file found, without keeping its requests.

    ``requests`` holds the valid requests only when asked to keep them;
    ``tokens`` their count's sum, when asked to count them.
    """

    total: int
    model: Any
    errors: list[BatchError]
    requests: list[Request]
    tokens: int = 0


def _too_many_errors() -> BatchError:
    return _error(
        "too_many_errors",
        f"Validation stopped after {MAX_ERRORS - 1} problems; fix them and upload "
        "the file again.",
    )


def scan_input(
    lines: Iterable[tuple[int, bytes]],
    endpoint: str,
    models: Mapping[str, Container[str]] | None = DEFAULT_MODELS,
    *,
    keep_requests: bool = False,
    count: Callable[[str, Mapping[str, Any]], int] | None = None,
) -> Outcome:
    """Validate a stream of lines (from :func:`iter_lines`), holding one at a time.

    At most :data:`MAX_ERRORS` errors are reported: past that, the first
    ``MAX_ERRORS - 1`` are kept, the last entry has code ``too_many_errors``
    and the scan stops. ``count(endpoint, body)``, if given, counts each valid
    request's tokens into :attr:`Outcome.tokens`.
    """
    known = None if models is None else models.get(endpoint, frozenset())
    requests: list[Request] = []
    errors: list[BatchError] = []
    seen: dict[str, int] = {}
    first_model: Any = None
    inputs = total = tokens = 0
    for number, (_, raw) in enumerate(lines, start=1):
        problems: list[BatchError]
        item: Any = None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems = [_error("invalid_json_line", _NOT_JSON, number)]
        else:
            if not line.strip():
                continue
            try:
                item = _json.decode(line)
            except _json.DecodeError:
                problems = [_error("invalid_json_line", _NOT_JSON, number)]
            else:
                problems = line_errors(number, item, endpoint, known)
        if not problems:
            custom_id, body = item["custom_id"], item["body"]
            if custom_id in seen:
                problems.append(
                    _error(
                        "duplicate_custom_id",
                        f"custom_id {custom_id!r} is already used on line "
                        f"{seen[custom_id]}.",
                        number,
                        "custom_id",
                    )
                )
            if first_model is None:
                first_model = body.get("model")
            elif body.get("model") != first_model:
                problems.append(
                    _error(
                        "mixed_models",
                        "All requests must use one model; this line uses "
                        f"{body.get('model')!r}, the first used {first_model!r}.",
                        number,
                        "body.model",
                    )
                )
        if problems:
            errors.extend(problems)
            if len(errors) >= MAX_ERRORS:
                return Outcome(
                    total,
                    first_model,
                    [*errors[: MAX_ERRORS - 1], _too_many_errors()],
                    [],
                )
            continue
        total += 1
        if total <= MAX_REQUESTS:  # past it the file fails: stop remembering ids
            seen[item["custom_id"]] = number
        if keep_requests:
            requests.append(Request(number, item["custom_id"], item["body"]))
        if endpoint == "/v1/embeddings":
            inputs += _inputs(item["body"])
        if count is not None:
            tokens += count(endpoint, item["body"])
    if not total and not errors:
        errors.append(_error("empty_file", "The input file holds no requests."))
    if total > MAX_REQUESTS:
        errors.append(
            _error(
                "too_many_requests",
                f"A batch holds at most {MAX_REQUESTS} requests; "
                f"this file has {total}.",
            )
        )
    if inputs > MAX_EMBEDDING_INPUTS:
        errors.append(
            _error(
                "too_many_inputs",
                f"Embeddings inputs add up to {inputs}, over {MAX_EMBEDDING_INPUTS}.",
            )
        )
    return Outcome(total, first_model, errors, requests, tokens)


def validate_input(
    content: bytes,
    endpoint: str,
    models: Mapping[str, Container[str]] | None = DEFAULT_MODELS,
) -> tuple[list[Request], list[BatchError]]:
    r"""The requests of an input file, and every problem with it.

    Returns ``(requests, errors)``; the file is valid when ``errors`` is empty.
    ``models`` maps each endpoint to the models it knows; ``None`` knows every
    model name.
    At most :data:`MAX_ERRORS` errors are reported (see :func:`scan_input`).

    Example:
        >>> content = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings",'
        >>> content += b' "body": {"model": "text-embedding-3-small", "input": "x"}}'
        >>> content += b'\n{oops'
        >>> requests, errors = validate_input(content, "/v1/embeddings")
        >>> [r.custom_id for r in requests], [(e.code, e.line) for e in errors]
        (['a'], [('invalid_json_line', 2)])
    """
    if len(content) > MAX_BYTES:
        return [], [file_too_large_error()]
    outcome = scan_input(iter_lines([content]), endpoint, models, keep_requests=True)
    return outcome.requests, outcome.errors


def file_too_large_error() -> BatchError:
    """Why a batch fails whose input file is over :data:`MAX_BYTES`.

    Example:
        >>> file_too_large_error().code
        'file_too_large'
    """
    return _error("file_too_large", f"The input file is larger than {MAX_BYTES} bytes.")


def make_input_file(
    requests: int,
    *,
    endpoint: str = "/v1/chat/completions",
    model: str = "gpt-4o-mini",
    custom_id: str = "request-{}",
    bad_lines: Mapping[int, str] | None = None,
) -> bytes:
    """An input file of ``requests`` requests, one JSON object a line.

    Each body holds ``model`` and the endpoint's main input (chat ``messages``,
    a ``prompt`` or an ``input``).

    ``custom_id`` is formatted with the request's index; ``bad_lines`` maps a
    line number (from 1) to raw text that replaces that line.

    Example:
        >>> content = make_input_file(2, bad_lines={2: "{oops"})
        >>> requests, errors = validate_input(content, "/v1/chat/completions")
        >>> [r.custom_id for r in requests], [(e.code, e.line) for e in errors]
        (['request-0'], [('invalid_json_line', 2)])
    """
    bad_lines = bad_lines or {}
    known = CATALOGUE.get(endpoint)
    field = "messages" if known is None else known.input_field
    lines = [
        bad_lines.get(i + 1)
        or _json.encode_str(
            {
                "custom_id": custom_id.format(i),
                "method": "POST",
                "url": endpoint,
                "body": {
                    "model": model,
                    field: [{"role": "user", "content": f"Say {i}."}]
                    if field == "messages"
                    else f"Say {i}.",
                },
            }
        )
        for i in range(requests)
    ]
    return ("\n".join(lines) + "\n").encode()
