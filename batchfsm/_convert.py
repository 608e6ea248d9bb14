"""API JSON in and out, through one configured cattrs converter.

Structuring is strict about types (an ``int`` field takes a JSON integer, not
``"10"``, ``10.0`` or ``true``) and lenient about presence (optional fields may be
missing, unknown keys are ignored unless ``strict=True``). Lifecycle consistency
is not judged here: that is :func:`batchfsm.check`'s job, so that a wrong
server's answer can still be parsed and then judged rule by rule.

Parsing runs in two gears. The fast gear is cattrs' generated code without
detailed validation; only when it fails does the detailed gear run again over the
same document to collect *every* problem with its JSON path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from operator import itemgetter
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import attrs
from cattrs import Converter
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._codegen import compile_function
from ._errors import SchemaError
from ._json import DecodeError as _DecodeError
from ._json import EncodeError as _EncodeError
from ._json import decode as _decode
from ._json import encode as _encode
from ._model import (
    MODEL_CLASSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchStatus,
    is_text,
    metadata_problems,
)
from ._twins import OPEN

__all__ = ["converter", "dumps", "dumps_bytes", "from_dict", "loads", "to_dict"]

_MODEL_CLASSES = MODEL_CLASSES
_STATUS_BY_VALUE = {status.value: status for status in BatchStatus}


class _InvalidError(Exception):
    """A value's problems as ``(path relative to the value, message)`` pairs."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        super().__init__(*problems)
        self.problems = problems


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(what: str, value: Any) -> _InvalidError:
    return _InvalidError(("", f"expected {what}, got {_show(value)}"))


# -- leaf rules: exact JSON types, no coercion, the API's ranges -------------------
#
# Each rule is stated once, as an expression true of a good value ``v`` and the
# words for a bad one. The detailed gear's hooks and the fast gear's inline
# checks below are both generated from these declarations.

#: The API's integers are int64: nothing at or above 2**63.
INT_MAX = 2**63 - 1


@attrs.frozen
class _Rule:
    test: str  # an expression over ``v``, true when the value passes
    message: str  # an f-string body over ``v`` saying what is wrong
    engine_checked: bool = False  # text parsed by the JSON engine always passes


_BATCH_TAG = Literal["batch"]

_LEAF_RULES: dict[Any, tuple[_Rule, ...]] = {
    str: (
        _Rule("v.__class__ is str", "expected str, got {_show(v)}"),
        # Half a character: no JSON engine writes it, so no API sends it.
        _Rule(
            "v.isascii() or _is_text(v)",
            "a lone surrogate in {_show(v)}",
            engine_checked=True,
        ),
    ),
    int: (
        _Rule("v.__class__ is int", "expected int, got {_show(v)}"),
        _Rule("v >= 0", "expected a non-negative int, got {v}"),
        _Rule(f"v <= {INT_MAX}", "expected an int below 2**63, got {v}"),
    ),
    BatchStatus: (
        _Rule(
            "v.__class__ is str and v in _STATUSES",
            "expected one of {', '.join(_STATUSES)}; got {_show(v)}",
        ),
    ),
    _BATCH_TAG: (
        _Rule(
            "v.__class__ is str and v == 'batch'", "expected 'batch', got {_show(v)}"
        ),
    ),
}
#: What a leaf that passed becomes, when not the JSON value itself.
_LEAF_RESULTS: dict[Any, str] = {BatchStatus: "_STATUSES[v]"}
_LEAF_NAMESPACE: dict[str, Any] = {
    "_STATUSES": _STATUS_BY_VALUE,
    "_is_text": is_text,
    "_show": _show,
}


def _leaf_test(t: Any, engine: bool) -> str:
    """One expression: does ``v`` pass every rule of ``t``?"""
    tests = [r.test for r in _LEAF_RULES[t] if not (engine and r.engine_checked)]
    return " and ".join(f"({test})" for test in tests)


def _leaf_name(t: Any) -> str:
    return "batch_tag" if t is _BATCH_TAG else t.__name__


