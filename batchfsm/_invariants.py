"""Rules that tell a consistent batch (or a correct server) from a wrong one.

:func:`check` judges one snapshot, :func:`check_step` two snapshots of one batch
taken in order, :func:`check_trace` a whole recording, possibly interleaving many
batches. Each finding is a :class:`Violation` whose ``rule`` is a stable code
listed in :data:`RULES`. Reachability and stamp order come from the transition
table (``batchfsm._graph``), never from hand-typed lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from ._codegen import compile_function
from ._convert import from_dict
from ._errors import SchemaError
from ._graph import CHAIN, DOMINATORS, FIELD_STATUSES, REACHABLE

# COMPLETION_WINDOWS is re-exported: the emulator and conformance import it here.
from ._model import COMPLETION_WINDOWS, TERMINAL_STATUSES, Batch, BatchStatus
from ._table import PROGRESS_STATUSES, STAMP_FIELDS, STAMPS

__all__ = [
    "COMPLETION_WINDOWS",
    "RULES",
    "Violation",
    "check",
    "check_step",
    "check_trace",
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


class _Dumps(Protocol):
    """A pydantic model, such as the official client's ``openai.types.Batch``."""

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


def _dumped(snapshot: object) -> object:
    """``snapshot``, or its JSON dump if it is a pydantic model.

    The official client's ``openai.types.Batch`` is a pydantic model; its
    ``model_dump(mode="json")`` is the API's JSON.
    """
    if isinstance(snapshot, Mapping):
        return snapshot
    dump = getattr(snapshot, "model_dump", None)
    return dump(mode="json") if callable(dump) else snapshot


def check(batch: Batch | Mapping[str, Any] | _Dumps) -> list[Violation]:
    """Every rule a single snapshot breaks (empty when it is consistent).

    ``batch`` may also be an API dict or the official client's
    ``openai.types.Batch``, judged as :func:`check_trace` judges one
    snapshot (one that does not parse gives violations of rule ``schema``).

    Raises:
        TypeError: ``batch`` is none of those.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="file-1",
        ...                  endpoint="/v1/embeddings", created_at=1700000000)
        >>> bf.check(b), bf.check(bf.to_dict(b))
        ([], [])
    """
    if not isinstance(batch, Batch):
        api_dict = _dumped(batch)
        if not isinstance(api_dict, Mapping):
            raise TypeError(
                "check()'s batch must be a batchfsm.Batch, an API dict or an "
                f"openai.types.Batch, got {type(batch).__name__}"
            )
        return [attrs.evolve(v, index=None) for v in check_trace([api_dict])]
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


