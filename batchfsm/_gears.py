"""The fast gears: straight-line code generated from the model.

cattrs' generated code calls one hook per field (each a Python call, and
Optional[...] a second one), gathers keyword arguments and then runs the
model's __init__, whose converters check and copy metadata a second time.
For the common case, a document with nothing wrong, the fast gear instead
inlines the very same leaf rules (:mod:`batchfsm._leaves`) and fills an open
twin of each class (:mod:`batchfsm._twins`). It only has to tell good from bad:
on any failure it raises and the detailed gear runs to say what is wrong, with
paths. A test holds the two gears to the same verdicts and the same results.
The way out, ``to_dict``, is one generated dict display.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from types import MappingProxyType, NoneType
from typing import Any, get_args, get_origin

import attrs

from ._codegen import compile_function
from ._leaves import (
    BATCH_TAG,
    LEAF_NAMESPACE,
    LEAF_RESULTS,
    LEAF_RULES,
    is_batch_tag,
    is_optional,
    leaf_test,
)
from ._model import (
    MODEL_CLASSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchStatus,
    metadata_problems,
)
from ._twins import OPEN

__all__ = ["RejectedError", "make_fast_gear", "unstructure_batch"]


class RejectedError(Exception):
    """The fast gear found a problem; the detailed gear will say which."""


def _leaf_check(t: Any, owner: type, indent: str, engine: bool) -> list[str]:
    """Lines checking (and converting in place) the value ``v`` of type ``t``."""
    if is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        return [
            f"{indent}if v is not None:",
            *_leaf_check(inner, owner, indent + "    ", engine),
        ]
    leaf = BATCH_TAG if is_batch_tag(t) else t
    if leaf in LEAF_RULES:
        lines = [
            f"{indent}if not ({leaf_test(leaf, engine)}):",
            f"{indent}    raise RejectedError",
        ]
        if leaf in LEAF_RESULTS:
            lines.append(f"{indent}v = {LEAF_RESULTS[leaf]}")
        return lines
    if t in MODEL_CLASSES:
        return [f"{indent}v = _structure_{t.__name__}(v)"]
    if owner is BatchErrors and get_args(t) == (BatchError, ...):
        return [
            f"{indent}if v.__class__ is not list:",
            f"{indent}    raise RejectedError",
            f"{indent}v = tuple([_structure_BatchError(item) for item in v])",
        ]
    if owner is Batch and get_origin(t) is Mapping:  # metadata, as the model does
        return [
            f"{indent}if v.__class__ is not dict or _metadata_problems(v):",
            f"{indent}    raise RejectedError",
            f"{indent}v = _MappingProxyType(dict(v))",
        ]
    raise TypeError(f"no fast-gear rule for {owner.__name__}: {t!r}")


# The model's own converters and validators that the fast gear does the work of;
# any other one would be skipped by writing slots directly, so it is refused.
_FOLDED = {
    (Batch, "object"),  # the 'batch' tag rule
    (Batch, "status"),  # _STATUSES gives the member
    (Batch, "metadata"),  # checked, copied and made read-only
    (BatchErrors, "data"),  # made a tuple
}


def _fast_source(cls: type, strict: bool, engine: bool) -> list[str]:
    """The source of ``structure_<cls>(o)``: the instance, or RejectedError.

    With ``engine``, the document comes from the JSON engine, which has already
    refused what its rules say it refuses (lone surrogates).
    """
    lines = [
        f"def structure_{cls.__name__}(o):",
        "    if o.__class__ is not dict and not isinstance(o, _Mapping):",
        "        raise RejectedError",
    ]
    fields = attrs.fields(attrs.resolve_types(cls))
    if strict:
        lines += [
            f"    if not o.keys() <= _KNOWN_{cls.__name__}:",
            "        raise RejectedError",
        ]
    # An API answer carries every key: one itemgetter call reads them all. A
    # document that leaves keys out reads them one by one, with the defaults.
    names = [field.name for field in fields]
    taken = ", ".join(f"v_{name}" for name in names) + ("," if len(names) == 1 else "")
    lines += [
        "    try:",
        f"        {taken} = _ALL_{cls.__name__}(o)" + ("," if len(names) == 1 else ""),
        "    except KeyError:",
    ]
    if len(names) == 1:  # itemgetter of one key gives the value, not a tuple
        lines[-2] = f"        {taken} = (_ALL_{cls.__name__}(o),)"
    for field in fields:
        if field.default is attrs.NOTHING:
            lines.append(f"        v_{field.name} = o[{field.name!r}]")
        else:
            # A document that leaves BatchErrors.object out has none (see
            # _require_mapping), whatever the class's default for people.
            default = None if cls is BatchErrors else field.default
            lines.append(f"        v_{field.name} = o.get({field.name!r}, {default!r})")
    lines.append(f"    n = _new(_Open{cls.__name__})")
    for field in fields:
        has_hooks = field.converter is not None or field.validator is not None
        if has_hooks and (cls, field.name) not in _FOLDED:
            raise TypeError(f"{cls.__name__}.{field.name} has a hook the gear skips")
        lines.append(f"    v = v_{field.name}")
        lines += [c[4:] for c in _leaf_check(field.type, cls, "        ", engine)]
        lines.append(f"    n.{field.name} = v")
    lines += [f"    n.__class__ = {cls.__name__}", "    return n"]
    return lines


def make_fast_gear(strict: bool, engine: bool) -> Callable[[Mapping[str, Any]], Batch]:
    namespace: dict[str, Any] = {
        **LEAF_NAMESPACE,
        "RejectedError": RejectedError,
        "_Mapping": Mapping,
        "_new": object.__new__,
        "_MappingProxyType": MappingProxyType,
        "_metadata_problems": metadata_problems,
    }
    for cls in reversed(MODEL_CLASSES):  # leaves first: parents call them
        names = [field.name for field in attrs.fields(cls)]
        namespace[cls.__name__] = cls
        namespace[f"_Open{cls.__name__}"] = OPEN[cls]
        namespace[f"_KNOWN_{cls.__name__}"] = frozenset(names)
        namespace[f"_ALL_{cls.__name__}"] = itemgetter(*names)
        gear = ("strict" if strict else "lenient") + (", engine" if engine else "")
        function_name = f"structure_{cls.__name__}"
        namespace[f"_{function_name}"] = compile_function(
            function_name,
            _fast_source(cls, strict, engine),
            namespace,
            label=f"{function_name} ({gear})",
        )
    fast: Callable[[Mapping[str, Any]], Batch] = namespace["_structure_Batch"]
    return fast


def _unstructure_expr(t: Any, value: str, depth: int) -> str:
    """An expression giving the API JSON of ``value``, of type ``t``, inline."""
    if is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        expr = _unstructure_expr(inner, value, depth)
        if expr == value:  # a JSON value as it is: None stays None
            return value
        return f"(None if {value} is None else {expr})"
    if t in (str, int) or get_args(t) == ("batch",):
        return value
    if t is BatchStatus:
        return f"{value}._value_"  # the plain attribute behind the .value property
    if t in MODEL_CLASSES:
        fields = attrs.fields(attrs.resolve_types(t))
        items = ", ".join(
            f"{f.name!r}: {_unstructure_expr(f.type, f'{value}.{f.name}', depth)}"
            for f in fields
        )
        return f"{{{items}}}"
    if get_args(t) == (BatchError, ...):
        item = f"e{depth}"
        each = _unstructure_expr(BatchError, item, depth + 1)
        return f"[{each} for {item} in {value}]"
    if get_origin(t) is Mapping:
        return f"dict({value})"
    raise TypeError(f"no unstructure rule for {t!r}")


def _unstructure_source() -> list[str]:
    """The source of ``unstructure_Batch(b)``: one dict display, keys in API order."""
    fields = attrs.fields(attrs.resolve_types(Batch))
    items = [
        f"        {f.name!r}: {_unstructure_expr(f.type, 'b.' + f.name, 0)},"
        for f in fields
    ]
    return ["def unstructure_Batch(b):", "    return {", *items, "    }"]


# cattrs' generated unstructure calls a hook per nested value; this is the same
# JSON from one generated expression (a test holds it to the public converter's).
unstructure_batch: Callable[[Batch], dict[str, Any]] = compile_function(
    "unstructure_Batch", _unstructure_source(), {}
)
