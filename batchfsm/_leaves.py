"""The leaf rules of the Batch JSON, each stated once: exact types, API ranges.

A rule is an expression true of a good value ``v`` and the words for a bad one.
The detailed gear's hooks (:mod:`batchfsm._converter`) and the fast gear's
inline checks (:mod:`batchfsm._gears`) are both generated from these
declarations, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import attrs
from cattrs import Converter

from ._codegen import compile_function
from ._model import (
    MODEL_CLASSES,
    BatchStatus,
    is_text,
)

__all__ = [
    "BATCH_TAG",
    "INT_MAX",
    "LEAF_NAMESPACE",
    "LEAF_RESULTS",
    "LEAF_RULES",
    "STATUS_BY_VALUE",
    "InvalidError",
    "Rule",
    "expected",
    "is_batch_tag",
    "is_optional",
    "leaf_hook",
    "leaf_name",
    "leaf_test",
    "make_optional_hook",
    "show",
]

MODEL_CLASSES = MODEL_CLASSES
STATUS_BY_VALUE = {status.value: status for status in BatchStatus}


class InvalidError(Exception):
    """A value's problems as ``(path relative to the value, message)`` pairs."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        super().__init__(*problems)
        self.problems = problems


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def expected(what: str, value: Any) -> InvalidError:
    return InvalidError(("", f"expected {what}, got {show(value)}"))


# -- leaf rules: exact JSON types, no coercion, the API's ranges -------------------
#
# Each rule is stated once, as an expression true of a good value ``v`` and the
# words for a bad one. The detailed gear's hooks and the fast gear's inline
# checks below are both generated from these declarations.

#: The API's integers are int64: nothing at or above 2**63.
INT_MAX = 2**63 - 1


@attrs.frozen
class Rule:
    test: str  # an expression over ``v``, true when the value passes
    message: str  # an f-string body over ``v`` saying what is wrong
    engine_checked: bool = False  # text parsed by the JSON engine always passes


BATCH_TAG = Literal["batch"]

LEAF_RULES: dict[Any, tuple[Rule, ...]] = {
    str: (
        Rule("v.__class__ is str", "expected str, got {_show(v)}"),
        # Half a character: no JSON engine writes it, so no API sends it.
        Rule(
            "v.isascii() or _is_text(v)",
            "a lone surrogate in {_show(v)}",
            engine_checked=True,
        ),
    ),
    int: (
        Rule("v.__class__ is int", "expected int, got {_show(v)}"),
        Rule("v >= 0", "expected a non-negative int, got {v}"),
        Rule(f"v <= {INT_MAX}", "expected an int below 2**63, got {v}"),
    ),
    BatchStatus: (
        Rule(
            "v.__class__ is str and v in _STATUSES",
            "expected one of {', '.join(_STATUSES)}; got {_show(v)}",
        ),
    ),
    BATCH_TAG: (
        Rule("v.__class__ is str and v == 'batch'", "expected 'batch', got {_show(v)}"),
    ),
}
#: What a leaf that passed becomes, when not the JSON value itself.
LEAF_RESULTS: dict[Any, str] = {BatchStatus: "_STATUSES[v]"}
LEAF_NAMESPACE: dict[str, Any] = {
    "_STATUSES": STATUS_BY_VALUE,
    "_is_text": is_text,
    "_show": show,
}


def leaf_test(t: Any, engine: bool) -> str:
    """One expression: does ``v`` pass every rule of ``t``?"""
    tests = [r.test for r in LEAF_RULES[t] if not (engine and r.engine_checked)]
    return " and ".join(f"({test})" for test in tests)


def leaf_name(t: Any) -> str:
    return "batch_tag" if t is BATCH_TAG else t.__name__


def leaf_hook(t: Any) -> Callable[[Any, Any], Any]:
    """The detailed gear's hook for ``t``: the value, or why it is refused."""
    name = f"structure_{leaf_name(t)}"
    lines = [f"def {name}(v, _):"]
    for rule in LEAF_RULES[t]:
        lines += [
            f"    if not ({rule.test}):",
            f"        raise InvalidError(('', f{rule.message!r}))",
        ]
    lines.append(f"    return {LEAF_RESULTS.get(t, 'v')}")
    namespace = {**LEAF_NAMESPACE, "InvalidError": InvalidError}
    return compile_function(name, lines, namespace, label=f"{name} (detailed)")


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