def check_trace(
    snapshots: Iterable[Batch | Mapping[str, Any] | _Dumps],
) -> list[Violation]:
    """Every rule broken in a recording of snapshots, judged per batch id.

    Snapshots may be :class:`Batch` objects, API dicts or the official
    client's ``openai.types.Batch`` objects (parsed with :func:`from_dict`;
    a document that does not parse is reported under rule ``schema`` and
    left out of the steps; so is anything else).
    Snapshots of many batches may be interleaved; each batch's snapshots are
    judged in the order given. Each violation carries the snapshot's ``index``
    in the trace.

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
            api_dict = _dumped(snapshot)
            try:
                batch = from_dict(api_dict)  # type: ignore[arg-type]
            except SchemaError as exc:
                batch_id = api_dict.get("id") if isinstance(api_dict, Mapping) else None
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


# -- the rules, each stated once ------------------------------------------------------
#
# Each rule is written once below, per status, as straight-line source in which a
# broken rule is a _Report: its code, its words (an f-string body over the
# locals) and its path. Two functions are rendered from each template: the fast
# predicate (SNAPSHOT_OK, STEP_OK), in which a report is ``return False``, and
# the reporting check (_check, _check_step), in which it records a Violation.
# Neither can change without the other: they are the same lines.

_NOTHING_FOUND = "_NOTHING_FOUND_"  # "no rule broken so far", in either rendering


@attrs.frozen
class _Report:
    indent: str
    rule: str
    message: str  # an f-string body over the function's locals
    path: str
    stop: bool = False  # nothing after it can be judged

    def __attrs_post_init__(self) -> None:
        assert self.rule in RULES, self.rule


_Template = list["str | _Report"]


def _snapshot_template(status: BatchStatus) -> _Template:
    """The rules of one snapshot in ``status``, over ``b``."""
    out: _Template = []
    add = out.append
    for stamp in _FORBIDDEN[status]:
        add(f"    if b.{stamp} is not None:")
        add(
            _Report(
                "        ",
                "stamp.unexpected",
                f"{stamp} is set while status is {status}",
                stamp,
            )
        )
    # Along the path to here: no stamp negative, each after the one before.
    chain = CHAIN[status]
    add("    previous_name, previous = '', -1")
    for stamp in chain:
        add(f"    v_{stamp} = b.{stamp}")
        add(f"    if v_{stamp} is not None:")
        add(f"        if v_{stamp} < 0:")
        add(
            _Report(
                "            ", "number.negative", f"{stamp} is {{v_{stamp}}}", stamp
            )
        )
        add(f"        elif v_{stamp} < previous:")
        order = (
            f"{stamp} ({{v_{stamp}}}) is earlier than {{previous_name}} ({{previous}})"
        )
        add(_Report("            ", "stamp.order", order, stamp))
        add(f"        previous_name, previous = {stamp!r}, v_{stamp}")
    # A stamp is required outright, or implied by a later stamp that is set.
    for stamp in chain:
        if stamp in _REQUIRED[status]:
            add(f"    if v_{stamp} is None:")
        else:
            implying = [f"v_{o} is not None" for o in chain if stamp in _IMPLIED[o]]
            if not implying:
                continue
            add(f"    if v_{stamp} is None and ({' or '.join(implying)}):")
        missing = f"{stamp} is not set while status is {status}"
        add(_Report("        ", "stamp.missing", missing, stamp))
    windows = ", ".join(COMPLETION_WINDOWS)
    add("    window = _WINDOWS.get(b.completion_window)")
    add("    if window is None:")
    unknown = f"completion_window {{b.completion_window!r}} is not one of {windows}"
    add(_Report("        ", "completion_window.unknown", unknown, "completion_window"))
    add("    elif b.expires_at != b.created_at + window:")
    wrong = (
        "expires_at is {b.expires_at}, expected created_at + {window} "
        "= {b.created_at + window}"
    )
    add(_Report("        ", "expires_at.window", wrong, "expires_at"))
    add("    expired_at, expires_at = b.expired_at, b.expires_at")
    add(
        "    if expired_at is not None and expires_at is not None"
        " and expired_at < expires_at:"
    )
    early = "expired_at ({expired_at}) is before expires_at ({expires_at})"
    add(_Report("        ", "expired_at.early", early, "expired_at"))
    for field, statuses in _FIELD_CHECKS:
        if status not in statuses:
            add(f"    if b.{field} is not None:")
            unexpected = f"{field} is set while status is {status}"
            add(_Report("        ", "field.unexpected", unexpected, field))
    add("    counts = b.request_counts")
    add("    if counts is not None:")
    add("        total, completed = counts.total, counts.completed")
    add("        failed = counts.failed")
    add("        if total < 0 or completed < 0 or failed < 0:")
    negative = "negative count in {counts}"
    add(_Report("            ", "number.negative", negative, "request_counts"))
    add("        if completed + failed > total:")
    over = "completed + failed = {completed + failed} > total = {total}"
    add(_Report("            ", "counts.sum", over, "request_counts"))
    if status not in _RAN:
        add("        elif completed + failed:")
        ran = f"{{completed + failed}} requests ran, yet the batch is {status}"
        add(_Report("            ", "counts.early", ran, "request_counts"))
    if status is BatchStatus.COMPLETED:
        add("        elif completed + failed != total:")
        short = "completed + failed = {completed + failed} of total = {total}"
        add(_Report("            ", "counts.unfinished", short, "request_counts"))
    add("    errors = b.errors")
    if status is BatchStatus.FAILED:
        add("    if errors is None or not errors.data:")
        why = "a failed batch has no errors.data"
        add(_Report("        ", "errors.missing", why, "errors.data"))
    add("    if errors is not None and errors.object != 'list':")
    tag = "errors.object is {errors.object!r}, expected 'list'"
    add(_Report("        ", "errors.object", tag, "errors.object"))
    add("    usage = b.usage")
    add("    if usage is not None:")
    add("        inp, out = usage.input_tokens, usage.output_tokens")
    add("        cached = usage.input_tokens_details.cached_tokens")
    add("        reasoning = usage.output_tokens_details.reasoning_tokens")
    add("        total_tokens = usage.total_tokens")
    add(
        "        if inp < 0 or out < 0 or cached < 0 or reasoning < 0"
        " or total_tokens < 0:"
    )
    add(
        _Report(
            "            ",
            "number.negative",
            "negative token count in {usage}",
            "usage",
        )
    )
    add("        if total_tokens != inp + out:")
    sums = "total_tokens = {total_tokens}, input + output = {inp + out}"
    add(_Report("            ", "usage.total", sums, "usage.total_tokens"))
    add("        if cached > inp or reasoning > out:")
    parts = (
        "cached {cached} of {inp} input, reasoning {reasoning} of {out} output tokens"
    )
    add(_Report("            ", "usage.details", parts, "usage"))
    return out


def _step_template(status: BatchStatus) -> _Template:
    """The rules of a step from a snapshot in ``status``, over ``before``/``after``."""
    out: _Template = []
    add = out.append
    add("    if before.id != after.id:")
    identity = "batch {before.id} became {after.id}"
    add(_Report("        ", "step.identity", identity, "id", stop=True))
    add("    if after.status not in _REACHABLE:")
    back = "{before.status} cannot become {after.status}"
    add(_Report("        ", "step.status", back, "status"))
    for field in _IMMUTABLE:
        add(f"    if before.{field} != after.{field}:")
        changed = f"{field} changed from {{before.{field}!r}} to {{after.{field}!r}}"
        add(_Report("        ", "step.immutable", changed, field))
    for field in _SET_ONCE:
        add(f"    old = before.{field}")
        add(f"    if old is not None and after.{field} != old:")
        rewritten = f"{field} changed from {{old!r}} to {{after.{field}!r}}"
        add(_Report("        ", "step.set_once", rewritten, field))
    add("    old_counts, new_counts = before.request_counts, after.request_counts")
    add("    if old_counts is not None and (")
    add("        new_counts is None")
    for counter in ("total", "completed", "failed"):
        add(f"        or new_counts.{counter} < old_counts.{counter}")
    add("    ):")
    fewer = "request_counts went from {old_counts} to {new_counts}"
    add(_Report("        ", "step.counts", fewer, "request_counts"))
    add("    old_usage, new_usage = before.usage, after.usage")
    add("    if old_usage is not None and (")
    add("        new_usage is None")
    for part in ("input_tokens", "output_tokens"):
        add(f"        or new_usage.{part} < old_usage.{part}")
    add("    ):")
    less = "token usage decreased or vanished"
    add(_Report("        ", "step.usage", less, "usage"))
    if status in TERMINAL_STATUSES:
        add(f"    if {_NOTHING_FOUND} and before != after:")
        add(
            _Report(
                "        ",
                "step.terminal",
                "the {before.status} batch changed",
                "status",
            )
        )
    return out


def _predicate_source(name: str, args: str, template: _Template) -> list[str]:
    """The fast form: True when no rule of ``template`` is broken."""
    lines = [f"def {name}({args}):"]
    for line in template:
        if isinstance(line, _Report):
            lines.append(f"{line.indent}return False")
        else:
            lines.append(line.replace(_NOTHING_FOUND, "True"))
    lines.append("    return True")
    return lines


def _reporting_source(
    name: str, args: str, batch_id: str, template: _Template
) -> list[str]:
    """The reporting form: every rule of ``template`` broken, as Violations."""
    lines = [f"def {name}({args}):", "    found = []", f"    batch_id = {batch_id}"]
    for line in template:
        if isinstance(line, _Report):
            lines.append(
                f"{line.indent}found.append(_Violation({line.rule!r}, "
                f"f{line.message!r}, {line.path!r}, None, batch_id))"
            )
            if line.stop:
                lines.append(f"{line.indent}return found")
        else:
            lines.append(line.replace(_NOTHING_FOUND, "not found"))
    lines.append("    return found")
    return lines


def _compile(name: str, lines: list[str], status: BatchStatus) -> Callable[..., Any]:
    namespace = {
        "_WINDOWS": COMPLETION_WINDOWS,
        "_REACHABLE": REACHABLE[status],
        "_Violation": Violation,
    }
    return compile_function(name, lines, namespace)


def _compile_rules() -> tuple[
    dict[BatchStatus, Callable[[Batch], bool]],
    dict[BatchStatus, Callable[[Batch, Batch], bool]],
    dict[BatchStatus, Callable[[Batch], list[Violation]]],
    dict[BatchStatus, Callable[[Batch, Batch], list[Violation]]],
]:
    snapshot_ok, step_ok = {}, {}
    snapshot_report, step_report = {}, {}
    for s in BatchStatus:
        snapshot, step = _snapshot_template(s), _step_template(s)
        name = f"snapshot_ok_{s.value}"
        snapshot_ok[s] = _compile(name, _predicate_source(name, "b", snapshot), s)
        name = f"step_ok_from_{s.value}"
        step_ok[s] = _compile(name, _predicate_source(name, "before, after", step), s)
        name = f"check_{s.value}"
        source = _reporting_source(name, "b", "b.id", snapshot)
        snapshot_report[s] = _compile(name, source, s)
        name = f"check_step_from_{s.value}"
        source = _reporting_source(name, "before, after", "after.id", step)
        step_report[s] = _compile(name, source, s)
    return snapshot_ok, step_ok, snapshot_report, step_report


#: SNAPSHOT_OK: status -> the predicate for snapshots in it; STEP_OK: status ->
#: the predicate for steps from a snapshot in it (True when nothing is broken).
SNAPSHOT_OK, STEP_OK, _SNAPSHOT_REPORT, _STEP_REPORT = _compile_rules()


def _check(batch: Batch) -> list[Violation]:
    """Every rule ``batch`` breaks, worded."""
    return _SNAPSHOT_REPORT[batch.status](batch)


def _check_step(before: Batch, after: Batch) -> list[Violation]:
    """Every step rule going from ``before`` to ``after`` breaks, worded."""
    return _STEP_REPORT[before.status](before, after)


def _snapshot_ok(batch: Batch) -> bool:
    """True when ``_check(batch)`` is sure to find nothing."""
    try:
        return SNAPSHOT_OK[batch.status](batch)
    except Exception:  # noqa: BLE001 - malformed: the reporting form says how
        return False


def _step_ok(before: Batch, after: Batch) -> bool:
    """True when ``_check_step(before, after)`` is sure to find nothing."""
    try:
        return STEP_OK[before.status](before, after)
    except Exception:  # noqa: BLE001 - malformed: the reporting form says how
        return False
