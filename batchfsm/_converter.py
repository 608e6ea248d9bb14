"""The cattrs converter: the one door for the Batch's JSON, both ways.

:func:`register_hooks` teaches any ``cattrs.Converter`` the model classes
(:class:`~batchfsm.Batch` and its parts) through two hook factories, so that
each class's hooks are built the first time cattrs dispatches on it:

- structure: the fast parse generated for the class (:mod:`batchfsm._json_parse`);
  when it refuses, the detailed parse (a private converter running the rules of
  :mod:`batchfsm._field_rules` with cattrs' detailed validation) either builds
  the instance (an unusual but valid document, say a ``Mapping`` that is not a
  dict) or raises :class:`~batchfsm.SchemaError` listing every problem with its
  JSON path (:mod:`batchfsm._json_problems`);
- unstructure: the generated writer (:mod:`batchfsm._json_write`).

:data:`converter` is cattrs' preconfigured orjson converter with these hooks:
``from_dict(d)`` is ``converter.structure(d, Batch)`` and ``to_dict(b)`` is
``converter.unstructure(b)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import attrs
from cattrs import Converter
from cattrs.gen import make_dict_structure_fn, override
from cattrs.preconf.orjson import OrjsonConverter
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from ._errors import SchemaError
from ._field_rules import (
    RULES_BY_TYPE,
    InvalidError,
    expected,
    is_batch_tag,
    is_optional,
    make_optional_hook,
    structure_batch_tag,
    structure_metadata,
)
from ._json_parse import make_parser
from ._json_problems import problems_of
from ._json_write import make_writer
from ._model import MODEL_CLASSES, Batch, BatchError, BatchErrors

__all__ = ["converter", "register_hooks", "strict_converter"]


_ErrorList = tuple[BatchError, ...] | None


def _error_list_hook(conv: Converter) -> Callable[[Any, Any], _ErrorList]:
    structure_error = conv.get_structure_hook(BatchError)

    def structure_error_list(value: Any, _: Any) -> _ErrorList:
        if value is None:
            return None
        if value.__class__ is not list:
            raise expected("array", value)
        items: list[BatchError] = []
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_error(item, BatchError))
            except Exception as exc:  # noqa: BLE001 - every item is reported
                problems.extend(problems_of(exc, f"[{index}]"))
        if problems:
            raise InvalidError(*problems)
        return tuple(items)

    return structure_error_list


def _object_hook(cls: type, conv: Converter) -> Callable[[Any, Any], Any]:
    """Cattrs' generated structure of ``cls``, refusing what is not an object."""
    overrides: dict[str, Any] = {}
    if cls is BatchErrors:
        overrides["data"] = override(struct_hook=_error_list_hook(conv))
    elif cls is Batch:
        overrides["metadata"] = override(struct_hook=structure_metadata)
    generated: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, conv, **overrides
    )

    def structure_object(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise expected(f"object ({cls.__name__})", value)
        instance = generated(value, cls)
        # BatchErrors() defaults object to "list" for people building one; a
        # document that left it out has no object, and check() must see that.
        if cls is BatchErrors and "object" not in value:
            instance = attrs.evolve(instance, object=None)
        return instance

    return structure_object


@cache
def _detailed(strict: bool) -> Converter:
    """The private converter that words every problem of a document."""
    conv = Converter(detailed_validation=True, forbid_extra_keys=strict)
    for leaf, rule in RULES_BY_TYPE.items():
        if isinstance(leaf, type):
            conv.register_structure_hook(leaf, rule)
    conv.register_structure_hook_func(is_batch_tag, structure_batch_tag)
    conv.register_structure_hook_factory(is_optional, make_optional_hook)
    conv.register_structure_hook_factory(_is_model, _object_hook)
    return conv


def _is_model(t: Any) -> bool:
    return t in MODEL_CLASSES


def _structure_hook(cls: type, strict: bool, engine: bool) -> Callable[[Any, Any], Any]:
    fast = make_parser(cls, strict, engine)
    detailed = _detailed(strict).get_structure_hook(cls)
    tagged = cls is Batch  # a Batch document must say what it is

    def structure(data: Any, _: Any) -> Any:
        if not tagged or (data.__class__ is dict and "object" in data):
            try:
                return fast(data)
            except Exception:  # noqa: BLE001, S110 - the detailed parse judges it
                pass
        problems = []
        if tagged and isinstance(data, Mapping) and "object" not in data:
            problems.append(("object", "required field missing"))
        try:
            instance = detailed(data, cls)
        except Exception as exc:  # noqa: BLE001 - every problem is reported
            problems.extend(problems_of(exc, ""))
        if problems:
            raise SchemaError(problems)
        return instance

    structure.__qualname__ = structure.__name__ = f"structure_{cls.__name__}"
    return structure


def register_hooks(conv: Converter, *, strict: bool = False) -> Converter:
    """Teach ``conv`` to structure and unstructure :class:`~batchfsm.Batch`.

    Hook factories for the model classes are registered; each class's hooks are
    generated the first time ``conv`` meets it. Structuring raises
    :class:`~batchfsm.SchemaError` listing every problem (inside a class of
    yours, cattrs groups it with the problems of your other fields, as for any
    hook); unstructuring gives the API's JSON, as :func:`~batchfsm.to_dict`.

    Args:
        conv: any cattrs converter; only the model classes' hooks are added.
        strict: refuse keys the model classes lack (default: ignore them).

    Returns:
        ``conv``, for chaining.

    Example:
        >>> import attrs, cattrs, batchfsm as bf
        >>> @attrs.frozen
        ... class Job:
        ...     name: str
        ...     batch: bf.Batch
        >>> conv = bf.register_hooks(cattrs.Converter())
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> data = conv.unstructure(Job("nightly", b))
        >>> data["batch"]["status"], conv.structure(data, Job) == Job("nightly", b)
        ('validating', True)
    """
    _register(conv, strict, engine=False)
    return conv


def _register(conv: Converter, strict: bool, engine: bool) -> None:
    def structure_factory(cls: type) -> Callable[[Any, Any], Any]:
        return _structure_hook(cls, strict, engine)

    conv.register_structure_hook_factory(_is_model, structure_factory)
    conv.register_unstructure_hook_factory(_is_model, make_writer)


def _configured(strict: bool, engine: bool) -> OrjsonConverter:
    conv = _make_orjson_converter(forbid_extra_keys=strict)
    _register(conv, strict, engine)
    return conv


#: The configured cattrs converter (cattrs' preconfigured orjson converter, with
#: :func:`register_hooks`): ``structure(d, Batch)`` is :func:`from_dict`,
#: ``unstructure(b)`` is :func:`to_dict`, ``loads(text, Batch)`` and
#: ``dumps(b)`` (bytes) are :func:`loads` and :func:`dumps_bytes`; unknown keys
#: are ignored. Use it for your own attrs classes that hold a Batch.
converter: OrjsonConverter = _configured(strict=False, engine=False)
#: As :data:`converter`, refusing keys the model lacks (``from_dict(strict=True)``).
strict_converter: OrjsonConverter = _configured(strict=True, engine=False)
#: Converters for documents the JSON engine made (no lone surrogate to look for,
#: no metadata to copy): ``loads``.
text_converters: dict[bool, OrjsonConverter] = {
    strict: _configured(strict, engine=True) for strict in (False, True)
}
