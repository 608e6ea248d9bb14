"""The fast parse of Batch text: straight into the classes, no dict between.

Parsing text to a dict (orjson) and then the dict into the classes costs two
passes, a dict per JSON object and a Python test per value: about 0.9x
pydantic-core's ``model_validate_json`` for a full Batch. Here msgspec (C)
decodes the text into typed structs that state the model's rules (exact
types, ints in 0..2**63-1, the statuses, the ``"batch"`` tag, the metadata
limits), derived from the model's fields, and straight-line generated code
then fills unfrozen instances from the structs (:mod:`batchfsm._unfrozen`).

Like the dict's fast parse (:mod:`batchfsm._json_parse`) it only tells good
from bad, and is stricter than the rules where that is cheaper: every struct
refuses keys the model lacks (msgspec would skip an unknown value without
judging all of it as the JSON engine does: invalid UTF-8, numbers beyond a
double's range, any depth), and a key given twice with an odd first value is
refused. On any refusal (None) :func:`batchfsm.loads` parses the text the
converter's way (orjson, then the cattrs hooks of :mod:`batchfsm._converter`),
which accepts what the rules accept and words every problem, so that errors,
messages and verdicts are exactly those of that way. A property test holds
the two to the same verdicts and results.

The code is generated at first use and registered in :mod:`linecache`, as
:mod:`batchfsm._json_parse`'s is; ``tests/data/generated/`` holds a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType, NoneType
from typing import Annotated, Any, Literal, get_args, get_origin

import attrs
import msgspec

from ._codegen import compile_function
from ._field_rules import BATCH_TAG, INT_MAX, is_batch_tag, is_optional
from ._json_parse import refuse_skipped_hooks
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
from ._unfrozen import UNFROZEN

__all__ = ["make_text_parser", "struct_of", "text_parser_source"]

_Count = Annotated[int, msgspec.Meta(ge=0, le=INT_MAX)]
_Metadata = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=METADATA_MAX_KEY_LENGTH)],
        Annotated[str, msgspec.Meta(max_length=METADATA_MAX_VALUE_LENGTH)],
    ],
    msgspec.Meta(max_length=METADATA_MAX_PAIRS),
]
#: Per leaf type of the model, the type msgspec checks it as.
_LEAVES: dict[Any, Any] = {
    str: str,
    int: _Count,
    BatchStatus: BatchStatus,  # msgspec gives the member of a value
    BATCH_TAG: Literal["batch"],
}
_STRUCTS: dict[type, type[msgspec.Struct]] = {}


def _struct_type(t: Any, owner: type) -> Any:
    """The msgspec type of the model's field type ``t``."""
    if is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        return _struct_type(inner, owner) | None
    leaf = BATCH_TAG if is_batch_tag(t) else t
    if leaf in _LEAVES:
        return _LEAVES[leaf]
    if t in MODEL_CLASSES:
        return struct_of(t)
    if owner is BatchErrors and get_args(t) == (BatchError, ...):
        return list[struct_of(BatchError)]  # type: ignore[misc]
    if owner is Batch and get_origin(t) is Mapping:
        return _Metadata
    raise TypeError(f"no text rule for {owner.__name__}: {t!r}")


def struct_of(cls: type) -> type[msgspec.Struct]:
    """The msgspec struct of the model class ``cls``: its fields and their rules.

    A field the model gives a default is optional, and None when left out (a
    document that leaves ``BatchErrors.object`` out has none, whatever the
    class's default for people building one), except the Batch's ``object``,
    which a Batch document must carry.
    """
    if cls in _STRUCTS:
        return _STRUCTS[cls]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field in attrs.fields(attrs.resolve_types(cls)):
        kind = _struct_type(field.type, cls)
        required = field.default is attrs.NOTHING or is_batch_tag(field.type)
        fields.append((field.name, kind) if required else (field.name, kind, None))
    struct = msgspec.defstruct(
        f"{cls.__name__}Text",
        fields,
        kw_only=True,  # required fields may follow optional ones, as in the API
        forbid_unknown_fields=True,
        # Short-lived and acyclic: no need to track them for the collector.
        gc=False,
        module=__name__,
    )
    _STRUCTS[cls] = struct
    return struct


