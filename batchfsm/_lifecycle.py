"""Moving a batch through its lifecycle: ``new_batch``, ``advance``, ``BatchMachine``.

The moves come from the declaration in :mod:`batchfsm._table`; here they are
compiled into dict lookups so that a move costs a lookup, a copy and a check,
not a per-object state machine. :data:`machine` is the same declaration built
into a ``transitions`` Machine, for those who want that library's API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
from transitions import Machine

from ._codegen import compile_function
from ._errors import InvalidProgress, InvalidTransition, SchemaError, UnknownEvent
from ._graph import ALLOWED, MOVE_FROM, NOOPS, REACHABLE
from ._invariants import (
    SNAPSHOT_OK,
    STEP_OK,
    _check,
    _check_step,
)
from ._model import (
    COMPLETION_WINDOWS,
    TERMINAL_STATUSES,
    Batch,
    BatchErrors,
    BatchRequestCounts,
    BatchStatus,
    BatchUsage,
    metadata_problems,
)
from ._table import (
    INITIAL,
    MOVES,
    PROGRESS_FIELDS,
    PROGRESS_STATUSES,
    STAMP_FIELDS,
    STAMPS,
    Event,
    Move,
)
from ._twins import OPEN

__all__ = [
    "BatchMachine",
    "advance",
    "allowed_events",
    "can",
    "machine",
    "new_batch",
    "progress",
]

_EVENT_BY_VALUE = {event.value: event for event in Event}
# The type each field a move may set takes, read off the model.
_CHANGE_TYPES: dict[str, Any] = {
    field.name: field.type
    for field in attrs.fields(attrs.resolve_types(Batch))
    if field.name in PROGRESS_FIELDS
    or any(field.name in move.may_set for move in MOVES)
}

# None is filtered out before the type check, so the class inside each Optional
# is what a value must be (isinstance on a plain class beats one on a union).
_CHANGE_CLASSES: dict[str, type] = {
    name: next(arg for arg in t.__args__ if arg is not type(None))
    for name, t in _CHANGE_TYPES.items()
}


def _event(event: Event | str) -> Event:
    found = _EVENT_BY_VALUE.get(event) if isinstance(event, str) else None
    if found is None:
        raise UnknownEvent(
            f"unknown event {event!r}; events are: {', '.join(_EVENT_BY_VALUE)}"
        )
    return found


def new_batch(
    *,
    id: str,
    input_file_id: str,
    endpoint: str,
    created_at: int,
    completion_window: str = "24h",
    metadata: Mapping[str, str] | None = None,
    model: str | None = None,
) -> Batch:
    """A batch just created: ``validating``, counts at zero, ``expires_at`` set.

    Args:
        id: the batch id (``batch_…``).
        input_file_id: the uploaded JSONL file of requests.
        endpoint: the endpoint every request goes to (``/v1/chat/completions``).
        created_at: Unix seconds.
        completion_window: only ``"24h"`` is accepted, as by the API.
        metadata: up to 16 string pairs.
        model: the model, if known at creation.

    Raises:
        SchemaError: an unknown ``completion_window`` or bad metadata.
        TypeError: ``created_at`` is not a non-negative int.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> b.status, b.expires_at - b.created_at
        (<BatchStatus.VALIDATING: 'validating'>, 86400)
    """
    if created_at.__class__ is not int or created_at < 0:
        raise TypeError(
            f"created_at: expected Unix seconds (int >= 0), got {created_at!r}"
        )
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata: expected a mapping, got {metadata!r}")
        problems = metadata_problems(metadata)
        if problems:
            raise SchemaError(
                (f"metadata.{key}" if key else "metadata", message)
                for key, message in problems
            )
        metadata = MappingProxyType(dict(metadata))  # as Batch does, checked once
    window = (
        COMPLETION_WINDOWS.get(completion_window)
        if isinstance(completion_window, str)
        else None
    )
    if window is None:
        raise SchemaError(
            [
                (
                    "completion_window",
                    f"expected one of {', '.join(map(repr, COMPLETION_WINDOWS))}, "
                    f"got {completion_window!r}",
                )
            ]
        )
    return _created(
        id,
        endpoint,
        model,
        input_file_id,
        completion_window,
        created_at,
        created_at + window,
        metadata,
    )


_NO_REQUESTS = BatchRequestCounts(total=0, completed=0, failed=0)
# What new_batch sets; every other field takes the model's default.
_CREATED = (
    "id",
    "endpoint",
    "model",
    "input_file_id",
    "completion_window",
    "created_at",
    "expires_at",
    "metadata",
)


def _created_source() -> list[str]:
    """The source of ``created(<_CREATED>) -> Batch``: a new batch, its slots filled.

    Batch.__init__ would check metadata a second time and pay a setattr per field.
    """
    lines = [f"def created({', '.join(_CREATED)}):", "    n = _new(_OpenBatch)"]
    for field in attrs.fields(Batch):
        if field.name in _CREATED:
            value = field.name
        elif field.name == "status":
            value = "_INITIAL"
        elif field.name == "request_counts":
            value = "_NO_REQUESTS"
        else:
            value = repr(field.default)
        lines.append(f"    n.{field.name} = {value}")
    lines += ["    n.__class__ = _Batch", "    return n"]
    return lines


_created: Callable[..., Batch] = compile_function(
    "created",
    _created_source(),
    {
        "_new": object.__new__,
        "_OpenBatch": OPEN[Batch],
        "_Batch": Batch,
        "_INITIAL": INITIAL,
        "_NO_REQUESTS": _NO_REQUESTS,
    },
)


def allowed_events(status: BatchStatus | str) -> frozenset[Event]:
    """The events a batch in ``status`` accepts.

    Example:
        >>> import batchfsm as bf
        >>> sorted(bf.allowed_events("cancelling"))
        [<Event.CANCEL: 'cancel'>, <Event.MARK_CANCELLED: 'mark_cancelled'>]
        >>> bf.allowed_events("completed")
        frozenset()
    """
    return ALLOWED[BatchStatus(status)]


def can(batch: Batch, event: Event | str) -> bool:
    """Whether ``batch`` accepts ``event`` now.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> bf.can(b, "start"), bf.can(b, "complete")
        (True, False)
    """
    return _event(event) in ALLOWED[batch.status]


def advance(batch: Batch, event: Event | str, *, at: int, **changes: Any) -> Batch:
    """The batch after ``event`` at Unix second ``at``; ``batch`` is left as it was.

    The new status's stamp (``in_progress_at``, ``cancelling_at``, …) is written
    with ``at``. ``changes`` may set the fields the event allows (``start``:
    ``request_counts``, ``model``; ``fail``: ``errors``; ``finalize``:
    ``request_counts``, ``usage``; ``complete``, ``expire``, ``mark_cancelled``:
    ``output_file_id``, ``error_file_id``, ``request_counts``, ``usage``).
    ``cancel`` on a ``cancelling`` batch returns it unchanged.

    Raises:
        InvalidTransition: the status does not allow the event; or a field the
            event may not set; or ``at`` before the batch's latest stamp; or a
            result that breaks an invariant (listed in ``violations``).
        TypeError: ``at`` or a change of the wrong type.
        ValueError: an unknown event name (``UnknownEvent``, a BatchFSMError).

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> b = bf.advance(b, "start", at=1700000005, model="text-embedding-3-small")
        >>> b.status, b.in_progress_at, b.model
        (<BatchStatus.IN_PROGRESS: 'in_progress'>, 1700000005, 'text-embedding-3-small')
    """
    status = batch.status
    try:
        plan = _PLANS.get((status, event))  # type: ignore[arg-type]
    except TypeError:  # an unhashable "event"
        plan = None
    if plan is None:
        event = _event(event)
        if (status, event) not in NOOPS:
            raise InvalidTransition(status, event, ALLOWED[status])
        if changes:
            raise InvalidTransition(
                status,
                event,
                ALLOWED[status],
                f"{event} of a batch with status {status} changes nothing, "
                f"so it takes no fields (got {', '.join(changes)})",
            )
        return batch
    move, build, snapshot_ok, step_ok = plan
    if at.__class__ is not int:
        raise TypeError(f"at: expected Unix seconds (int), got {at!r}")
    latest_name, latest = _latest_stamp(batch)
    if at < latest:
        raise InvalidTransition(
            status,
            move.event,
            ALLOWED[status],
            f"{move.event} at {at} would go back in time: {latest_name} is {latest}",
        )
    if changes:
        # None sets nothing: the API's null is "not set", and a move never clears.
        changes = {name: value for name, value in changes.items() if value is not None}
        for name, value in changes.items():
            if name not in move.may_set:
                may_set = ", ".join(sorted(move.may_set)) or "nothing"
                raise InvalidTransition(
                    status,
                    move.event,
                    ALLOWED[status],
                    f"{move.event} may not set {name} (it may set: {may_set})",
                )
            expected = _CHANGE_CLASSES[name]
            if not isinstance(value, expected):
                raise TypeError(f"{name}: expected {expected.__name__}, got {value!r}")
    if batch.__class__ is Batch:
        after = build(batch, at, changes)
    else:  # a subclass may hold more than the generated copy knows of
        changes[STAMPS[move.dest]] = at
        after = attrs.evolve(batch, status=move.dest, **changes)
    # The generated predicates answer "nothing to report" for almost every move;
    # otherwise the reference rules run, and word what is wrong.
    try:
        consistent = snapshot_ok(after) and step_ok(batch, after)
    except Exception:  # noqa: BLE001 - malformed: the reference says how
        consistent = False
    if consistent:
        return after
    violations = _check(after) + _check_step(batch, after)
    if violations:
        raise InvalidTransition(
            status,
            move.event,
            ALLOWED[status],
            f"{move.event} would leave batch {batch.id} inconsistent: "
            + "; ".join(f"{v.rule}: {v.message}" for v in violations),
            tuple(violations),
        )
    return after


def progress(
    batch: Batch,
    *,
    request_counts: BatchRequestCounts | None = None,
    usage: BatchUsage | None = None,
) -> Batch:
    """The batch after work in progress: more requests done, more tokens used.

    Not a move: the status and every stamp stay. Only a batch whose work is
    running (``in_progress`` or ``finalizing``) records progress, and only
    forward: counts and usage never go down, and the result must pass
    :func:`batchfsm.check`. ``None`` leaves a field as it is.

    Raises:
        InvalidProgress: the batch runs no work in its status, or the result
            would break an invariant (listed in ``violations``).
        TypeError: a value of the wrong type.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> b = bf.advance(b, "start", at=1700000005,
        ...     request_counts=bf.BatchRequestCounts(total=10, completed=0, failed=0))
        >>> bf.progress(b, request_counts=bf.BatchRequestCounts(
        ...     total=10, completed=4, failed=1)).request_counts
        BatchRequestCounts(total=10, completed=4, failed=1)
    """
    status = batch.status
    if status not in PROGRESS_STATUSES:
        running = ", ".join(s.value for s in BatchStatus if s in PROGRESS_STATUSES)
        raise InvalidProgress(
            status,
            f"a batch with status {status} runs no work (work runs in: {running})",
        )
    changes: dict[str, Any] = {
        name: value
        for name, value in (("request_counts", request_counts), ("usage", usage))
        if value is not None
    }
    for name, value in changes.items():
        expected = _CHANGE_CLASSES[name]
        if not isinstance(value, expected):
            raise TypeError(f"{name}: expected {expected.__name__}, got {value!r}")
    if not changes:
        return batch
    after = attrs.evolve(batch, **changes)
    if SNAPSHOT_OK[status](after) and STEP_OK[status](batch, after):
        return after
    violations = _check(after) + _check_step(batch, after)
    raise InvalidProgress(
        status,
        f"progress would leave batch {batch.id} inconsistent: "
        + "; ".join(f"{v.rule}: {v.message}" for v in violations),
        tuple(violations),
    )


# -- the fast path: code generated from the table ----------------------------------
#
# attrs.evolve would rerun Batch.__init__: the status converter, the ``object``
# validator and the metadata converter, which checks and copies the mapping again.
# Every value of ``batch`` passed them when it was built, and the changes are
# type-checked above, so a move copies the slots straight into an open twin of
# the class (batchfsm._twins), with one generated function per move.

_BATCH_FIELDS = tuple(field.name for field in attrs.fields(Batch))


def _build_source(name: str, move: Move) -> list[str]:
    """The source of a function making ``move``: ``(batch, at, changes) -> Batch``.

    ``changes`` holds only fields ``move`` may set, already type-checked.
    """
    stamp = STAMPS[move.dest]
    lines = [f"def {name}(b, at, changes):", "    n = _new(_OpenBatch)"]
    for field in _BATCH_FIELDS:
        if field == "status":
            value = "_DEST"
        elif field == stamp:
            value = "at"
        elif field in move.may_set:
            value = f"changes.get({field!r}, b.{field})"
        else:
            value = f"b.{field}"
        lines.append(f"    n.{field} = {value}")
    lines += ["    n.__class__ = _Batch", "    return n"]
    return lines


def _latest_source() -> list[str]:
    """The source of ``_latest_stamp(batch) -> (name, value)``: its latest stamp."""
    lines = ["def latest_stamp(b):", "    name, latest = 'created_at', b.created_at"]
    for field in STAMP_FIELDS:
        lines += [
            f"    value = b.{field}",
            "    if value is not None and value > latest:",
            f"        name, latest = {field!r}, value",
        ]
    lines.append("    return name, latest")
    return lines


_latest_stamp: Callable[[Batch], tuple[str, Any]] = compile_function(
    "latest_stamp", _latest_source(), {}
)

_Build = Callable[[Batch, int, dict[str, Any]], Batch]
_Plan = tuple[Move, _Build, Callable[[Batch], bool], Callable[[Batch, Batch], bool]]


def _plans() -> dict[tuple[BatchStatus, Event], _Plan]:
    """(status, event) -> the move, its generated copy, and the predicates to run."""
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_OpenBatch": OPEN[Batch],
        "_Batch": Batch,
    }
    builds: dict[Event, _Build] = {}
    for move in MOVES:
        name = f"advance_{move.event.value}"
        builds[move.event] = compile_function(
            name, _build_source(name, move), {**namespace, "_DEST": move.dest}
        )
    plans = {}
    for (source, event), move in MOVE_FROM.items():
        # A move is a step the rules allow; the step predicate still judges it.
        assert move.dest in REACHABLE[source]
        plans[source, event] = (
            move,
            builds[event],
            SNAPSHOT_OK[move.dest],
            STEP_OK[source],
        )
    return plans


_PLANS = _plans()


# -- the object API ---------------------------------------------------------------

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
        event = _event(event)
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

    def complete(
        self,
        *,
        output_file_id: str | None = None,
        error_file_id: str | None = None,
        request_counts: BatchRequestCounts | None = None,
        usage: BatchUsage | None = None,
    ) -> Batch:
        """``finalizing`` → ``completed``: the result files are written."""
        return self.trigger(
            Event.COMPLETE,
            output_file_id=output_file_id,
            error_file_id=error_file_id,
            request_counts=request_counts,
            usage=usage,
        )

    def expire(
        self,
        *,
        output_file_id: str | None = None,
        error_file_id: str | None = None,
        request_counts: BatchRequestCounts | None = None,
        usage: BatchUsage | None = None,
    ) -> Batch:
        """``validating``/``in_progress``/``finalizing`` → ``expired``: out of time."""
        return self.trigger(
            Event.EXPIRE,
            output_file_id=output_file_id,
            error_file_id=error_file_id,
            request_counts=request_counts,
            usage=usage,
        )

    def cancel(self) -> Batch:
        """``validating``/``in_progress``/``finalizing`` → ``cancelling``.

        A no-op on a ``cancelling`` batch: a retried cancel must not fail.
        """
        return self.trigger(Event.CANCEL)

    def mark_cancelled(
        self,
        *,
        output_file_id: str | None = None,
        error_file_id: str | None = None,
        request_counts: BatchRequestCounts | None = None,
        usage: BatchUsage | None = None,
    ) -> Batch:
        """``cancelling`` → ``cancelled``: in-flight requests have stopped."""
        return self.trigger(
            Event.MARK_CANCELLED,
            output_file_id=output_file_id,
            error_file_id=error_file_id,
            request_counts=request_counts,
            usage=usage,
        )


_EXIT, _TRANSITION, _ENTER = 0, 1, 2


def _build_machine() -> Machine:
    states = [
        {"name": status.value, "final": status in TERMINAL_STATUSES}
        for status in BatchStatus
    ]
    moves: list[dict[str, Any]] = [
        {
            "trigger": move.event.value,
            "source": [source.value for source in move.sources],
            "dest": move.dest.value,
        }
        for move in MOVES
    ]
    # A no-op is an internal transition: accepted, and the state stays.
    moves += [
        {"trigger": event.value, "source": status.value, "dest": None}
        for status, event in sorted(NOOPS)
    ]
    return Machine(
        model=None,
        states=states,
        transitions=moves,
        initial=INITIAL.value,
        auto_transitions=False,  # no to_<state>() shortcut around the table
        send_event=True,
    )


#: The lifecycle as a ``transitions`` Machine, built from the same table. It has
#: no model of its own: bind yours with ``machine.add_model(obj)``.
machine: Machine = _build_machine()
