"""The fast parse of a Batch document: straight-line code generated per class.

cattrs' generated code calls one hook per field (each a Python call, and
Optional[...] a second one), gathers keyword arguments and then runs the
model's ``__init__``, whose converters check and copy metadata a second time:
about 1.5x pydantic-core's time for a full Batch. For the common case, a
document with nothing wrong, this parse instead tests each value inline and
fills an unfrozen instance (:mod:`batchfsm._unfrozen`). It only tells good from
bad: on anything unusual it raises :class:`RefusedError` and the detailed parse (the
rules of :mod:`batchfsm._field_rules` run by cattrs) decides, with words and
paths. A property test holds the two to the same verdicts and results.

The functions are built lazily, per class, by the converter's hook factory
(:mod:`batchfsm._converter`); their source is registered in :mod:`linecache`
(``inspect.getsource`` shows it), and ``tests/data/generated/`` holds a copy
that a test compares (regenerate: ``python -m tests.generated_sources``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from types import MappingProxyType, NoneType
from typing import Any, get_args, get_origin

import attrs

from ._codegen import compile_function
from ._field_rules import BATCH_TAG, INT_MAX, STATUS_BY_VALUE, is_batch_tag, is_optional
from ._model import (
    METADATA_MAX_KEY_LENGTH,
    METADATA_MAX_PAIRS,
    METADATA_MAX_VALUE_LENGTH,
    MODEL_CLASSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchStatus,
    is_text,
)
from ._unfrozen import UNFROZEN

__all__ = ["RefusedError", "make_parser", "parser_source", "refuse_skipped_hooks"]


class RefusedError(Exception):
    """The fast parse found something unusual; the detailed parse will judge it."""


#: Per leaf type: an expression true of a value ``v`` its rule in
#: :mod:`batchfsm._field_rules` accepts, and (engine) the same for a value the
#: JSON engine made, which holds no lone surrogate.
_ACCEPTS: dict[Any, tuple[str, str]] = {
    str: ("v.__class__ is str and (v.isascii() or _is_text(v))", "v.__class__ is str"),
    int: (f"v.__class__ is int and 0 <= v <= {INT_MAX}",) * 2,
    BatchStatus: ("v.__class__ is str and v in _STATUSES",) * 2,
    BATCH_TAG: ("v == 'batch' and v.__class__ is str",) * 2,
}
_How = tuple[bool, bool]  # (strict, engine)
_RESULTS: dict[Any, str] = {BatchStatus: "v = _STATUSES[v]"}
# The model's own converters and validators that this parse does the work of;
# any other one would be skipped by writing slots directly, so it is refused.
_FOLDED = {
    (Batch, "object"),  # the 'batch' tag rule
    (Batch, "status"),  # _STATUSES gives the member
    (Batch, "metadata"),  # checked, copied and made read-only
    (BatchErrors, "data"),  # made a tuple
}


def refuse_skipped_hooks(cls: type, field: attrs.Attribute[Any]) -> None:
    """Refuse a field of ``cls`` whose converter or validator a parse would skip.

    A generated parse (this one, or :mod:`._json_text`'s) writes slots
    directly: only the hooks it does the work of (``_FOLDED``) may be there.
    """
    has_hooks = field.converter is not None or field.validator is not None
    if has_hooks and (cls, field.name) not in _FOLDED:
        raise TypeError(f"{cls.__name__}.{field.name} has a hook the parse skips")


def _value_lines(t: Any, owner: type, i: str, how: _How, prefix: str) -> list[str]:
    """Lines testing (and converting in place) the value ``v`` of type ``t``."""
    engine = how[1]
    if is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        deeper = _value_lines(inner, owner, i + "    ", how, prefix)
        return [f"{i}if v is not None:", *deeper]
    leaf = BATCH_TAG if is_batch_tag(t) else t
    if leaf in _ACCEPTS:
        test = _ACCEPTS[leaf][engine]
        result = [f"{i}{_RESULTS[leaf]}"] if leaf in _RESULTS else []
        return [f"{i}if not ({test}):", f"{i}    raise RefusedError", *result]
    if t in MODEL_CLASSES:  # inline: a call per nested object is dear
        return _object_lines(t, how, prefix, i)
    if owner is BatchErrors and get_args(t) == (BatchError, ...):
        return [
            f"{i}if v.__class__ is not list:",
            f"{i}    raise RefusedError",
            f"{i}v = tuple([_parse_BatchError(item) for item in v])",
        ]
    if owner is Batch and get_origin(t) is Mapping:  # metadata, as the model holds it
        return _metadata_lines(i, engine)
    raise TypeError(f"no fast rule for {owner.__name__}: {t!r}")


def _metadata_lines(i: str, engine: bool) -> list[str]:
    """Lines accepting metadata ``v`` within the API's limits, copied, read-only.

    The limits of :func:`batchfsm._model.metadata_problems`, inline: its call and
    its list cost a tenth of a whole parse. Text the engine parsed holds str
    keys and no lone surrogate, and its dict is ours alone (no copy needed).
    """
    bad = [
        "x.__class__ is not str",
        f"len(k) > {METADATA_MAX_KEY_LENGTH}",
        f"len(x) > {METADATA_MAX_VALUE_LENGTH}",
    ]
    if not engine:
        bad = ["k.__class__ is not str", *bad, "not (k.isascii() or _is_text(k))"]
        bad.append("not (x.isascii() or _is_text(x))")
    return [
        f"{i}if v.__class__ is not dict or len(v) > {METADATA_MAX_PAIRS}:",
        f"{i}    raise RefusedError",
        f"{i}for k, x in v.items():",
        f"{i}    if {' or '.join(bad)}:",
        f"{i}        raise RefusedError",
        f"{i}v = _MappingProxyType({'v' if engine else 'v.copy()'})",
    ]


def _object_lines(cls: type, how: _How, prefix: str, i: str) -> list[str]:
    """Lines turning the document ``v`` into an instance of ``cls``, left in ``v``.

    Locals are named after ``prefix`` (the path of the value), so that the lines
    inlined for a nested object leave its parent's locals alone.
    """
    o, n = f"{prefix}o", f"{prefix}n"
    fields = attrs.fields(attrs.resolve_types(cls))
    taken = [f"{prefix}v_{field.name}" for field in fields]
    # Only dicts here: any other Mapping goes to the detailed parse.
    lines = [
        f"{i}{o} = v",
        f"{i}if {o}.__class__ is not dict:",
        f"{i}    raise RefusedError",
    ]
    if how[0]:  # strict: no key the class lacks
        known = f"_KNOWN_{cls.__name__}"
        lines += [f"{i}if not {o}.keys() <= {known}:", f"{i}    raise RefusedError"]
    # An API answer carries every key: one itemgetter call reads them all. A
    # document that leaves keys out reads them one by one, with the defaults.
    lines += [f"{i}try:", f"{i}    {', '.join(taken)} = _ALL_{cls.__name__}({o})"]
    lines.append(f"{i}except KeyError:")
    for field, name in zip(fields, taken, strict=True):
        if field.default is attrs.NOTHING:
            lines.append(f"{i}    {name} = {o}[{field.name!r}]")
        else:
            # A document that leaves BatchErrors.object out has none, whatever
            # the class's default for people building one.
            default = None if cls is BatchErrors else field.default
            lines.append(f"{i}    {name} = {o}.get({field.name!r}, {default!r})")
    # Plain slot stores, then one ``__class__`` assignment, beat the frozen
    # class's slot descriptors (a call per field) from one field on.
    lines.append(f"{i}{n} = _new(_Unfrozen{cls.__name__})")
    for field, name in zip(fields, taken, strict=True):
        refuse_skipped_hooks(cls, field)
        lines.append(f"{i}v = {name}")
        lines += _value_lines(field.type, cls, i, how, f"{prefix}{field.name}_")
        lines.append(f"{i}{n}.{field.name} = v")
    return [*lines, f"{i}{n}.__class__ = {cls.__name__}", f"{i}v = {n}"]


def _function_name(cls: type, strict: bool, engine: bool) -> str:
    return (
        f"parse_{cls.__name__}"
        + ("_strict" if strict else "")
        + ("_text" if engine else "")
    )


def parser_source(cls: type, strict: bool, engine: bool) -> list[str]:
    """The source of the fast parse of ``cls``: ``(document) -> instance``.

    ``strict`` refuses keys a class lacks (the detailed parse names them);
    ``engine`` trusts the JSON engine's text rules.
    """
    name = _function_name(cls, strict, engine)
    body = _object_lines(cls, (strict, engine), "", "    ")
    return [f"def {name}(v):", *body, "    return v"]


def make_parser(cls: type, strict: bool, engine: bool) -> Callable[[Any], Any]:
    """Compile the fast parse of ``cls`` (see :func:`parser_source`)."""
    namespace: dict[str, Any] = {
        "RefusedError": RefusedError,
        "_new": object.__new__,
        "_MappingProxyType": MappingProxyType,
        "_STATUSES": STATUS_BY_VALUE,
        "_is_text": is_text,
    }
    for model in MODEL_CLASSES:
        names = [field.name for field in attrs.fields(model)]
        namespace[model.__name__] = model
        namespace[f"_Unfrozen{model.__name__}"] = UNFROZEN[model]
        namespace[f"_ALL_{model.__name__}"] = itemgetter(*names)
        namespace[f"_KNOWN_{model.__name__}"] = frozenset(names)
    if cls is BatchErrors or cls is Batch:  # the error list calls the item's parse
        namespace["_parse_BatchError"] = make_parser(BatchError, strict, engine)
    name = _function_name(cls, strict, engine)
    return compile_function(name, parser_source(cls, strict, engine), namespace)
