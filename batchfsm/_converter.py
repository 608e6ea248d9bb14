"""The configured cattrs converter: the detailed gear that names every problem.

Structuring is strict about types (an ``int`` field takes a JSON integer, not
``"10"``, ``10.0`` or ``true``) and lenient about presence (optional fields may be
missing, unknown keys are ignored unless ``forbid_extra_keys``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from cattrs import Converter
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._leaves import (
    BATCH_TAG,
    InvalidError,
    expected,
    is_batch_tag,
    is_optional,
    leaf_hook,
    make_optional_hook,
)
from ._model import (
    MODEL_CLASSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchStatus,
    metadata_problems,
)
from ._paths import problems_of

__all__ = ["converter", "make_converter"]


def _structure_metadata(value: Any, _: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if value.__class__ is not dict:
        raise expected("object", value)
    problems = metadata_problems(value)
    if problems:
        raise InvalidError(*problems)
    return value


def _make_error_list_hook(
    conv: Converter,
) -> Callable[[Any, Any], tuple[BatchError, ...] | None]:
    structure_error = conv.get_structure_hook(BatchError)

    def structure_error_list(value: Any, _: Any) -> tuple[BatchError, ...] | None:
        if value is None:
            return None
        if value.__class__ is not list:
            raise expected("array", value)
        if not conv.detailed_validation:
            return tuple([structure_error(item, BatchError) for item in value])
        items: list[BatchError] = []
        problems: list[tuple[str, str]] = []
        for index, item in enumerate(value):
            try:
                items.append(structure_error(item, BatchError))
            except Exception as exc:  # noqa: BLE001, PERF203 - every item is reported
                problems.extend(problems_of(exc, f"[{index}]"))
        if problems:
            raise InvalidError(*problems)
        return tuple(items)

    return structure_error_list


def _require_mapping(
    cls: type, structure: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def structure_object(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise expected(f"object ({cls.__name__})", value)
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


# -- the converter ----------------------------------------------------------------


def make_converter(*, detailed: bool, forbid_extra_keys: bool) -> Converter:
    conv = Converter(
        detailed_validation=detailed,
        forbid_extra_keys=forbid_extra_keys,
    )
    for leaf in (str, int, BatchStatus):
        conv.register_structure_hook(leaf, leaf_hook(leaf))
    conv.register_unstructure_hook(BatchStatus, lambda status: status.value)
    conv.register_structure_hook_func(is_batch_tag, leaf_hook(BATCH_TAG))
    conv.register_structure_hook_factory(is_optional, make_optional_hook)
    for cls in reversed(MODEL_CLASSES):  # leaves first: parents look them up
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
converter = make_converter(detailed=True, forbid_extra_keys=False)
