"""Filling a frozen model instance field by field, without its ``__init__``.

A frozen attrs class refuses ``setattr``; its ``__init__`` goes around that with
one ``object.__setattr__`` call per field, the dearest part of building a Batch.
The fast paths (parsing, moves, new batches) instead fill an instance of the
class's *unfrozen* counterpart, a plain class with the very same slots whose
attribute writes are ordinary slot stores, and then make it an instance of the
model class by assigning ``__class__``. Python allows that only between classes
of identical layout, and checks it on every assignment (a mismatch is a
TypeError, never a corrupt object). The model classes have no ``__weakref__``
slot for this reason: CPython refuses ``__class__`` assignment between slotted
classes that have one.

No validator or converter of the model runs: only code that has checked every
value itself may build this way.
"""

from __future__ import annotations

from ._model import MODEL_CLASSES

__all__ = ["UNFROZEN"]


def _unfrozen(cls: type) -> type:
    slots: tuple[str, ...] = cls.__dict__["__slots__"]
    plain = type(f"Unfrozen{cls.__name__}", (), {"__slots__": slots})
    probe: object = object.__new__(plain)
    probe.__class__ = cls  # the layouts agree, or this raises at import
    return plain


#: model class -> its unfrozen counterpart: ``n = object.__new__(UNFROZEN[C])``,
#: write the fields, then ``n.__class__ = C``.
UNFROZEN: dict[type, type] = {cls: _unfrozen(cls) for cls in MODEL_CLASSES}
