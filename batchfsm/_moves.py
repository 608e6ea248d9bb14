"""Moving a batch through its lifecycle: ``new_batch``, ``advance``, ``progress``.

The moves come from the declaration in :mod:`batchfsm._table`; here they are
compiled into dict lookups so that a move costs a lookup, a copy and a check,
not a per-object state machine (the copies are generated in
:mod:`batchfsm._movegen`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._errors import InvalidProgress, InvalidTransition, SchemaError, UnknownEvent
from ._graph import ALLOWED, NOOPS
from ._invariants import _check, _check_step, snapshot_ok, step_ok
from ._model import (
    COMPLETION_WINDOWS,
    Batch,
    BatchRequestCounts,
    BatchStatus,
    BatchUsage,
    metadata_problems,
)
from ._movegen import MOVE_BUILDERS, created, latest_stamp
from ._table import (
    MOVES,
    PROGRESS_FIELDS,
    PROGRESS_STATUSES,
    STAMPS,
    Event,
)

__all__ = ["advance", "allowed_events", "as_event", "can", "new_batch", "progress"]

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


def as_event(event: Event | str) -> Event:
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
    return created(
        id,
        endpoint,
        model,
        input_file_id,
        completion_window,
        created_at,
        created_at + window,
        metadata,
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
    return as_event(event) in ALLOWED[batch.status]


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
        plan = MOVE_BUILDERS.get((status, event))  # type: ignore[arg-type]
    except TypeError:  # an unhashable "event"
        plan = None
    if plan is None:
        event = as_event(event)
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
    move, build = plan
    if at.__class__ is not int:
        raise TypeError(f"at: expected Unix seconds (int), got {at!r}")
    latest_name, latest = latest_stamp(batch)
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
    # The rules find nothing for almost every move; otherwise they run again
    # through check/check_step, which word what is wrong.
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
    if snapshot_ok(after) and step_ok(batch, after):
        return after
    violations = _check(after) + _check_step(batch, after)
    raise InvalidProgress(
        status,
        f"progress would leave batch {batch.id} inconsistent: "
        + "; ".join(f"{v.rule}: {v.message}" for v in violations),
        tuple(violations),
    )
