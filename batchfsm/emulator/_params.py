"""The live API's words for a bad request parameter, as the emulator answers them.

Each function returns a :class:`Problem` (HTTP status, message, ``param``,
``code``) or ``None``; the engine raises it as an ``ApiError``. Wording the
live API was seen to use is copied word for word (a bad ``endpoint``, a
metadata value of the wrong type, an unknown or malformed batch id); the
rest follows the same shapes and is listed in ``docs/emulator.rst`` as the
emulator's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .._endpoints import ENDPOINTS
from .._invariants import COMPLETION_WINDOWS
from .._model import (
    METADATA_MAX_KEY_LENGTH,
    METADATA_MAX_PAIRS,
    METADATA_MAX_VALUE_LENGTH,
)

__all__ = [
    "EXPIRES_AFTER_SECONDS",
    "MAX_ID_LENGTH",
    "Problem",
    "after_problem",
    "batch_id_problem",
    "create_problem",
    "encodable",
    "expires_after_problem",
    "invalid_type",
    "invalid_value",
    "is_count",
    "list_limit",
    "list_page",
    "type_name",
]

#: The longest ``input_file_id`` a batch may name.
MAX_ID_LENGTH = 512
#: The range of ``seconds`` the API accepts in ``expires_after`` (files) and
#: ``output_expires_after`` (batches): one hour to thirty days.
EXPIRES_AFTER_SECONDS = (3_600, 2_592_000)


@attrs.frozen
class Problem:
    """Why a request is refused: the parts of the API's error answer."""

    message: str
    param: str | None
    code: str | None
    status: int = 400


