"""A document's problems: cattrs' exceptions to ``(json path, message)`` pairs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from ._errors import SchemaError
from ._field_rules import InvalidError, show
from ._model import (
    is_text,
)

__all__ = ["join_path", "problems_of", "text_problems"]


def join_path(path: str, name: str) -> str:
    if not path or name.startswith("["):
        return path + name
    return f"{path}.{name}" if name else path


def problems_of(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(exc, InvalidError):
        for sub, message in exc.problems:
            yield join_path(path, sub), message
    elif isinstance(exc, ClassValidationError):
        with_notes, without_notes = exc.group_exceptions()
        for sub_exc, note in with_notes:
            yield from problems_of(sub_exc, join_path(path, note.name))
        for sub_exc in without_notes:
            yield from problems_of(sub_exc, path)
    elif isinstance(exc, IterableValidationError):
        iter_with_notes, iter_without_notes = exc.group_exceptions()
        for sub_exc, iter_note in iter_with_notes:
            yield from problems_of(sub_exc, join_path(path, f"[{iter_note.index}]"))
        for sub_exc in iter_without_notes:
            yield from problems_of(sub_exc, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield join_path(path, key), "unknown field (strict mode)"
    elif isinstance(exc, SchemaError):  # the model's own checks, on construction
        for sub, message in exc.errors:
            yield join_path(path, sub), message
    elif isinstance(exc, KeyError):
        # cattrs reads a required key with o[key]; its note already named the path.
        yield path, "required field missing"
    else:  # anything else a hook raised: its words
        yield path, str(exc)


def text_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """Where in the decoded document ``value`` a str cannot be written as JSON."""
    if isinstance(value, str):
        return [] if is_text(value) else [(path, f"a lone surrogate in {show(value)}")]
    if isinstance(value, dict):
        items = [(join_path(path, str(k)), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(join_path(path, f"[{i}]"), v) for i, v in enumerate(value)]
    else:
        return []
    return [problem for sub, v in items for problem in text_problems(v, sub)]
