"""Rules that tell a consistent batch (or a correct server) from a wrong one.

:func:`check` judges one snapshot, :func:`check_step` two snapshots of one batch
taken in order, :func:`check_trace` a whole recording, possibly interleaving many
batches. Each finding is a :class:`Violation` whose ``rule`` is a stable code
listed in :data:`RULES`. Reachability and stamp order come from the transition
table (``batchfsm._graph``), never from hand-typed lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._codegen import compile_function
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
    if _snapshot_ok(batch):
        return []
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
    if _step_ok(before, after):
        return []
    return _check_step(before, after)


def _check_step(before: Batch, after: Batch) -> list[Violation]:
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
        batch_id = batch.id
        previous = latest.get(batch_id)
        if previous is None:
            if not _snapshot_ok(batch):
                found.extend(attrs.evolve(v, index=index) for v in _check(batch))
        elif previous is batch or previous == batch:
            continue  # an unchanged poll: judged already
        elif not (_snapshot_ok(batch) and _step_ok(previous, batch)):
            problems = _check(batch) + _check_step(previous, batch)
            found.extend(attrs.evolve(v, index=index) for v in problems)
        latest[batch_id] = batch
    return found


# -- the fast gear: predicates generated from the table ---------------------------
#
# ``_check`` and ``_check_step`` above are the reference: readable, generic, and
# the only code that words a violation. Most snapshots break nothing, so each is
# first put to a predicate generated per status from the same tables, with the
# loops unrolled and the per-status lookups folded in. A predicate answers True
# only when the reference would find nothing (a test holds the two together); on
# False, or if it raises on a malformed object, the reference runs and reports.


def _snapshot_source(status: BatchStatus) -> list[str]:
    """The source of a predicate: does a snapshot in ``status`` break no rule?

    It tests the very conditions ``_check`` reports, in the same words, so that
    malformed values fail (or raise) the same way.
    """
    name = f"snapshot_ok_{status.value}"
    lines = [f"def {name}(b):"]
    add = lines.append
    # stamp.unexpected
    for stamp in _FORBIDDEN[status]:
        add(f"    if b.{stamp} is not None:")
        add("        return False")
    # number.negative and stamp.order, along the chain
    chain = CHAIN[status]
    add("    previous = -1")
    for stamp in chain:
        add(f"    v_{stamp} = b.{stamp}")
        add(f"    if v_{stamp} is not None:")
        add(f"        if v_{stamp} < 0 or v_{stamp} < previous:")
        add("            return False")
        add(f"        previous = v_{stamp}")
    # stamp.missing: required outright, or implied by a later stamp that is set
    for stamp in chain:
        if stamp in _REQUIRED[status]:
            add(f"    if v_{stamp} is None:")
        else:
            implying = [f"v_{o} is not None" for o in chain if stamp in _IMPLIED[o]]
            if not implying:
                continue
            add(f"    if v_{stamp} is None and ({' or '.join(implying)}):")
        add("        return False")
    # completion_window.unknown, expires_at.window, expired_at.early
    add("    window = _WINDOWS.get(b.completion_window)")
    add("    if window is None:")
    add("        return False")
    add("    expires_at = b.expires_at")
    add("    if expires_at != b.created_at + window:")
    add("        return False")
    add("    expired_at = b.expired_at")
    add("    if (")
    add("        expired_at is not None")
    add("        and expires_at is not None")
    add("        and expired_at < expires_at")
    add("    ):")
    add("        return False")
    # field.unexpected
    for field, statuses in _FIELD_CHECKS:
        if status not in statuses:
            add(f"    if b.{field} is not None:")
            add("        return False")
    # number.negative, counts.sum, counts.early, counts.unfinished
    add("    counts = b.request_counts")
    add("    if counts is not None:")
    add("        total = counts.total")
    add("        completed = counts.completed")
    add("        failed = counts.failed")
    add("        if total < 0 or completed < 0 or failed < 0:")
    add("            return False")
    add("        if completed + failed > total:")
    add("            return False")
    if status not in _RAN:
        add("        if completed + failed:")
        add("            return False")
    if status is BatchStatus.COMPLETED:
        add("        if completed + failed != total:")
        add("            return False")
    # errors.missing, errors.object
    add("    errors = b.errors")
    if status is BatchStatus.FAILED:
        add("    if errors is None or not errors.data:")
        add("        return False")
    add("    if errors is not None and errors.object != 'list':")
    add("        return False")
    # number.negative, usage.total, usage.details
    add("    usage = b.usage")
    add("    if usage is not None:")
    add("        inp = usage.input_tokens")
    add("        out = usage.output_tokens")
    add("        cached = usage.input_tokens_details.cached_tokens")
    add("        reasoning = usage.output_tokens_details.reasoning_tokens")
    add("        total_tokens = usage.total_tokens")
    add("        if (")
    add("            inp < 0")
    add("            or out < 0")
    add("            or cached < 0")
    add("            or reasoning < 0")
    add("            or total_tokens < 0")
    add("        ):")
    add("            return False")
    add("        if total_tokens != inp + out:")
    add("            return False")
    add("        if cached > inp or reasoning > out:")
    add("            return False")
    add("    return True")
    return lines


def _step_source(status: BatchStatus) -> list[str]:
    """The source of a predicate: does a step from ``status`` break no rule?"""
    name = f"step_ok_from_{status.value}"
    lines = [f"def {name}(before, after):"]
    add = lines.append
    add("    if before.id != after.id:")
    add("        return False")
    add("    if after.status not in _REACHABLE:")
    add("        return False")
    for field in _IMMUTABLE:
        add(f"    if before.{field} != after.{field}:")
        add("        return False")
    for field in _SET_ONCE:
        add(f"    old = before.{field}")
        add(f"    if old is not None and after.{field} != old:")
        add("        return False")
    add("    old_counts = before.request_counts")
    add("    if old_counts is not None:")
    add("        new_counts = after.request_counts")
    add("        if (")
    add("            new_counts is None")
    add("            or new_counts.total < old_counts.total")
    add("            or new_counts.completed < old_counts.completed")
    add("            or new_counts.failed < old_counts.failed")
    add("        ):")
    add("            return False")
    add("    old_usage = before.usage")
    add("    if old_usage is not None:")
    add("        new_usage = after.usage")
    add("        if (")
    add("            new_usage is None")
    add("            or new_usage.input_tokens < old_usage.input_tokens")
    add("            or new_usage.output_tokens < old_usage.output_tokens")
    add("        ):")
    add("            return False")
    if status in TERMINAL_STATUSES:
        add("    if before != after:")
        add("        return False")
    add("    return True")
    return lines


#: status -> the generated snapshot predicate for batches in it.
SNAPSHOT_OK: dict[BatchStatus, Callable[[Batch], bool]] = {
    s: compile_function(
        f"snapshot_ok_{s.value}", _snapshot_source(s), {"_WINDOWS": COMPLETION_WINDOWS}
    )
    for s in BatchStatus
}
#: status -> the generated step predicate for steps from a batch in it.
STEP_OK: dict[BatchStatus, Callable[[Batch, Batch], bool]] = {
    s: compile_function(
        f"step_ok_from_{s.value}", _step_source(s), {"_REACHABLE": REACHABLE[s]}
    )
    for s in BatchStatus
}


def _snapshot_ok(batch: Batch) -> bool:
    """True when ``_check(batch)`` is sure to find nothing."""
    try:
        return SNAPSHOT_OK[batch.status](batch)
    except Exception:  # noqa: BLE001 - malformed: the reference says how
        return False


def _step_ok(before: Batch, after: Batch) -> bool:
    """True when ``_check_step(before, after)`` is sure to find nothing."""
    try:
        return STEP_OK[before.status](before, after)
    except Exception:  # noqa: BLE001 - malformed: the reference says how
        return False