def _leaf_hook(t: Any) -> Callable[[Any, Any], Any]:
    """The detailed gear's hook for ``t``: the value, or why it is refused."""
    name = f"structure_{_leaf_name(t)}"
    lines = [f"def {name}(v, _):"]
    for rule in _LEAF_RULES[t]:
        lines += [
            f"    if not ({rule.test}):",
            f"        raise _InvalidError(('', f{rule.message!r}))",
        ]
    lines.append(f"    return {_LEAF_RESULTS.get(t, 'v')}")
    namespace = {**_LEAF_NAMESPACE, "_InvalidError": _InvalidError}
    return compile_function(name, lines, namespace, label=f"{name} (detailed)")


def _structure_metadata(value: Any, _: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if value.__class__ is not dict:
        raise _expected("object", value)
    problems = metadata_problems(value)
    if problems:
        raise _InvalidError(*problems)
    return value


def _make_error_list_hook(
    conv: Converter,
) -> Callable[[Any, Any], tuple[BatchError, ...] | None]:
    structure_error = conv.get_structure_hook(BatchError)

    def structure_error_list(value: Any, _: Any) -> tuple[BatchError, ...] | None:
        if value is None:
            return None
        if value.__class__ is not list:
            raise _expected("array", value)
        if not conv.detailed_validation:
            return tuple([structure_error(item, BatchError) for item in value])
        items: list[BatchError] = []
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_error(item, BatchError))
            except Exception as exc:  # noqa: BLE001, PERF203 - every item is reported
                problems.extend(_problems(exc, f"[{index}]"))
        if problems:
            raise _InvalidError(*problems)
        return tuple(items)

    return structure_error_list