def type_name(value: Any) -> str:
    """The JSON type of ``value`` as the live API names it in its messages.

    Example:
        >>> type_name([1]), type_name(1), type_name(None), type_name(1.5)
        ('an array', 'an integer', 'null', 'a decimal')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid_type(param: str, expected: str, value: Any) -> Problem:
    """An ``invalid_type`` problem: "Invalid type for 'P': expected X, but got Y".

    Example:
        >>> invalid_type("metadata.tags", "a string", ["a"]).message
        "Invalid type for 'metadata.tags': expected a string, but got an array instead."
    """
    return Problem(
        f"Invalid type for '{param}': expected {expected}, but got "
        f"{type_name(value)} instead.",
        param,
        "invalid_type",
    )


def _listed(values: Iterable[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _shown(value: str) -> str:
    # A lone surrogate cannot be written in an answer; show it escaped.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def invalid_value(param: str, value: str, supported: Iterable[str]) -> Problem:
    """An ``invalid_value`` problem: "Invalid value: 'X'. Supported values are: …".

    Example:
        >>> invalid_value("completion_window", "1h", ["24h"]).message
        "Invalid value: '1h'. Supported values are: '24h'."
    """
    return Problem(
        f"Invalid value: '{_shown(value)}'. Supported values are: "
        f"{_listed(supported)}.",
        param,
        "invalid_value",
    )


def encodable(value: str) -> bool:
    """Whether ``value`` can be written in an answer (no lone surrogate).

    Example:
        >>> encodable("café"), encodable(chr(0xD800))
        (True, False)
    """
    # JSON may carry a lone surrogate ("\ud800"); no answer could ever hold it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_long(param: str, what: str, limit: int, length: int) -> Problem:
    return Problem(
        f"Invalid '{param}': {what} too long. Expected a {what} with maximum "
        f"length {limit}, but got a {what} with length {length} instead.",
        param,
        "invalid_value",
    )


def _metadata_problem(metadata: Any) -> Problem | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return invalid_type("metadata", "an object", metadata)
    if len(metadata) > METADATA_MAX_PAIRS:
        return Problem(
            f"Invalid 'metadata': {len(metadata)} pairs given "
            f"(at most {METADATA_MAX_PAIRS} pairs).",
            "metadata",
            "invalid_value",
        )
    for key, value in metadata.items():
        param = f"metadata.{key}"
        if not encodable(key):
            return Problem("Invalid 'metadata': a key is not valid UTF-8 text.",
                           "metadata", "invalid_value")  # fmt: skip
        if len(key) > METADATA_MAX_KEY_LENGTH:
            return _too_long("metadata", "key", METADATA_MAX_KEY_LENGTH, len(key))
        if not isinstance(value, str):
            return invalid_type(param, "a string", value)
        if not encodable(value):
            return Problem(f"Invalid '{param}': the value is not valid UTF-8 text.",
                           param, "invalid_value")  # fmt: skip
        if len(value) > METADATA_MAX_VALUE_LENGTH:
            return _too_long(param, "string", METADATA_MAX_VALUE_LENGTH, len(value))
    return None


def expires_after_problem(param: str, value: Any) -> Problem | None:
    """What is wrong with an ``expires_after`` object named ``param``, or ``None``.

    Files' ``expires_after`` and batches' ``output_expires_after`` both take
    ``{"anchor": "created_at", "seconds": N}``, ``N`` in
    :data:`EXPIRES_AFTER_SECONDS`.

    Example:
        >>> expires_after_problem("expires_after", {"anchor": "created_at",
        ...                                         "seconds": 60}).message
        "Invalid 'expires_after.seconds': expected a value between 3600 and 2592000, but got 60 instead."
    """  # noqa: E501
    low, high = EXPIRES_AFTER_SECONDS
    if value is None:
        return None
    if not isinstance(value, dict):
        return invalid_type(param, "an object", value)
    if value.get("anchor") != "created_at":
        return invalid_value(
            f"{param}.anchor", str(value.get("anchor")), ["created_at"]
        )
    seconds = value.get("seconds")
    if type(seconds) is not int:
        return invalid_type(f"{param}.seconds", "an integer", seconds)
    if not low <= seconds <= high:
        return Problem(
            f"Invalid '{param}.seconds': expected a value between {low} and "
            f"{high}, but got {seconds} instead.",
            f"{param}.seconds",
            "invalid_value",
        )
    return None


def is_count(text: str) -> bool:
    """Whether ``text`` is a count written in ASCII digits (at most 18 of them).

    Example:
        >>> is_count("20"), is_count("²"), is_count("-1"), is_count("9" * 19)
        (True, False, False, False)
    """
    # str.isdigit() alone admits "²" and other digits int() refuses.
    return text.isascii() and text.isdigit() and len(text) <= 18


def list_limit(raw: Any, most: int, default: int) -> int | Problem:
    """A list's ``limit``: 1..``most``, ``default`` if ``None``; text or an int.

    Both lists (batches 1..100, files 1..10,000) answer a bad ``limit`` alike.

    Example:
        >>> list_limit(None, 100, 20), list_limit("7", 100, 20)
        (20, 7)
        >>> list_limit("101", 100, 20).message
        "Invalid 'limit': expected a value between 1 and 100, but got 101 instead."
        >>> list_limit("x", 100, 20).message
        "Invalid type for 'limit': expected an integer, but got a string instead."
    """
    if raw is None:
        return default
    if isinstance(raw, str) and is_count(raw):
        limit = int(raw)
    elif type(raw) is int:
        limit = raw
    else:
        return invalid_type("limit", "an integer", raw)
    if not 1 <= limit <= most:
        return Problem(
            f"Invalid 'limit': expected a value between 1 and {most}, "
            f"but got {limit} instead.",
            "limit",
            "invalid_value",
        )
    return limit


def after_problem(what: str, after: Any) -> Problem:
    """A list's ``after`` that names no ``what`` in the list.

    Example:
        >>> after_problem("batch", "batch_x").message
        "Invalid 'after': no batch 'batch_x' in this list."
    """
    return Problem(
        f"Invalid 'after': no {what} {after!r} in this list.", "after", "invalid_value"
    )


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """The API's answer to a list call, batches and files alike.

    Example:
        >>> list_page([{"id": "a"}, {"id": "b"}], True)["last_id"]
        'b'
    """
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def create_problem(
    *,
    input_file_id: Any,
    endpoint: Any,
    completion_window: Any,
    metadata: Any,
    output_expires_after: Any,
) -> Problem | None:
    """The first thing wrong with the parameters of a create, or ``None``.

    Problems with the input file itself are not create errors: the batch is
    created and fails in ``validating``, as the live API does.

    Example:
        >>> create_problem(input_file_id="file-1", endpoint="/v1/chat/completions",
        ...                completion_window="24h", metadata={"tags": ["a"]},
        ...                output_expires_after=None).message
        "Invalid type for 'metadata.tags': expected a string, but got an array instead."
    """
    if not isinstance(input_file_id, str):
        return invalid_type("input_file_id", "a string", input_file_id)
    if len(input_file_id) > MAX_ID_LENGTH:  # stored, it would swell every list
        return Problem(
            "Invalid 'input_file_id': string too long. Expected a string with "
            f"maximum length {MAX_ID_LENGTH}, but got a string with length "
            f"{len(input_file_id)} instead.",
            "input_file_id",
            "string_above_max_length",
        )
    if not input_file_id or not encodable(input_file_id):
        return Problem(
            f"Invalid 'input_file_id': {input_file_id!r}. Expected a file ID.",
            "input_file_id",
            "invalid_value",
        )
    if not isinstance(endpoint, str):
        return invalid_type("endpoint", "a string", endpoint)
    if endpoint not in ENDPOINTS:
        return invalid_value("endpoint", endpoint, ENDPOINTS)
    if not isinstance(completion_window, str):
        return invalid_type("completion_window", "a string", completion_window)
    if completion_window not in COMPLETION_WINDOWS:
        return invalid_value("completion_window", completion_window, COMPLETION_WINDOWS)
    return _metadata_problem(metadata) or expires_after_problem(
        "output_expires_after", output_expires_after
    )


def batch_id_problem(batch_id: Any) -> Problem | None:
    """A malformed batch id: 400 ``invalid_value`` (unknown ids are a 404).

    Example:
        >>> batch_id_problem("x").message
        "Invalid 'batch_id': 'x'. Expected an ID that begins with 'batch'."
        >>> batch_id_problem("batch_abc") is None
        True
    """
    if not isinstance(batch_id, str):
        return invalid_type("batch_id", "a string", batch_id)
    if batch_id.startswith("batch"):
        return None
    return Problem(
        f"Invalid 'batch_id': '{_shown(batch_id)}'. Expected an ID that begins "
        "with 'batch'.",
        "batch_id",
        "invalid_value",
    )
