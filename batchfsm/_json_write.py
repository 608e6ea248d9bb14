"""The way out: a model instance to its API JSON, one generated dict display.

cattrs' generated unstructure calls a hook per nested value; this writes the
same JSON from one expression per class (a test holds it to what cattrs' own
``make_dict_unstructure_fn`` makes of the class). Built lazily, per class, by
the converter's hook factory (:mod:`batchfsm._converter`), its source
registered in :mod:`linecache`, a copy under ``tests/data/generated/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import NoneType
from typing import Any, get_args, get_origin

import attrs

from ._codegen import compile_function
from ._field_rules import is_optional
from ._model import MODEL_CLASSES, BatchError, BatchStatus

__all__ = ["make_writer", "writer_source"]


def _value_expr(t: Any, value: str, depth: int) -> str:
    """An expression giving the API JSON of ``value``, of type ``t``, inline."""
    if is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        expr = _value_expr(inner, value, depth)
        if expr == value:  # a JSON value as it is: None stays None
            return value
        if inner in MODEL_CLASSES:  # read the attribute once, not once a field
            name = value.replace(".", "_")
            expr = _value_expr(inner, name, depth)
            return f"(None if ({name} := {value}) is None else {expr})"
        return f"(None if {value} is None else {expr})"
    if t in (str, int) or get_args(t) == ("batch",):
        return value
    if t is BatchStatus:
        return f"{value}._value_"  # the plain attribute behind the .value property
    if t in MODEL_CLASSES:
        fields = attrs.fields(attrs.resolve_types(t))
        items = ", ".join(
            f"{f.name!r}: {_value_expr(f.type, f'{value}.{f.name}', depth)}"
            for f in fields
        )
        return f"{{{items}}}"
    if get_args(t) == (BatchError, ...):
        item = f"e{depth}"
        each = _value_expr(BatchError, item, depth + 1)
        return f"[{each} for {item} in {value}]"
    if get_origin(t) is Mapping:
        # Batch holds metadata as a read-only proxy of its own dict: the proxy's
        # copy() is that dict's copy, several times cheaper than dict(proxy).
        return f"{value}.copy()"
    raise TypeError(f"no JSON rule for {t!r}")


def writer_source(cls: type) -> list[str]:
    """The source of ``write_<cls>(b)``: one dict display, keys in API order."""
    fields = attrs.fields(attrs.resolve_types(cls))
    items = [
        f"        {f.name!r}: {_value_expr(f.type, 'b.' + f.name, 0)}," for f in fields
    ]
    return [f"def write_{cls.__name__}(b):", "    return {", *items, "    }"]


def make_writer(cls: type) -> Callable[[Any], dict[str, Any]]:
    """Compile the writer of ``cls`` (see :func:`writer_source`)."""
    name = f"write_{cls.__name__}"
    return compile_function(name, writer_source(cls), {})