def _require_mapping(
    cls: type, structure: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def structure_object(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _expected(f"object ({cls.__name__})", value)
        return structure(value, cls)

    if cls is not BatchErrors:
        return structure_object

    def structure_errors(value: Any, _: Any) -> Any:
        errors = structure_object(value, _)
        # BatchErrors() defaults object to "list" for people building one; a
        # document that left it out has no object, and check() must see that.
        if "object" not in value:
            errors = attrs.evolve(errors, object=None)
        return errors

    return structure_errors


def _is_batch_tag(t: Any) -> bool:
    return t is _BATCH_TAG or get_args(t) == ("batch",)


def _is_optional(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) in (Union, UnionType) and len(args) == 2 and NoneType in args


def _make_optional_hook(t: Any, conv: Converter) -> Callable[[Any, Any], Any]:
    # cattrs' own Optional hook looks the inner type's hook up on every call; the
    # hooks are all registered before the classes are generated, so look it up once.
    inner = next(arg for arg in get_args(t) if arg is not NoneType)
    structure = conv.get_structure_hook(inner)

    def structure_optional(value: Any, _: Any) -> Any:
        return None if value is None else structure(value, inner)

    return structure_optional


# -- the converter ----------------------------------------------------------------


def _make_converter(*, detailed: bool, forbid_extra_keys: bool) -> Converter:
    conv = Converter(
        detailed_validation=detailed,
        forbid_extra_keys=forbid_extra_keys,
    )
    for leaf in (str, int, BatchStatus):
        conv.register_structure_hook(leaf, _leaf_hook(leaf))
    conv.register_unstructure_hook(BatchStatus, lambda status: status.value)
    conv.register_structure_hook_func(_is_batch_tag, _leaf_hook(_BATCH_TAG))
    conv.register_structure_hook_factory(_is_optional, _make_optional_hook)
    for cls in reversed(_MODEL_CLASSES):  # leaves first: parents look them up
        overrides: dict[str, Any] = {}
        if cls is BatchErrors:
            overrides["data"] = override(struct_hook=_make_error_list_hook(conv))
        elif cls is Batch:
            overrides["metadata"] = override(struct_hook=_structure_metadata)
        generated: Callable[[Any, Any], Any] = make_dict_structure_fn(
            cls, conv, **overrides
        )
        conv.register_structure_hook(cls, _require_mapping(cls, generated))
        conv.register_unstructure_hook(cls, _make_unstructure(cls, conv))
    return conv


def _make_unstructure(cls: type, conv: Converter) -> Callable[[Any], dict[str, Any]]:
    overrides: dict[str, Any] = {}
    if cls is BatchErrors:
        unstructure_error = conv.get_unstructure_hook(BatchError)
        overrides["data"] = override(
            unstruct_hook=lambda data: (
                None if data is None else [unstructure_error(e) for e in data]
            )
        )
    elif cls is Batch:
        overrides["metadata"] = override(
            unstruct_hook=lambda m: None if m is None else dict(m)
        )
    return make_dict_unstructure_fn(cls, conv, **overrides)


#: The configured cattrs converter, for use in other cattrs setups: strict JSON
#: types, detailed validation, unknown keys ignored. ``unstructure`` is exactly
#: :func:`to_dict`; ``structure`` raises cattrs' own errors and does not demand
#: the ``object`` key: prefer :func:`from_dict`, which gives a SchemaError.
converter = _make_converter(detailed=True, forbid_extra_keys=False)


# -- the fast gear: straight-line code generated from the model -------------------
#
# cattrs' generated code calls one hook per field (each a Python call, and
# Optional[...] a second one), gathers keyword arguments and then runs the
# model's __init__, whose converters check and copy metadata a second time.
# For the common case, a document with nothing wrong, the fast gear instead
# inlines the very same leaf rules as the hooks above and writes the slots of
# each new instance directly. It only has to tell good from bad: on any failure
# it raises and the detailed cattrs gear runs to say what is wrong, with paths.
# A test holds the two gears to the same verdicts and the same results.


class _RejectedError(Exception):
    """The fast gear found a problem; the detailed gear will say which."""


def _leaf_check(t: Any, owner: type, indent: str, engine: bool) -> list[str]:
    """Lines checking (and converting in place) the value ``v`` of type ``t``."""
    if _is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        return [
            f"{indent}if v is not None:",
            *_leaf_check(inner, owner, indent + "    ", engine),
        ]
    leaf = _BATCH_TAG if _is_batch_tag(t) else t
    if leaf in _LEAF_RULES:
        lines = [
            f"{indent}if not ({_leaf_test(leaf, engine)}):",
            f"{indent}    raise _RejectedError",
        ]
        if leaf in _LEAF_RESULTS:
            lines.append(f"{indent}v = {_LEAF_RESULTS[leaf]}")
        return lines
    if t in _MODEL_CLASSES:
        return [f"{indent}v = _structure_{t.__name__}(v)"]
    if owner is BatchErrors and get_args(t) == (BatchError, ...):
        return [
            f"{indent}if v.__class__ is not list:",
            f"{indent}    raise _RejectedError",
            f"{indent}v = tuple([_structure_BatchError(item) for item in v])",
        ]
    if owner is Batch and get_origin(t) is Mapping:  # metadata, as the model does
        return [
            f"{indent}if v.__class__ is not dict or _metadata_problems(v):",
            f"{indent}    raise _RejectedError",
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
    """The source of ``structure_<cls>(o)``: the instance, or _RejectedError.

    With ``engine``, the document comes from the JSON engine, which has already
    refused what its rules say it refuses (lone surrogates).
    """
    lines = [
        f"def structure_{cls.__name__}(o):",
        "    if o.__class__ is not dict and not isinstance(o, _Mapping):",
        "        raise _RejectedError",
    ]
    fields = attrs.fields(attrs.resolve_types(cls))
    if strict:
        lines += [
            f"    if not o.keys() <= _KNOWN_{cls.__name__}:",
            "        raise _RejectedError",
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


def _make_fast_gear(strict: bool, engine: bool) -> Callable[[Mapping[str, Any]], Batch]:
    namespace: dict[str, Any] = {
        **_LEAF_NAMESPACE,
        "_RejectedError": _RejectedError,
        "_Mapping": Mapping,
        "_new": object.__new__,
        "_MappingProxyType": MappingProxyType,
        "_metadata_problems": metadata_problems,
    }
    for cls in reversed(_MODEL_CLASSES):  # leaves first: parents call them
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


_DETAILED = {
    strict: _make_converter(detailed=True, forbid_extra_keys=strict).get_structure_hook(
        Batch
    )
    for strict in (False, True)
}
#: (strict, parsed by the engine) -> (fast gear, detailed gear).
_GEARS = {
    (strict, engine): (_make_fast_gear(strict, engine), _DETAILED[strict])
    for strict in (False, True)
    for engine in (False, True)
}


def _unstructure_expr(t: Any, value: str, depth: int) -> str:
    """An expression giving the API JSON of ``value``, of type ``t``, inline."""
    if _is_optional(t):
        inner = next(arg for arg in get_args(t) if arg is not NoneType)
        expr = _unstructure_expr(inner, value, depth)
        if expr == value:  # a JSON value as it is: None stays None
            return value
        return f"(None if {value} is None else {expr})"
    if t in (str, int) or get_args(t) == ("batch",):
        return value
    if t is BatchStatus:
        return f"{value}._value_"  # the plain attribute behind the .value property
    if t in _MODEL_CLASSES:
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
_unstructure_batch: Callable[[Batch], dict[str, Any]] = compile_function(
    "unstructure_Batch", _unstructure_source(), {}
)


# -- errors: cattrs' exception tree to (json path, message) pairs -----------------


def _join(path: str, name: str) -> str:
    if not path or name.startswith("["):
        return path + name
    return f"{path}.{name}" if name else path


def _problems(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(exc, _InvalidError):
        for sub, message in exc.problems:
            yield _join(path, sub), message
    elif isinstance(exc, ClassValidationError):
        with_notes, without_notes = exc.group_exceptions()
        for sub_exc, note in with_notes:
            yield from _problems(sub_exc, _join(path, note.name))
        for sub_exc in without_notes:
            yield from _problems(sub_exc, path)
    elif isinstance(exc, IterableValidationError):
        iter_with_notes, iter_without_notes = exc.group_exceptions()
        for sub_exc, iter_note in iter_with_notes:
            yield from _problems(sub_exc, _join(path, f"[{iter_note.index}]"))
        for sub_exc in iter_without_notes:
            yield from _problems(sub_exc, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield _join(path, key), "unknown field (strict mode)"
    elif isinstance(exc, SchemaError):  # the model's own checks, on construction
        for sub, message in exc.errors:
            yield _join(path, sub), message
    elif isinstance(exc, KeyError):
        # cattrs reads a required key with o[key]; its note already named the path.
        yield path, "required field missing"
    else:  # anything else a hook raised: its words
        yield path, str(exc)


# -- the public door ---------------------------------------------------------------


def from_dict(data: Mapping[str, Any], *, strict: bool = False) -> Batch:
    """Parse an API Batch object (a decoded JSON document) into a :class:`Batch`.

    Args:
        data: the decoded JSON object.
        strict: reject keys the Batch object does not define (by default they are
            ignored, as the API adds fields over time).

    Returns:
        The batch.

    Raises:
        SchemaError: listing every problem with its JSON path.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.from_dict({
        ...     "id": "batch_abc123", "object": "batch",
        ...     "endpoint": "/v1/chat/completions", "input_file_id": "file-abc123",
        ...     "completion_window": "24h", "status": "validating",
        ...     "created_at": 1711471533, "expires_at": 1711557933,
        ... })
        >>> b.status
        <BatchStatus.VALIDATING: 'validating'>
    """
    return _structure(data, strict, engine=False)


def _structure(data: Any, strict: bool, engine: bool) -> Batch:
    fast, detailed = _GEARS[strict, engine]
    # A dict is by far the common case; the ABC check is dear beside the parse.
    if (data.__class__ is dict or isinstance(data, Mapping)) and "object" in data:
        try:
            return fast(data)
        except Exception:  # noqa: BLE001, S110 - the detailed gear says what failed
            pass
    problems: list[tuple[str, str]] = []
    if isinstance(data, Mapping) and "object" not in data:
        problems.append(("object", "required field missing"))
    try:
        detailed(data, Batch)
    except Exception as exc:  # noqa: BLE001 - every problem is reported
        problems.extend(_problems(exc, ""))
    raise SchemaError(problems)


def to_dict(batch: Batch) -> dict[str, Any]:
    """The API JSON of ``batch``: every field present, ``None`` where unset.

    Keys follow the order of the API reference.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.loads('''{"id": "batch_1", "object": "batch", "status": "validating",
        ...   "endpoint": "/v1/embeddings", "input_file_id": "file-1",
        ...   "completion_window": "24h", "created_at": 1700000000}''')
        >>> d = bf.to_dict(b)
        >>> d["status"], d["created_at"], d["output_file_id"]
        ('validating', 1700000000, None)
    """
    return _unstructure_batch(batch)


def loads(text: str | bytes, *, strict: bool = False) -> Batch:
    r"""Parse the JSON text of an API Batch object.

    Only JSON is read: ``NaN``, ``Infinity``, lone surrogates (``"\ud800"``)
    and invalid UTF-8 are refused, as are integers out of the API's range.

    Raises:
        SchemaError: the text is not JSON, or not a valid Batch object.

    Example:
        >>> import batchfsm as bf
        >>> bf.loads("[]")
        Traceback (most recent call last):
        ...
        batchfsm.SchemaError: invalid Batch: <document>: expected object (Batch), got []
    """
    try:
        data = _decode(text)
    except _DecodeError as exc:
        problems = [("", f"not valid JSON: {exc}")]
        raise SchemaError(problems + _lenient_problems(text, strict)) from None
    return _structure(data, strict, engine=True)


def _lenient_problems(text: str | bytes, strict: bool) -> list[tuple[str, str]]:
    """The paths to blame in text the engine refused, where a lenient parse can say.

    Python's own parser reads what the engine refuses on purpose (a lone
    surrogate, ``NaN``); the detailed gear then names the fields that hold them.
    """
    try:
        data = json.loads(text)
        _structure(data, strict, engine=False)
    except SchemaError as exc:
        return exc.errors
    except (ValueError, TypeError, RecursionError):  # not JSON even to Python
        return []
    return []


def dumps(batch: Batch) -> str:
    r"""The API JSON text of ``batch``: compact, keys in API order.

    Non-ASCII characters are written as raw UTF-8, never ``\u`` escapes
    (:func:`loads` and any JSON parser read them back equal).

    Raises:
        SchemaError: a str of the batch holds a lone surrogate, which JSON
            text cannot carry (only a Batch built by hand can hold one).

    Example:
        >>> import batchfsm as bf
        >>> b = bf.loads('''{"id": "batch_1", "object": "batch", "status": "validating",
        ...   "endpoint": "/v1/embeddings", "input_file_id": "file-1",
        ...   "completion_window": "24h", "created_at": 1700000000}''')
        >>> bf.dumps(b)[:38]
        '{"id":"batch_1","object":"batch","endp'
    """
    data = _unstructure_batch(batch)
    try:
        return _encode(data).decode()
    except _EncodeError:
        raise SchemaError(_text_problems(data, "")) from None


def dumps_bytes(batch: Batch) -> bytes:
    r""":func:`dumps` as UTF-8 bytes, for HTTP bodies and files (no decoding).

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000,
        ...                  metadata={"note": "café"})
        >>> bf.dumps_bytes(b).endswith(b'"metadata":{"note":"caf\xc3\xa9"}}')
        True
    """
    data = _unstructure_batch(batch)
    try:
        return _encode(data)
    except _EncodeError:
        raise SchemaError(_text_problems(data, "")) from None


def _text_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """Where in the decoded document ``value`` a str cannot be written as JSON."""
    if isinstance(value, str):
        return [] if is_text(value) else [(path, f"a lone surrogate in {_show(value)}")]
    if isinstance(value, dict):
        items = [(_join(path, str(k)), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(_join(path, f"[{i}]"), v) for i, v in enumerate(value)]
    else:
        return []
    return [problem for sub, v in items for problem in _text_problems(v, sub)]
