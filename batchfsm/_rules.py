"""The consistency rules of a batch and of a step between two snapshots.

Each rule is ordinary Python below, written once: a function per group of
rules appends a :class:`Violation` for each one broken. What a rule needs to
know of the lifecycle (which stamps a status must or must not carry, which
fields it may hold, where it can go next) is read from the tables that
:mod:`batchfsm._graph` derives from the transition table, gathered per status
in :class:`StatusFacts`; nothing is a hand-typed list of statuses.

:func:`snapshot_problems` and :func:`step_problems` are what
:func:`batchfsm.check`, :func:`batchfsm.check_step`, :func:`batchfsm.check_trace`
and :func:`batchfsm.advance` run.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, NamedTuple

import attrs

from ._graph import CHAIN, DOMINATORS, FIELD_STATUSES, REACHABLE
from ._model import COMPLETION_WINDOWS, TERMINAL_STATUSES, Batch, BatchStatus
from ._table import PROGRESS_STATUSES, STAMP_FIELDS, STAMPS

__all__ = [
    "IMMUTABLE_FIELDS",
    "RULES",
    "SET_ONCE_FIELDS",
    "Violation",
    "snapshot_problems",
    "step_problems",
]

#: Every rule code, with what it demands. Codes are stable: match on them.
RULES: dict[str, str] = {
    "schema": "the snapshot is a valid Batch object (types, required fields)",
    "number.negative": "counts, token numbers and timestamps are not negative",
    "stamp.missing": "the stamps of the statuses the batch must have passed are set",
    "stamp.unexpected": "no stamp of a status the batch cannot have passed is set",
    "stamp.order": "stamps follow the order of the path the batch took",
    "completion_window.unknown": "the completion window is one the API accepts",
    "expires_at.window": "expires_at is created_at plus the completion window",
    "expired_at.early": "a batch does not expire before its expires_at",
    "field.unexpected": "results and errors appear only in statuses that set them",
    "counts.sum": "completed + failed requests do not exceed the total",
    "counts.unfinished": "a completed batch accounts for every request",
    "counts.early": "no request has run (completed or failed) before the batch ran",
    "errors.missing": "a failed batch says why, in a non-empty errors.data",
    "errors.object": "errors.object is 'list'",
    "usage.total": "total_tokens is input_tokens + output_tokens",
    "usage.details": "cached tokens <= input tokens, reasoning <= output tokens",
    "step.identity": "the two snapshots are of the same batch",
    "step.status": "the later status can be reached from the earlier one",
    "step.immutable": "fields fixed at creation never change",
    "step.set_once": "a stamp, model, result file or errors, once set, never change",
    "step.counts": "request counts never decrease or vanish",
    "step.usage": "token usage never decreases or vanishes",
    "step.terminal": "a batch in a terminal status never changes again",
}

#: Fields fixed at creation.
IMMUTABLE_FIELDS = (
    "object",
    "endpoint",
    "input_file_id",
    "completion_window",
    "created_at",
    "expires_at",
    "metadata",
)
#: Fields that, once set, never change.
SET_ONCE_FIELDS = (*STAMP_FIELDS, "model", "output_file_id", "error_file_id", "errors")
_WINDOWS = ", ".join(COMPLETION_WINDOWS)

_Getter = Callable[[Batch], tuple[Any, ...]]


def _getter(names: tuple[str, ...]) -> _Getter:
    """A function giving the values of the fields ``names``, as a tuple.

    The rules read many fields at once to find that none is set or that none
    changed: one ``attrgetter`` call does it in C, then only a broken rule
    looks field by field.
    """
    if len(names) == 1:
        (name,) = names
        return lambda b: (getattr(b, name),)
    if not names:
        return lambda b: ()
    getter: _Getter = attrgetter(*names)
    return getter


@attrs.frozen
class Violation:
    """One broken rule.

    Attributes:
        rule: the stable code of the rule (a key of ``batchfsm.RULES``).
        message: what is wrong, in words.
        path: the JSON path of the offending field, if one is to blame.
        index: the position of the snapshot in the trace (``check_trace`` only).
        batch_id: the id of the batch, when known.

    Example:
        >>> import batchfsm as bf
        >>> bf.Violation("counts.sum", "3 + 1 > 2", "request_counts")
        Violation(rule='counts.sum', message='3 + 1 > 2', path='request_counts', index=None, batch_id=None)
    """  # noqa: E501

    rule: str
    message: str
    path: str | None = None
    index: int | None = None
    batch_id: str | None = None


class StatusFacts(NamedTuple):
    """What the rules need to know of one status, read off the table."""

    status: BatchStatus
    #: stamps of statuses a batch in it cannot have passed
    forbidden: tuple[str, ...]
    #: stamps of the statuses it can have passed, in path order
    chain: tuple[str, ...]
    #: stamp -> when it must be set: always (None), or when one of these is set
    required: dict[str, tuple[str, ...] | None]
    #: fields a batch in it may not carry
    unexpected: tuple[str, ...]
    #: whether requests may have run (completed or failed) by now
    ran: bool
    #: where a later snapshot may be
    reachable: frozenset[BatchStatus]
    #: the values of the forbidden stamps and the unexpected fields
    forbidden_values: _Getter
    forbidden_count: int
    #: the values of the chain's stamps
    chain_values: _Getter


# stamp -> the stamps of the statuses on every path to its status.
_IMPLIED = {
    STAMPS[s]: {STAMPS[d] for d in DOMINATORS[s] if d is not s} for s in BatchStatus
}
_RAN = frozenset().union(*(REACHABLE[s] for s in PROGRESS_STATUSES))


def _facts(status: BatchStatus) -> StatusFacts:
    chain = CHAIN[status]
    always = {STAMPS[d] for d in DOMINATORS[status]}
    required: dict[str, tuple[str, ...] | None] = {}
    for stamp in chain:
        implying = tuple(later for later in chain if stamp in _IMPLIED[later])
        if stamp in always:
            required[stamp] = None
        elif implying:
            required[stamp] = implying
    forbidden = tuple(name for name in STAMP_FIELDS if name not in chain)
    unexpected = tuple(f for f, ok in FIELD_STATUSES.items() if status not in ok)
    return StatusFacts(
        status=status,
        forbidden=forbidden,
        chain=chain,
        required=required,
        unexpected=unexpected,
        ran=status in _RAN,
        reachable=REACHABLE[status],
        forbidden_values=_getter(forbidden + unexpected),
        forbidden_count=len(forbidden + unexpected),
        chain_values=_getter(chain),
    )


FACTS: dict[BatchStatus, StatusFacts] = {s: _facts(s) for s in BatchStatus}


# -- one snapshot ---------------------------------------------------------------


def snapshot_problems(b: Batch) -> list[Violation]:
    """Every rule the snapshot ``b`` breaks (empty when it is consistent)."""
    found: list[Violation] = []
    facts = FACTS[b.status]
    # Most snapshots carry none of the fields their status forbids, and their
    # stamps all set and in order: a look at all of them at once tells.
    nothing_forbidden = facts.forbidden_values(b).count(None) == facts.forbidden_count
    if not nothing_forbidden:
        _forbidden_stamps(b, facts, found)
    stamps = facts.chain_values(b)
    if None in stamps or stamps[0] < 0 or list(stamps) != sorted(stamps):
        _stamp_rules(b, facts, stamps, found)
    _window_rules(b, found)
    if not nothing_forbidden:
        _unexpected_fields(b, facts, found)
    if b.request_counts is not None:
        _count_rules(b, facts, found)
    if b.errors is not None or facts.status is BatchStatus.FAILED:
        _error_rules(b, facts, found)
    if b.usage is not None:
        _usage_rules(b, found)
    return found


def _forbidden_stamps(b: Batch, facts: StatusFacts, found: list[Violation]) -> None:
    """No stamp of a status the batch cannot have passed."""
    for stamp in facts.forbidden:
        if getattr(b, stamp) is not None:
            message = f"{stamp} is set while status is {facts.status}"
            found.append(Violation("stamp.unexpected", message, stamp, None, b.id))


def _unexpected_fields(b: Batch, facts: StatusFacts, found: list[Violation]) -> None:
    """Results and errors only in the statuses that set them."""
    for field in facts.unexpected:
        if getattr(b, field) is not None:
            message = f"{field} is set while status is {facts.status}"
            found.append(Violation("field.unexpected", message, field, None, b.id))


def _stamp_rules(
    b: Batch, facts: StatusFacts, stamps: tuple[Any, ...], found: list[Violation]
) -> None:
    """The stamps of the path: none negative, in order, none missing."""
    values = dict(zip(facts.chain, stamps, strict=True))
    previous_name, previous = "", -1
    for stamp, value in values.items():
        if value is None:
            continue
        if value < 0:
            message = f"{stamp} is {value}"
            found.append(Violation("number.negative", message, stamp, None, b.id))
        elif value < previous:
            message = f"{stamp} ({value}) is earlier than {previous_name} ({previous})"
            found.append(Violation("stamp.order", message, stamp, None, b.id))
        previous_name, previous = stamp, value
    for stamp, implying in facts.required.items():
        if values[stamp] is None and (
            implying is None or any(values[i] is not None for i in implying)
        ):
            message = f"{stamp} is not set while status is {facts.status}"
            found.append(Violation("stamp.missing", message, stamp, None, b.id))


def _window_rules(b: Batch, found: list[Violation]) -> None:
    """A known completion window, expires_at at its end, no expiry before it."""
    window = COMPLETION_WINDOWS.get(b.completion_window)
    if window is None:
        message = f"completion_window {b.completion_window!r} is not one of {_WINDOWS}"
        path = "completion_window"
        found.append(Violation("completion_window.unknown", message, path, None, b.id))
    elif b.expires_at != b.created_at + window:
        message = (
            f"expires_at is {b.expires_at}, expected created_at + {window} "
            f"= {b.created_at + window}"
        )
        found.append(Violation("expires_at.window", message, "expires_at", None, b.id))
    expired_at, expires_at = b.expired_at, b.expires_at
    if expired_at is not None and expires_at is not None and expired_at < expires_at:
        message = f"expired_at ({expired_at}) is before expires_at ({expires_at})"
        found.append(Violation("expired_at.early", message, "expired_at", None, b.id))


def _count_rules(b: Batch, facts: StatusFacts, found: list[Violation]) -> None:
    counts = b.request_counts
    assert counts is not None
    total, completed, failed = counts.total, counts.completed, counts.failed
    path = "request_counts"
    if total < 0 or completed < 0 or failed < 0:
        message = f"negative count in {counts}"
        found.append(Violation("number.negative", message, path, None, b.id))
    ended = completed + failed
    if ended > total:
        message = f"completed + failed = {ended} > total = {total}"
        found.append(Violation("counts.sum", message, path, None, b.id))
    elif ended and not facts.ran:
        message = f"{ended} requests ran, yet the batch is {facts.status}"
        found.append(Violation("counts.early", message, path, None, b.id))
    elif ended != total and facts.status is BatchStatus.COMPLETED:
        message = f"completed + failed = {ended} of total = {total}"
        found.append(Violation("counts.unfinished", message, path, None, b.id))


def _error_rules(b: Batch, facts: StatusFacts, found: list[Violation]) -> None:
    errors = b.errors
    if facts.status is BatchStatus.FAILED and (errors is None or not errors.data):
        message = "a failed batch has no errors.data"
        found.append(Violation("errors.missing", message, "errors.data", None, b.id))
    if errors is not None and errors.object != "list":
        message = f"errors.object is {errors.object!r}, expected 'list'"
        found.append(Violation("errors.object", message, "errors.object", None, b.id))


def _usage_rules(b: Batch, found: list[Violation]) -> None:
    usage = b.usage
    assert usage is not None
    inp, out = usage.input_tokens, usage.output_tokens
    cached = usage.input_tokens_details.cached_tokens
    reasoning = usage.output_tokens_details.reasoning_tokens
    total = usage.total_tokens
    if inp < 0 or out < 0 or cached < 0 or reasoning < 0 or total < 0:
        message = f"negative token count in {usage}"
        found.append(Violation("number.negative", message, "usage", None, b.id))
    if total != inp + out:
        message = f"total_tokens = {total}, input + output = {inp + out}"
        path = "usage.total_tokens"
        found.append(Violation("usage.total", message, path, None, b.id))
    if cached > inp or reasoning > out:
        message = (
            f"cached {cached} of {inp} input, reasoning {reasoning} of {out} "
            "output tokens"
        )
        found.append(Violation("usage.details", message, "usage", None, b.id))


# -- a step between two snapshots -------------------------------------------------

_immutable_values = _getter(IMMUTABLE_FIELDS)
_set_once_values = _getter(SET_ONCE_FIELDS)


def step_problems(before: Batch, after: Batch) -> list[Violation]:
    """Every step rule going from ``before`` to ``after`` breaks."""
    found: list[Violation] = []
    batch_id = after.id
    if before.id != after.id:
        message = f"batch {before.id} became {after.id}"
        return [Violation("step.identity", message, "id", None, batch_id)]
    if after.status not in FACTS[before.status].reachable:
        message = f"{before.status} cannot become {after.status}"
        found.append(Violation("step.status", message, "status", None, batch_id))
    olds, news = _immutable_values(before), _immutable_values(after)
    if olds != news:
        for field, old, new in zip(IMMUTABLE_FIELDS, olds, news, strict=True):
            if old != new:
                message = f"{field} changed from {old!r} to {new!r}"
                found.append(
                    Violation("step.immutable", message, field, None, batch_id)
                )
    olds, news = _set_once_values(before), _set_once_values(after)
    if olds != news:
        for field, old, new in zip(SET_ONCE_FIELDS, olds, news, strict=True):
            if old is not None and new != old:
                message = f"{field} changed from {old!r} to {new!r}"
                found.append(Violation("step.set_once", message, field, None, batch_id))
    _progress_rules(before, after, found)
    if before.status in TERMINAL_STATUSES and not found and before != after:
        message = f"the {before.status} batch changed"
        found.append(Violation("step.terminal", message, "status", None, batch_id))
    return found


def _progress_rules(before: Batch, after: Batch, found: list[Violation]) -> None:
    """Request counts and token usage never go back nor vanish."""
    old_counts, new_counts = before.request_counts, after.request_counts
    if old_counts is not None and (
        new_counts is None
        or new_counts.total < old_counts.total
        or new_counts.completed < old_counts.completed
        or new_counts.failed < old_counts.failed
    ):
        message = f"request_counts went from {old_counts} to {new_counts}"
        found.append(
            Violation("step.counts", message, "request_counts", None, after.id)
        )
    old_usage, new_usage = before.usage, after.usage
    if old_usage is not None and (
        new_usage is None
        or new_usage.input_tokens < old_usage.input_tokens
        or new_usage.output_tokens < old_usage.output_tokens
    ):
        message = "token usage decreased or vanished"
        found.append(Violation("step.usage", message, "usage", None, after.id))
