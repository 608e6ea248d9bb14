"""The object API: :class:`BatchMachine`, one batch held over time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from transitions import EventData, MachineError

from ._errors import InvalidTransition
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
from ._transitions import Lifecycle, machine

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


class BatchMachine(Lifecycle):
    """One batch and the moves it can make, for code that holds a batch over time.

    Each event is a method (``m.start()``, ``m.cancel()``, …) that stamps the
    move with ``clock()`` (Unix seconds; ``time.time`` by default), replaces
    :attr:`batch` and returns it. Moves are serialised by a lock: of two threads
    racing (say ``complete`` and ``cancel`` of a finalizing batch) exactly one
    wins and the other gets :class:`InvalidTransition`; :attr:`batch` is never
    half-updated.

    The moves run on :data:`batchfsm.machine`, the one ``transitions`` Machine
    built from the table, with this object as its model: the event is
    transitions' trigger, the transition's ``before`` stamps and checks the
    move with :func:`advance` (so both give the same batch or the same
    refusal), and the callbacks below are the states' ``on_exit`` /
    ``on_enter``. No machine is built per object.

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
        self._callbacks: list[tuple[_Kind, BatchStatus | None, TransitionCallback]] = []
        self._pending: list[tuple[list[TransitionCallback], _Move]] | None = None

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

    @property
    def state(self) -> str:
        """The status's value: the model attribute :data:`batchfsm.machine` reads."""
        return self._batch.status.value

    @state.setter
    def state(self, value: str) -> None:
        # transitions writes the destination after the exit callbacks; the
        # batch moved before them (_make_move), and a callback may have moved
        # it on since, so the batch stays the one truth.
        pass

    def trigger(self, event: Event | str, **changes: Any) -> Batch:
        """Make the move ``event`` now, setting ``changes``; see :func:`advance`."""
        event = as_event(event)
        with self._lock:
            outer = self._pending is None
            if outer:
                self._pending = []
            move = _Move(event, changes, inline=outer)
            try:
                try:
                    _TRIGGERS[event](self, move)
                except MachineError:
                    if move.before is not None:  # raised by a callback: theirs
                        raise
                    status = self._batch.status
                    raise InvalidTransition(status, event, ALLOWED[status]) from None
                if outer:
                    self._run_pending()
            finally:
                if outer:
                    self._pending = None
            assert move.after is not None
            return move.after

    # The hooks batchfsm.machine calls, with this machine as its model.

    def _make_move(self, data: EventData) -> None:
        """Stamp and check the move with the pure :func:`advance`, and keep it."""
        (move,) = data.args
        move.before = before = self._batch
        move.after = self._batch = advance(
            before, move.event, at=int(self._clock()), **move.changes
        )

    def _exited(self, data: EventData) -> None:
        """Run the ``on_exit`` callbacks of the status left."""
        if self._callbacks:
            (move,) = data.args
            assert move.before is not None
            self._call(move, _EXIT, move.before.status)

    def _moved(self, data: EventData) -> None:
        """Run the ``on_transition`` callbacks."""
        if self._callbacks:
            (move,) = data.args
            self._call(move, _TRANSITION, None)

    def _entered(self, data: EventData) -> None:
        """Run the ``on_enter`` callbacks of the status entered."""
        if self._callbacks:
            (move,) = data.args
            assert move.after is not None
            self._call(move, _ENTER, move.after.status)

    def _call(self, move: _Move, kind: _Kind, status: BatchStatus | None) -> None:
        due = [
            callback
            for entry_kind, entry_status, callback in self._callbacks
            if entry_kind == kind and entry_status is status
        ]
        if not due:
            return
        if not move.inline:
            # Moved from inside a callback: the move is made now, its
            # callbacks run after the current ones, so all see moves in order.
            assert self._pending is not None
            self._pending.append((due, move))
            return
        assert move.before is not None
        assert move.after is not None
        for callback in due:
            callback(move.event, move.before, move.after)

    def _run_pending(self) -> None:
        pending = self._pending
        assert pending is not None
        while pending:
            due, move = pending.pop(0)
            assert move.before is not None
            assert move.after is not None
            for callback in due:
                callback(move.event, move.before, move.after)

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


# Which callbacks an entry is: each kind runs from its own transitions callback.
_Kind = Literal["exit", "transition", "enter"]
_EXIT: _Kind = "exit"
_TRANSITION: _Kind = "transition"
_ENTER: _Kind = "enter"


class _Move:
    """One move on its way through the machine: asked, then made."""

    __slots__ = ("after", "before", "changes", "event", "inline")

    def __init__(self, event: Event, changes: dict[str, Any], *, inline: bool) -> None:
        self.event = event
        self.changes = changes
        self.before: Batch | None = None
        self.after: Batch | None = None
        # Callbacks run as the machine reaches them (the outermost move), or
        # wait for the current ones to finish (a move made from a callback).
        self.inline = inline


# The bound triggers of the shared machine's events: what ``model.start()``
# would call had the model been added to the machine.
_TRIGGERS: dict[Event, Callable[..., bool]] = {
    event: machine.events[event.value].trigger for event in Event
}
