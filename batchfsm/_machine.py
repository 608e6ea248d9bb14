"""The object API: :class:`BatchMachine`, one batch held over time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from ._graph import ALLOWED
from ._model import (
    Batch,
    BatchErrors,
    BatchRequestCounts,
    BatchStatus,
    BatchUsage,
)
from ._moves import advance, as_event, can
from ._table import (
    Event,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["BatchMachine", "Results", "TransitionCallback"]


class Results(TypedDict, total=False):
    """What the moves that end a batch's work may set (a test holds it to the table)."""

    output_file_id: str | None
    error_file_id: str | None
    request_counts: BatchRequestCounts | None
    usage: BatchUsage | None


TransitionCallback = Callable[[Event, Batch, Batch], object]


class BatchMachine:
    """One batch and the moves it can make, for code that holds a batch over time.

    Each event is a method (``m.start()``, ``m.cancel()``, …) that stamps the
    move with ``clock()`` (Unix seconds; ``time.time`` by default), replaces
    :attr:`batch` and returns it. Moves are serialised by a lock: of two threads
    racing (say ``complete`` and ``cancel`` of a finalizing batch) exactly one
    wins and the other gets :class:`InvalidTransition`; :attr:`batch` is never
    half-updated. No ``transitions`` machine is built per object: a move is a
    table lookup.

    Callbacks registered with :meth:`on_exit`, :meth:`on_transition` and
    :meth:`on_enter` run after each move, in that order, with
    ``(event, before, after)``, inside the lock, in the order of the moves: a
    callback may make the next move (``on_enter("cancelling")`` calling
    ``mark_cancelled``), whose callbacks then run after the current ones. A
    no-op (a retried cancel) runs none. If a callback raises, the move stands,
    the exception reaches the caller and callbacks still queued are dropped.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> m = bf.BatchMachine(b, clock=lambda: 1700000060)
        >>> m.on_enter("cancelling", lambda e, old, new: print(e, new.status))
        >>> m.start().status
        <BatchStatus.IN_PROGRESS: 'in_progress'>
        >>> m.cancel().cancelling_at
        cancel cancelling
        1700000060
        >>> m.cancel() is m.batch  # a retried cancel changes nothing
        True
    """

    __slots__ = ("_batch", "_callbacks", "_clock", "_lock", "_pending")

    def __init__(self, batch: Batch, *, clock: Callable[[], float] = time.time) -> None:
        self._batch = batch
        self._clock = clock
        self._lock = threading.RLock()
        self._callbacks: list[tuple[int, BatchStatus | None, TransitionCallback]] = []
        self._pending: list[tuple[Event, Batch, Batch]] | None = None

    def __repr__(self) -> str:
        return f"<BatchMachine {self._batch.id} {self._batch.status}>"

    @property
    def batch(self) -> Batch:
        """The batch as it is now."""
        return self._batch

    @property
    def status(self) -> BatchStatus:
        """The batch's status."""
        return self._batch.status

    @property
    def allowed_events(self) -> frozenset[Event]:
        """The events the batch accepts now."""
        return ALLOWED[self._batch.status]

    def can(self, event: Event | str) -> bool:
        """Whether the batch accepts ``event`` now."""
        return can(self._batch, event)

    def trigger(self, event: Event | str, **changes: Any) -> Batch:
        """Make the move ``event`` now, setting ``changes``; see :func:`advance`."""
        event = as_event(event)
        with self._lock:
            before = self._batch
            after = advance(before, event, at=int(self._clock()), **changes)
            self._batch = after
            if after is before or not self._callbacks:
                return after
            if self._pending is not None:
                # Moved from inside a callback: the move is made now, its
                # callbacks run after the current ones, so all see moves in order.
                self._pending.append((event, before, after))
                return after
            self._pending = [(event, before, after)]
            try:
                while self._pending:
                    done, old, new = self._pending.pop(0)
                    for _, _, callback in self._due(old, new):
                        callback(done, old, new)
            finally:
                self._pending = None
            return after

    def _due(
        self, before: Batch, after: Batch
    ) -> list[tuple[int, BatchStatus | None, TransitionCallback]]:
        due = [
            entry
            for entry in self._callbacks
            if (entry[0] == _EXIT and entry[1] is before.status)
            or entry[0] == _TRANSITION
            or (entry[0] == _ENTER and entry[1] is after.status)
        ]
        due.sort(key=lambda entry: entry[0])  # stable: registration order per kind
        return due

    def on_enter(self, status: BatchStatus | str, callback: TransitionCallback) -> None:
        """Call ``callback(event, before, after)`` after each move into ``status``."""
        self._callbacks.append((_ENTER, BatchStatus(status), callback))

    def on_exit(self, status: BatchStatus | str, callback: TransitionCallback) -> None:
        """Call ``callback(event, before, after)`` after each move out of ``status``."""
        self._callbacks.append((_EXIT, BatchStatus(status), callback))

    def on_transition(self, callback: TransitionCallback) -> None:
        """Call ``callback(event, before, after)`` after every move."""
        self._callbacks.append((_TRANSITION, None, callback))

    # One method per event, so that type checkers see them; a test holds them
    # to the table (names, and the fields each may set). None sets nothing.

    def start(
        self,
        *,
        request_counts: BatchRequestCounts | None = None,
        model: str | None = None,
    ) -> Batch:
        """``validating`` → ``in_progress``: the input file is valid."""
        return self.trigger(Event.START, request_counts=request_counts, model=model)

    def fail(self, *, errors: BatchErrors) -> Batch:
        """``validating`` → ``failed``: the input file is not valid."""
        return self.trigger(Event.FAIL, errors=errors)

    def finalize(
        self,
        *,
        request_counts: BatchRequestCounts | None = None,
        usage: BatchUsage | None = None,
    ) -> Batch:
        """``in_progress`` → ``finalizing``: every request has run."""
        return self.trigger(Event.FINALIZE, request_counts=request_counts, usage=usage)

    def complete(self, **results: Unpack[Results]) -> Batch:
        """``finalizing`` → ``completed``: the result files are written."""
        return self.trigger(Event.COMPLETE, **results)

    def expire(self, **results: Unpack[Results]) -> Batch:
        """``validating``/``in_progress``/``finalizing`` → ``expired``: out of time."""
        return self.trigger(Event.EXPIRE, **results)

    def cancel(self) -> Batch:
        """``validating``/``in_progress``/``finalizing`` → ``cancelling``.

        A no-op on a ``cancelling`` batch: a retried cancel must not fail.
        """
        return self.trigger(Event.CANCEL)

    def mark_cancelled(self, **results: Unpack[Results]) -> Batch:
        """``cancelling`` → ``cancelled``: in-flight requests have stopped."""
        return self.trigger(Event.MARK_CANCELLED, **results)


_EXIT, _TRANSITION, _ENTER = 0, 1, 2
