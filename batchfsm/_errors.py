"""The exceptions batchfsm raises.

All of them share one root, so ``except batchfsm.BatchFSMError`` catches
everything the library raises on purpose::

    BatchFSMError
    ├── SchemaError          (also a ValueError) a document is not a valid Batch
    └── InvalidTransition    (also a ValueError) an event the status does not allow

Errors carry structured detail (``SchemaError.errors``, ``InvalidTransition.status``)
so that callers never have to parse messages, and they pickle, so that they cross
process boundaries (pytest-xdist, multiprocessing workers) intact.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BatchFSMError", "SchemaError"]


class BatchFSMError(Exception):
    """The root of every exception batchfsm raises on purpose.

    Example:
        >>> import batchfsm as bf
        >>> issubclass(bf.SchemaError, bf.BatchFSMError)
        True
    """


class SchemaError(BatchFSMError, ValueError):
    """A document is not a valid Batch object.

    ``errors`` lists every problem found, each as ``(path, message)`` where
    ``path`` is the dotted JSON path of the offending value
    (``"request_counts.total"``, ``"errors.data[0].line"``; ``""`` for the
    document itself).

    Example:
        >>> import batchfsm as bf
        >>> try:
        ...     bf.from_dict({"object": "batch", "id": 7})
        ... except bf.SchemaError as exc:
        ...     exc.errors[:2]
        [('id', 'expected str, got 7'), ('endpoint', 'required field missing')]
    """

    errors: list[tuple[str, str]]

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        errors = list(errors)
        super().__init__(errors)
        self.errors = errors

    def __str__(self) -> str:
        lines = [f"{path or '<document>'}: {message}" for path, message in self.errors]
        if len(lines) == 1:
            return f"invalid Batch: {lines[0]}"
        return f"invalid Batch, {len(lines)} problems:\n  " + "\n  ".join(lines)
