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
    METADATA_MAX_KEY_LENGTH,
    METADATA_MAX_PAIRS,
    METADATA_MAX_VALUE_LENGTH,
    MODEL_CLASSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchStatus,
)
from ._twins import OPEN

__all__ = ["RejectedError", "make_fast_gear", "unstructure_batch"]


class RejectedError(Exception):
    """The fast gear found a problem; the detailed gear will say which."""


def _leaf_check(
    t: Any, owner: type, indent: str, engine: bool, strict: bool, prefix: str
) -> list[str]:
    """Lines checking (and converting in place) the value ``v`` of type ``t``."""
    if is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        return [
            f"{indent}if v is not None:",
            *_leaf_check(inner, owner, indent + "    ", engine, strict, prefix),
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
    if t in MODEL_CLASSES:  # inline: a call per nested object is dear
        return _block(t, strict, engine, prefix, indent)
    if owner is BatchErrors and get_args(t) == (BatchError, ...):
        return [
            f"{indent}if v.__class__ is not list:",
            f"{indent}    raise RejectedError",
            f"{indent}v = tuple([_structure_BatchError(item) for item in v])",
        ]
    if owner is Batch and get_origin(t) is Mapping:  # metadata, as the model does
        return _metadata_check(indent, engine)
    raise TypeError(f"no fast-gear rule for {owner.__name__}: {t!r}")


def _metadata_check(indent: str, engine: bool) -> list[str]:
    """Lines telling good metadata ``v`` from bad, inline, and freezing it.

    The very limits :func:`batchfsm._model.metadata_problems` words, without its
    call and its list (a tenth of the whole parse, for two pairs). The engine's
    keys are always str and its text never holds a lone surrogate.
    """
    i = indent
    pair = [
        "x.__class__ is not str",
        "len(k) > _METADATA_MAX_KEY_LENGTH",
        "len(x) > _METADATA_MAX_VALUE_LENGTH",
    ]
    if not engine:
        pair = [
            "k.__class__ is not str",
            *pair,
            "not (k.isascii() or _is_text(k))",
            "not (x.isascii() or _is_text(x))",
        ]
    return [
        f"{i}if v.__class__ is not dict or len(v) > _METADATA_MAX_PAIRS:",
        f"{i}    raise RejectedError",
        f"{i}for k, x in v.items():",
        f"{i}    if {' or '.join(pair)}:",
        f"{i}        raise RejectedError",
        # A document the engine just parsed is ours alone: no copy needed.
        f"{i}v = _MappingProxyType({'v' if engine else 'v.copy()'})",
    ]


# The model's own converters and validators that the fast gear does the work of;
# any other one would be skipped by writing slots directly, so it is refused.
_FOLDED = {
    (Batch, "object"),  # the 'batch' tag rule
    (Batch, "status"),  # _STATUSES gives the member
    (Batch, "metadata"),  # checked, copied and made read-only
    (BatchErrors, "data"),  # made a tuple
}


def _block(
    cls: type, strict: bool, engine: bool, prefix: str, indent: str
) -> list[str]:
    """Lines turning the document ``v`` into an instance of ``cls``, left in ``v``.

    Locals are named after ``prefix`` (the path of the value), so that a block
    inlined for a nested object leaves its parent's locals alone.
    """
    i, o, n = indent, f"{prefix}o", f"{prefix}n"
    lines = [
        f"{i}{o} = v",
        # The engine makes only dicts; a caller may pass any Mapping.
        f"{i}if {o}.__class__ is not dict:"
        if engine
        else f"{i}if {o}.__class__ is not dict and not isinstance({o}, _Mapping):",
        f"{i}    raise RejectedError",
    ]
    fields = attrs.fields(attrs.resolve_types(cls))
    if strict:
        lines += [
            f"{i}if not {o}.keys() <= _KNOWN_{cls.__name__}:",
            f"{i}    raise RejectedError",
        ]
    # An API answer carries every key: one itemgetter call reads them all. A
    # document that leaves keys out reads them one by one, with the defaults.
    taken = [f"{prefix}v_{field.name}" for field in fields]
    lines += [
        f"{i}try:",  # of one key, itemgetter gives the value itself: the same line
        f"{i}    {', '.join(taken)} = _ALL_{cls.__name__}({o})",
        f"{i}except KeyError:",
    ]
    for field, name in zip(fields, taken, strict=True):
        if field.default is attrs.NOTHING:
            lines.append(f"{i}    {name} = {o}[{field.name!r}]")
        else:
            # A document that leaves BatchErrors.object out has none (see
            # _require_mapping), whatever the class's default for people.
            default = None if cls is BatchErrors else field.default
            lines.append(f"{i}    {name} = {o}.get({field.name!r}, {default!r})")
    # An open twin's plain slot stores, then one ``__class__`` assignment, beat
    # the frozen class's slot descriptors (a call per field) from one field on.
    lines.append(f"{i}{n} = _new(_Open{cls.__name__})")
    for field, name in zip(fields, taken, strict=True):
        has_hooks = field.converter is not None or field.validator is not None
        if has_hooks and (cls, field.name) not in _FOLDED:
            raise TypeError(f"{cls.__name__}.{field.name} has a hook the gear skips")
        lines.append(f"{i}v = {name}")
        nested = f"{prefix}{field.name}_"
        lines += _leaf_check(field.type, cls, i, engine, strict, nested)
        lines.append(f"{i}{n}.{field.name} = v")
    lines.append(f"{i}{n}.__class__ = {cls.__name__}")
    lines.append(f"{i}v = {n}")
    return lines


def _fast_source(cls: type, strict: bool, engine: bool) -> list[str]:
    """The source of ``structure_<cls>(v)``: the instance, or RejectedError.

    With ``engine``, the document comes from the JSON engine, which has already
    refused what its rules say it refuses (lone surrogates).
    """
    body = _block(cls, strict, engine, "", "    ")
    return [f"def structure_{cls.__name__}(v):", *body, "    return v"]


def make_fast_gear(strict: bool, engine: bool) -> Callable[[Mapping[str, Any]], Batch]:
    namespace: dict[str, Any] = {
        **LEAF_NAMESPACE,
        "RejectedError": RejectedError,
        "_Mapping": Mapping,
        "_new": object.__new__,
        "_MappingProxyType": MappingProxyType,
        "_METADATA_MAX_PAIRS": METADATA_MAX_PAIRS,
        "_METADATA_MAX_KEY_LENGTH": METADATA_MAX_KEY_LENGTH,
        "_METADATA_MAX_VALUE_LENGTH": METADATA_MAX_VALUE_LENGTH,
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
        if inner in MODEL_CLASSES:  # read the attribute once, not once a field
            name = value.replace(".", "_")
            expr = _unstructure_expr(inner, name, depth)
            return f"(None if ({name} := {value}) is None else {expr})"
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
        # Batch holds metadata as a read-only proxy of its own dict: the proxy's
        # copy() is that dict's copy, several times cheaper than dict(proxy).
        return f"{value}.copy()"
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
