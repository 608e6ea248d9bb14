"""Rules that tell a consistent batch (or a correct server) from a wrong one.

:func:`check` judges one snapshot, :func:`check_step` two snapshots of one batch
taken in order, :func:`check_trace` a whole recording, possibly interleaving many
batches. Each finding is a :class:`Violation` whose ``rule`` is a stable code
listed in :data:`RULES`. Reachability and stamp order come from the transition
table (``batchfsm._graph``), never from hand-typed lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._convert import from_dict
from ._errors import SchemaError
from ._graph import CHAIN, DOMINATORS, FIELD_STATUSES, REACHABLE
from ._model import TERMINAL_STATUSES, Batch, BatchStatus
from ._table import PROGRESS_STATUSES, STAMP_FIELDS, STAMPS

__all__ = ["RULES", "Violation", "check", "check_step", "check_trace"]

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

#: The windows the API accepts, in seconds.
COMPLETION_WINDOWS = {"24h": 86_400}

_IMMUTABLE = (
    "object",
    "endpoint",
    "input_file_id",
    "completion_window",
    "created_at",
    "expires_at",
    "metadata",
)
_SET_ONCE = (*STAMP_FIELDS, "model", "output_file_id", "error_file_id", "errors")
# Statuses a batch can be in once requests may have run (derived, not listed).
_RAN = frozenset().union(*(REACHABLE[s] for s in PROGRESS_STATUSES))
# status -> stamps a batch in it must not carry, and status -> the stamps implied
# by each stamp it may carry (the statuses on every path to that stamp's status).
_FORBIDDEN = {
    s: tuple(name for name in STAMP_FIELDS if name not in CHAIN[s]) for s in BatchStatus
}
_REQUIRED = {s: tuple(STAMPS[d] for d in DOMINATORS[s]) for s in BatchStatus}
_IMPLIED = {
    STAMPS[s]: tuple(STAMPS[d] for d in DOMINATORS[s] if d is not s)
    for s in BatchStatus
}
_FIELD_CHECKS = tuple(FIELD_STATUSES.items())


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


def _check(batch: Batch) -> list[Violation]:
    found: list[Violation] = []
    batch_id = batch.id

    def add(rule: str, message: str, path: str) -> None:
        found.append(Violation(rule, message, path, None, batch_id))

    status = batch.status
    # -- stamps: set on every path to here, unset off all paths, in path order.
    for name in _FORBIDDEN[status]:
        if getattr(batch, name) is not None:
            add("stamp.unexpected", f"{name} is set while status is {status}", name)
    chain = CHAIN[status]
    values = [getattr(batch, name) for name in chain]
    required = set(_REQUIRED[status])
    previous_name, previous = "", -1
    for name, value in zip(chain, values, strict=True):
        if value is None:
            continue
        required.update(_IMPLIED[name])
        if value < 0:
            add("number.negative", f"{name} is {value}", name)
        elif value < previous:
            add(
                "stamp.order",
                f"{name} ({value}) is earlier than {previous_name} ({previous})",
                name,
            )
        previous_name, previous = name, value
    for name, value in zip(chain, values, strict=True):
        if value is None and name in required:
            add("stamp.missing", f"{name} is not set while status is {status}", name)
    # -- the window.
    window = COMPLETION_WINDOWS.get(batch.completion_window)
    if window is None:
        add(
            "completion_window.unknown",
            f"completion_window {batch.completion_window!r} is not one of "
            f"{', '.join(COMPLETION_WINDOWS)}",
            "completion_window",
        )
    elif batch.expires_at != batch.created_at + window:
        add(
            "expires_at.window",
            f"expires_at is {batch.expires_at}, expected created_at + {window} "
            f"= {batch.created_at + window}",
            "expires_at",
        )
    expired_at, expires_at = batch.expired_at, batch.expires_at
    if expired_at is not None and expires_at is not None and expired_at < expires_at:
        add(
            "expired_at.early",
            f"expired_at ({expired_at}) is before expires_at ({expires_at})",
            "expired_at",
        )
    # -- fields that only some moves set.
    for name, statuses in _FIELD_CHECKS:
        if status not in statuses and getattr(batch, name) is not None:
            add("field.unexpected", f"{name} is set while status is {status}", name)
    # -- counts.
    counts = batch.request_counts
    if counts is not None:
        total, completed, failed = counts.total, counts.completed, counts.failed
        if min(total, completed, failed) < 0:
            add("number.negative", f"negative count in {counts}", "request_counts")
        if completed + failed > total:
            add(
                "counts.sum",
                f"completed + failed = {completed + failed} > total = {total}",
                "request_counts",
            )
        elif status not in _RAN and completed + failed:
            add(
                "counts.early",
                f"{completed + failed} requests ran, yet the batch is {status}",
                "request_counts",
            )
        elif status is BatchStatus.COMPLETED and completed + failed != total:
            add(
                "counts.unfinished",
                f"completed + failed = {completed + failed} of total = {total}",
                "request_counts",
            )
    # -- errors.
    errors = batch.errors
    if status is BatchStatus.FAILED and (errors is None or not errors.data):
        add("errors.missing", "a failed batch has no errors.data", "errors.data")
    if errors is not None and errors.object != "list":
        add(
            "errors.object",
            f"errors.object is {errors.object!r}, expected 'list'",
            "errors.object",
        )
    # -- usage.
    usage = batch.usage
    if usage is not None:
        inp, out = usage.input_tokens, usage.output_tokens
        cached = usage.input_tokens_details.cached_tokens
        reasoning = usage.output_tokens_details.reasoning_tokens
        if min(inp, out, cached, reasoning, usage.total_tokens) < 0:
            add("number.negative", f"negative token count in {usage}", "usage")
        if usage.total_tokens != inp + out:
            add(
                "usage.total",
                f"total_tokens = {usage.total_tokens}, input + output = {inp + out}",
                "usage.total_tokens",
            )
        if cached > inp or reasoning > out:
            add(
                "usage.details",
                f"cached {cached} of {inp} input, reasoning {reasoning} of {out} "
                "output tokens",
                "usage",
            )
    return found


def check(batch: Batch) -> list[Violation]:
    """Every rule a single snapshot breaks (empty when it is consistent).

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> bf.check(b)
        []
    """
    return _check(batch)


def check_step(before: Batch, after: Batch) -> list[Violation]:
    """Every rule broken by going from snapshot ``before`` to snapshot ``after``.

    A poller may miss statuses, so a jump is legal when a path leads from one
    status to the other; the stamps of the statuses passed on the way are then
    judged by :func:`check` of ``after``. Only the step is judged here: call
    :func:`check` on each snapshot too (:func:`check_trace` does both).

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> later = bf.advance(b, "start", at=1700000005)
        >>> bf.check_step(b, later), [v.rule for v in bf.check_step(later, b)]
        ([], ['step.status', 'step.set_once'])
    """
    found: list[Violation] = []
    batch_id = after.id

    def add(rule: str, message: str, path: str) -> None:
        found.append(Violation(rule, message, path, None, batch_id))

    if before.id != after.id:
        add("step.identity", f"batch {before.id} became {after.id}", "id")
        return found
    if after.status not in REACHABLE[before.status]:
        add("step.status", f"{before.status} cannot become {after.status}", "status")
    for name in _IMMUTABLE:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            add("step.immutable", f"{name} changed from {old!r} to {new!r}", name)
    for name in _SET_ONCE:
        old = getattr(before, name)
        if old is not None and getattr(after, name) != old:
            new = getattr(after, name)
            add("step.set_once", f"{name} changed from {old!r} to {new!r}", name)
    old_counts, new_counts = before.request_counts, after.request_counts
    if old_counts is not None and (
        new_counts is None
        or new_counts.total < old_counts.total
        or new_counts.completed < old_counts.completed
        or new_counts.failed < old_counts.failed
    ):
        add(
            "step.counts",
            f"request_counts went from {old_counts} to {new_counts}",
            "request_counts",
        )
    old_usage, new_usage = before.usage, after.usage
    if old_usage is not None and (
        new_usage is None
        or new_usage.input_tokens < old_usage.input_tokens
        or new_usage.output_tokens < old_usage.output_tokens
    ):
        add("step.usage", "token usage decreased or vanished", "usage")
    if not found and before.status in TERMINAL_STATUSES and before != after:
        add("step.terminal", f"the {before.status} batch changed", "status")
    return found


def check_trace(snapshots: Iterable[Batch | Mapping[str, Any]]) -> list[Violation]:
    """Every rule broken in a recording of snapshots, judged per batch id.

    Snapshots may be :class:`Batch` objects or API dicts (parsed with
    :func:`from_dict`; a document that does not parse is reported under rule
    ``schema`` and left out of the steps). Snapshots of many batches may be
    interleaved; each batch's snapshots are judged in the order given. Each
    violation carries the snapshot's ``index`` in the trace.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> running = bf.advance(b, "start", at=1700000005)
        >>> bf.check_trace([b, running, running])
        []
        >>> [(v.index, v.rule) for v in bf.check_trace([running, b])]
        [(1, 'step.status'), (1, 'step.set_once')]
    """
    found: list[Violation] = []
    latest: dict[str, Batch] = {}
    for index, snapshot in enumerate(snapshots):
        if isinstance(snapshot, Batch):
            batch = snapshot
        else:
            try:
                batch = from_dict(snapshot)
            except SchemaError as exc:
                batch_id = snapshot.get("id") if isinstance(snapshot, Mapping) else None
                found.extend(
                    Violation(
                        "schema",
                        message,
                        path or None,
                        index,
                        batch_id if isinstance(batch_id, str) else None,
                    )
                    for path, message in exc.errors
                )
                continue
        previous = latest.get(batch.id)
        if previous == batch:  # an unchanged poll: judged already
            continue
        problems = _check(batch)
        if previous is not None:
            problems += check_step(previous, batch)
        found.extend(attrs.evolve(v, index=index) for v in problems)
        latest[batch.id] = batch
    return found
