"""The exceptions batchfsm raises.

Every refusal the library makes on purpose shares one root, so
``except batchfsm.BatchFSMError`` catches them all (wrong argument types aside:
those are TypeErrors naming the argument)::

    BatchFSMError
    ├── SchemaError          (also a ValueError) a document is not a valid Batch
    ├── InvalidTransition    (also a ValueError) a move the batch cannot make
    ├── InvalidProgress      (also a ValueError) work in progress it cannot record
    └── UnknownEvent         (also a ValueError) an event name the table lacks

The emulator's ``ApiError`` and ``batchfsm.testing.Refused`` derive from it too.

Errors carry structured detail (``SchemaError.errors``, ``InvalidTransition.status``)
so that callers never have to parse messages, and they pickle, so that they cross
process boundaries (pytest-xdist, multiprocessing workers) intact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._invariants import Violation
    from ._model import BatchStatus
    from ._table import Event

__all__ = [
    "BatchFSMError",
    "InvalidProgress",
    "InvalidTransition",
    "SchemaError",
    "UnknownEvent",
]


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


class InvalidTransition(BatchFSMError, ValueError):  # noqa: N818 - the public name
    """A batch cannot make the move asked of it.

    Raised for an event its status does not allow, and for a legal event asked
    with fields it may not set, a time before the batch's latest stamp, or a
    result that would break an invariant (then ``violations`` says which).

    Attributes:
        status: the batch's status.
        event: the event asked for.
        allowed: the events the status allows.
        violations: the invariants the result would break, if that is why.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> try:
        ...     bf.advance(b, "complete", at=1700000100)
        ... except bf.InvalidTransition as exc:
        ...     print(exc.allowed == bf.allowed_events("validating"))
        ...     print(exc.to_api_error()["error"]["message"])
        True
        Cannot complete a batch with status 'validating'.
    """

    status: BatchStatus
    event: Event
    allowed: frozenset[Event]
    violations: tuple[Violation, ...]

    def __init__(
        self,
        status: BatchStatus,
        event: Event,
        allowed: frozenset[Event],
        message: str | None = None,
        violations: tuple[Violation, ...] = (),
    ) -> None:
        super().__init__(status, event, allowed, message, violations)
        self.status = status
        self.event = event
        self.allowed = allowed
        self.violations = violations
        self._message = message

    def __str__(self) -> str:
        if self._message is not None:
            return self._message
        from ._table import Event

        allowed = ", ".join(e.value for e in Event if e in self.allowed) or "none"
        return (
            f"cannot {self.event} a batch with status {self.status} "
            f"(it allows: {allowed})"
        )

    def to_api_error(self) -> dict[str, Any]:
        """The API's error body for this refusal, as a Batch API answers it (409).

        Example:
            >>> import batchfsm as bf
            >>> bf.InvalidTransition(
            ...     bf.BatchStatus.COMPLETED, bf.Event.CANCEL, frozenset()
            ... ).to_api_error()  # doctest: +NORMALIZE_WHITESPACE
            {'error': {'message': "Cannot cancel a batch with status 'completed'.",
                       'type': 'invalid_request_error', 'param': None, 'code': None}}
        """
        if self._message is None:
            message = f"Cannot {self.event} a batch with status '{self.status}'."
        else:  # a legal event refused for its arguments: say why
            message = self._message[:1].upper() + self._message[1:] + "."
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }


class InvalidProgress(BatchFSMError, ValueError):  # noqa: N818 - as InvalidTransition
    """Work in progress that a batch cannot record (see :func:`batchfsm.progress`).

    Raised for a batch in a status where no work runs, and for updates that
    would break an invariant (then ``violations`` says which: counts that go
    down, more requests done than there are, ...).

    Attributes:
        status: the batch's status.
        violations: the invariants the result would break, if that is why.

    Example:
        >>> import batchfsm as bf
        >>> done = bf.from_dict({
        ...     "id": "batch_1", "object": "batch", "endpoint": "/v1/embeddings",
        ...     "input_file_id": "file-1", "completion_window": "24h",
        ...     "status": "cancelled", "created_at": 1700000000,
        ...     "expires_at": 1700086400, "cancelling_at": 1700000001,
        ...     "cancelled_at": 1700000002,
        ... })
        >>> bf.progress(done, request_counts=bf.BatchRequestCounts(
        ...     total=2, completed=1, failed=0))
        Traceback (most recent call last):
        ...
        batchfsm.InvalidProgress: a batch with status cancelled runs no work (...)
    """

    status: BatchStatus
    violations: tuple[Violation, ...]

    def __init__(
        self, status: BatchStatus, message: str, violations: tuple[Violation, ...] = ()
    ) -> None:
        super().__init__(status, message, violations)
        self.status = status
        self.violations = violations
        self._message = message

    def __str__(self) -> str:
        return self._message


class UnknownEvent(BatchFSMError, ValueError):  # noqa: N818 - as InvalidTransition
    """An event name that is not one of :class:`batchfsm.Event`.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> bf.can(b, "begin")
        Traceback (most recent call last):
        ...
        batchfsm._errors.UnknownEvent: unknown event 'begin'; events are: start, ...
    """