def _value_lines(t: Any, owner: type, i: str, prefix: str) -> list[str]:
    """Lines turning the checked struct value ``v`` into what the model holds."""
    if is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        deeper = _value_lines(inner, owner, i + "    ", prefix)
        return [f"{i}if v is not None:", *deeper] if deeper else []
    if t in MODEL_CLASSES:  # inline: a call per nested object is dear
        return _object_lines(t, prefix, i)
    if owner is BatchErrors and get_args(t) == (BatchError, ...):
        return [f"{i}v = tuple([_build_BatchError(item) for item in v])"]
    if owner is Batch and get_origin(t) is Mapping:
        # The metadata dict is msgspec's, ours alone: made read-only, no copy.
        return [f"{i}v = _MappingProxyType(v)"]
    return []  # a leaf: msgspec checked it and made what the model holds


def _object_lines(cls: type, prefix: str, i: str) -> list[str]:
    """Lines turning the struct ``v`` into an instance of ``cls``, left in ``v``.

    Locals are named after ``prefix`` (the path of the value), so that the lines
    inlined for a nested object leave its parent's locals alone.
    """
    s, n = f"{prefix}s", f"{prefix}n"
    lines = [f"{i}{s} = v", f"{i}{n} = _new(_Unfrozen{cls.__name__})"]
    for field in attrs.fields(attrs.resolve_types(cls)):
        refuse_skipped_hooks(cls, field)
        deeper = _value_lines(field.type, cls, i, f"{prefix}{field.name}_")
        if deeper:
            lines += [f"{i}v = {s}.{field.name}", *deeper, f"{i}{n}.{field.name} = v"]
        else:
            lines.append(f"{i}{n}.{field.name} = {s}.{field.name}")
    return [*lines, f"{i}{n}.__class__ = {cls.__name__}", f"{i}v = {n}"]


def text_parser_source(cls: type) -> list[str]:
    """The source of the fast text parse of ``cls``: ``(text) -> instance``.

    It answers None for any text msgspec refuses (cheaper than raising: a
    document with a key the model lacks is refused, and then parsed again).
    """
    name = f"parse_{cls.__name__}_from_text"
    return [
        f"def {name}(text):",
        "    try:",
        "        v = _decode(text)",
        "    except Exception:",  # bad text, a wrong value, not even text
        "        return None",
        *_object_lines(cls, "", "    "),
        "    return v",
    ]


def _build_source(cls: type) -> list[str]:
    """The source of ``(struct) -> instance``, for the items of a list."""
    name = f"_build_{cls.__name__}"
    return [f"def {name}(v):", *_object_lines(cls, "", "    "), "    return v"]


def make_text_parser(cls: type) -> Callable[[str | bytes], Any | None]:
    """Compile the fast text parse of ``cls`` (see :func:`text_parser_source`)."""
    namespace: dict[str, Any] = {
        "_decode": msgspec.json.Decoder(struct_of(cls)).decode,
        "_new": object.__new__,
        "_MappingProxyType": MappingProxyType,
    }
    for model in MODEL_CLASSES:
        namespace[model.__name__] = model
        namespace[f"_Unfrozen{model.__name__}"] = UNFROZEN[model]
    if cls is BatchErrors or cls is Batch:  # the error list builds each item
        item = _build_source(BatchError)
        namespace["_build_BatchError"] = compile_function(
            "_build_BatchError", item, namespace, label="build_BatchError_from_text"
        )
    name = f"parse_{cls.__name__}_from_text"
    return compile_function(name, text_parser_source(cls), namespace)
