"""The Batch lifecycle, declared once, as data.

Everything else is derived from :data:`MOVES`: the ``transitions`` machine, the
allowed events, the diagram and the docs table, the invariants' reachability,
the strategies. ``batchfsm._graph`` checks the declaration when it derives from
it, at import (one initial status, nothing leaves a terminal status, every
status is reachable and can reach a terminal one), so a wrong edit fails at
once, not in production.
"""

from __future__ import annotations

import enum

import attrs

from ._model import BatchStatus

__all__ = [
    "CREATION_FIELDS",
    "INITIAL",
    "MOVES",
    "PROGRESS_FIELDS",
    "PROGRESS_STATUSES",
    "STAMPS",
    "STAMP_FIELDS",
    "Event",
    "Move",
]

S = BatchStatus


class Event(str, enum.Enum):
    """The events that move a batch; each member is equal to its name.

    Example:
        >>> import batchfsm as bf
        >>> bf.Event("cancel") is bf.Event.CANCEL
        True
    """

    START = "start"
    FAIL = "fail"
    FINALIZE = "finalize"
    COMPLETE = "complete"
    EXPIRE = "expire"
    CANCEL = "cancel"
    MARK_CANCELLED = "mark_cancelled"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Move:
    """One row of the transition table.

    ``event`` moves a batch from any of ``sources`` to ``dest``, stamping the
    Unix-seconds field of ``dest``; the move may also set the fields in
    ``may_set``. From ``dest`` itself an ``idempotent`` event is a no-op that
    returns the batch unchanged.
    """

    event: Event
    sources: tuple[BatchStatus, ...]
    dest: BatchStatus
    may_set: frozenset[str] = frozenset()
    idempotent: bool = False


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


_RESULTS = _fields("output_file_id", "error_file_id", "request_counts", "usage")

#: The transition table (the statuses and events of the Batch API).
MOVES: tuple[Move, ...] = (
    Move(Event.START, (S.VALIDATING,), S.IN_PROGRESS, _fields("request_counts", "model")),
    Move(Event.FAIL, (S.VALIDATING,), S.FAILED, _fields("errors")),
    Move(Event.FINALIZE, (S.IN_PROGRESS,), S.FINALIZING, _fields("request_counts", "usage")),
    Move(Event.COMPLETE, (S.FINALIZING,), S.COMPLETED, _RESULTS),
    Move(Event.EXPIRE, (S.VALIDATING, S.IN_PROGRESS, S.FINALIZING), S.EXPIRED, _RESULTS),
    Move(
        Event.CANCEL,
        (S.VALIDATING, S.IN_PROGRESS, S.FINALIZING),
        S.CANCELLING,
        idempotent=True,  # a retried cancel must not fail
    ),
    Move(Event.MARK_CANCELLED, (S.CANCELLING,), S.CANCELLED, _RESULTS),
)  # fmt: skip

#: The status every batch is created in.
INITIAL = S.VALIDATING

#: The timestamp field each status stamps when a batch enters it.
STAMPS: dict[BatchStatus, str] = {
    S.VALIDATING: "created_at",
    S.FAILED: "failed_at",
    S.IN_PROGRESS: "in_progress_at",
    S.FINALIZING: "finalizing_at",
    S.COMPLETED: "completed_at",
    S.EXPIRED: "expired_at",
    S.CANCELLING: "cancelling_at",
    S.CANCELLED: "cancelled_at",
}

#: Fields a batch may carry from its creation on (the live API answers a create
#: with ``request_counts`` 0/0/0 and ``usage`` all zeros).
CREATION_FIELDS = _fields("model", "metadata", "request_counts", "usage")

#: Work in progress updates these fields without a move, in these statuses.
PROGRESS_FIELDS = _fields("request_counts", "usage")
PROGRESS_STATUSES = frozenset({S.IN_PROGRESS, S.FINALIZING})

#: Every stamp field, in the order of the statuses.
STAMP_FIELDS: tuple[str, ...] = tuple(STAMPS[s] for s in BatchStatus)
