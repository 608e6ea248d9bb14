"""The rules of the Batch JSON's values, each stated once as ordinary Python.

A rule takes a decoded JSON value and returns what the model holds (the value
itself, or the :class:`~batchfsm.BatchStatus` member of a status string), or
raises :class:`InvalidError` saying what is wrong: exact JSON types (an ``int``
field takes a JSON integer, not ``"10"``, ``10.0`` or ``true``), the API's
ranges (int64, non-negative), no lone surrogate in a str, the metadata limits.

These functions are the hooks of the detailed parse (:mod:`batchfsm._converter`),
the one that words every problem. The generated fast parse
(:mod:`batchfsm._json_parse`) only tells good documents from bad ones, and a
property test holds it to these rules' verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from cattrs import Converter

from ._model import BatchStatus, is_text, metadata_problems

__all__ = [
    "BATCH_TAG",
    "INT_MAX",
    "RULES_BY_TYPE",
    "STATUS_BY_VALUE",
    "InvalidError",
    "expected",
    "is_batch_tag",
    "is_optional",
    "make_optional_hook",
    "show",
    "structure_metadata",
]

STATUS_BY_VALUE = {status.value: status for status in BatchStatus}
#: The API's integers are int64: nothing at or above 2**63.
INT_MAX = 2**63 - 1
#: The type of the Batch's ``object`` field: the literal ``"batch"``.
BATCH_TAG = Literal["batch"]


class InvalidError(Exception):
    """A value's problems as ``(path relative to the value, message)`` pairs."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        super().__init__(*problems)
        self.problems = problems


def show(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def expected(what: str, value: Any) -> InvalidError:
    return InvalidError(("", f"expected {what}, got {show(value)}"))


def structure_str(v: Any, _: Any = None) -> str:
    if v.__class__ is not str:
        raise expected("str", v)
    # Half a character: no JSON engine writes it, so no API sends it.
    if not (v.isascii() or is_text(v)):
        raise InvalidError(("", f"a lone surrogate in {show(v)}"))
    return v


def structure_int(v: Any, _: Any = None) -> int:
    if v.__class__ is not int:
        raise expected("int", v)
    if v < 0:
        raise InvalidError(("", f"expected a non-negative int, got {v}"))
    if v > INT_MAX:
        raise InvalidError(("", f"expected an int below 2**63, got {v}"))
    return v


def structure_status(v: Any, _: Any = None) -> BatchStatus:
    if v.__class__ is not str or v not in STATUS_BY_VALUE:
        raise InvalidError(
            ("", f"expected one of {', '.join(STATUS_BY_VALUE)}; got {show(v)}")
        )
    return STATUS_BY_VALUE[v]


def structure_batch_tag(v: Any, _: Any = None) -> str:
    if v.__class__ is not str or v != "batch":
        raise expected("'batch'", v)
    return "batch"


def structure_metadata(v: Any, _: Any = None) -> dict[str, str] | None:
    """Metadata within the API's limits, as a dict of its own (never the caller's)."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise expected("object", v)
    problems = metadata_problems(v)
    if problems:
        raise InvalidError(*problems)
    return dict(v)


#: The leaf types of the model, each with its rule.
RULES_BY_TYPE: dict[Any, Callable[[Any, Any], Any]] = {
    str: structure_str,
    int: structure_int,
    BatchStatus: structure_status,
    BATCH_TAG: structure_batch_tag,
}


def is_batch_tag(t: Any) -> bool:
    return t is BATCH_TAG or get_args(t) == ("batch",)


def is_optional(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) in (Union, UnionType) and len(args) == 2 and NoneType in args


def make_optional_hook(t: Any, conv: Converter) -> Callable[[Any, Any], Any]:
    # cattrs' own Optional hook looks the inner type's hook up on every call; the
    # hooks are all registered before the classes are generated, so look it up once.
    inner = next(arg for arg in get_args(t) if arg is not NoneType)
    structure = conv.get_structure_hook(inner)

    def structure_optional(value: Any, _: Any) -> Any:
        return None if value is None else structure(value, inner)

    return structure_optional
