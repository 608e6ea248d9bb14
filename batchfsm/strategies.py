"""Hypothesis strategies for Batch objects, API dicts, events and traces.

Everything drawn here is reached the way a real batch is: created with
:func:`batchfsm.new_batch` and moved along a legal path with
:func:`batchfsm.advance`, so stamps, counts, usage and results are consistent
and pass :func:`batchfsm.check`. Paths and fields come from the transition
table, so the strategies follow it when it changes.

Shrinking goes towards the shortest path to the wanted status, the earliest
times, the fewest requests and no metadata.

Example:
    >>> from hypothesis import given
    >>> import batchfsm as bf
    >>> from batchfsm.strategies import batches
    >>> @given(batches(status="cancelled"))
    ... def test_cancelled_batches_are_consistent(batch):
    ...     assert bf.check(batch) == []
    ...     assert batch.cancelling_at <= batch.cancelled_at
    >>> test_cancelled_batches_are_consistent()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
from hypothesis import strategies as st

from ._endpoints import ENDPOINT_MODELS
from ._graph import CHAIN, FIELD_STATUSES, MOVE_FROM
from ._invariants import RULES
from ._json_io import to_dict
from ._lifecycle import advance, new_batch, progress
from ._model import (
    Batch,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    BatchStatus,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
)
from ._table import INITIAL, PROGRESS_STATUSES, STAMPS, Event

__all__ = [
    "BROKEN_RULES",
    "ENDPOINTS",
    "api_dicts",
    "batches",
    "broken_dicts",
    "events",
    "lifecycles",
    "traces",
]

#: The endpoints the Batch API accepts, with models that serve them.
ENDPOINTS: dict[str, tuple[str, ...]] = {
    endpoint: tuple(sorted(models)) for endpoint, models in ENDPOINT_MODELS.items()
}
_ERROR_CODES = (
    "invalid_json_line",
    "missing_required_parameter",
    "invalid_url",
    "model_not_found",
    "token_limit_exceeded",
)


def _paths() -> dict[BatchStatus, tuple[tuple[Event, ...], ...]]:
    paths: dict[BatchStatus, list[tuple[Event, ...]]] = {s: [] for s in BatchStatus}

    def walk(status: BatchStatus, path: tuple[Event, ...]) -> None:
        paths[status].append(path)
        for (source, event), move in MOVE_FROM.items():
            if source is status:
                walk(move.dest, (*path, event))

    walk(INITIAL, ())
    # Shortest first, so that shrinking goes to the shortest way there.
    return {s: tuple(sorted(p, key=len)) for s, p in paths.items()}


#: status -> every event path from the initial status to it, shortest first.
_PATHS = _paths()

_hex_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
_times = st.integers(min_value=1_700_000_000, max_value=1_900_000_000)
_delay = st.integers(min_value=0, max_value=3_600)
_metadata = st.none() | st.dictionaries(
    st.sampled_from(["customer_id", "batch_description", "run", "team", "job"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40),
    max_size=4,
)


def _statuses(
    status: BatchStatus | str | Iterable[BatchStatus | str] | None,
) -> list[BatchStatus]:
    if status is None:
        return list(BatchStatus)
    if isinstance(status, str):
        return [BatchStatus(status)]
    return [BatchStatus(s) for s in status]


_NO_USAGE = BatchUsage(
    input_tokens=0,
    input_tokens_details=InputTokensDetails(cached_tokens=0),
    output_tokens=0,
    output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    total_tokens=0,
)


@st.composite
def _usage(draw: st.DrawFn, before: BatchUsage | None) -> BatchUsage:
    """Usage that only grows: each count is the previous one plus a draw."""
    inp = (before.input_tokens if before else 0) + draw(st.integers(0, 50_000))
    out = (before.output_tokens if before else 0) + draw(st.integers(0, 20_000))
    cached_before = before.input_tokens_details.cached_tokens if before else 0
    reasoning_before = before.output_tokens_details.reasoning_tokens if before else 0
    cached = draw(st.integers(cached_before, max(cached_before, inp)))
    reasoning = draw(st.integers(reasoning_before, max(reasoning_before, out)))
    return BatchUsage(
        input_tokens=inp,
        input_tokens_details=InputTokensDetails(cached_tokens=cached),
        output_tokens=out,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
        total_tokens=inp + out,
    )


@st.composite
def _progress(draw: st.DrawFn, batch: Batch, *, finish: bool) -> dict[str, Any]:
    """More requests done (all of them when ``finish``), and the usage they took."""
    counts = batch.request_counts or BatchRequestCounts(total=0, completed=0, failed=0)
    left = counts.total - counts.completed - counts.failed
    done = left if finish else draw(st.integers(0, left))
    failed = draw(st.integers(0, done))
    changes: dict[str, Any] = {
        "request_counts": BatchRequestCounts(
            total=counts.total,
            completed=counts.completed + done - failed,
            failed=counts.failed + failed,
        )
    }
    if counts.total:
        changes["usage"] = draw(_usage(batch.usage))
    return changes


# Statuses entered once every request has run (finalizing: the work is done).
_ALL_RUN = frozenset({BatchStatus.FINALIZING, BatchStatus.COMPLETED})


@st.composite
def _changes(draw: st.DrawFn, batch: Batch, event: Event) -> dict[str, Any]:
    """Values for the fields the table lets ``event`` set, consistent with ``batch``."""
    move = MOVE_FROM[batch.status, event]
    may_set = move.may_set
    changes: dict[str, Any] = {}
    if "request_counts" in may_set:
        if batch.status is INITIAL:
            if move.dest in PROGRESS_STATUSES:  # validation counted the requests
                total = draw(st.integers(1, 1_000))
                changes["request_counts"] = BatchRequestCounts(
                    total=total, completed=0, failed=0
                )
        else:  # work done since the last move is accounted for by the move
            finish = move.dest in _ALL_RUN
            progress = draw(_progress(batch, finish=finish))
            changes.update(
                (name, value) for name, value in progress.items() if name in may_set
            )
    if "model" in may_set:
        changes["model"] = draw(st.sampled_from(ENDPOINTS[batch.endpoint]))
    if "errors" in may_set:
        errors = st.builds(
            BatchError,
            code=st.sampled_from(_ERROR_CODES),
            line=st.none() | st.integers(1, 50_000),
            message=st.sampled_from(["Invalid input.", "Line is not valid JSON."]),
            param=st.none() | st.sampled_from(["custom_id", "body.model", "url"]),
        )
        changes["errors"] = BatchErrors(
            data=tuple(draw(st.lists(errors, min_size=1, max_size=3)))
        )
    counts = changes.get("request_counts", batch.request_counts)
    if (
        "output_file_id" in may_set
        and counts is not None
        and counts.completed
        and draw(st.booleans()) | (move.dest is BatchStatus.COMPLETED)
    ):
        changes["output_file_id"] = "file-" + draw(_hex_ids)[:22]
    if "error_file_id" in may_set and counts is not None and counts.failed:
        changes["error_file_id"] = "file-" + draw(_hex_ids)[:22]
    return changes


@st.composite
def lifecycles(
    draw: st.DrawFn,
    status: BatchStatus | str | Iterable[BatchStatus | str] | None = None,
    *,
    polls: bool = False,
) -> list[Batch]:
    """The snapshots of one batch from creation to a status in ``status``.

    The first snapshot is the new batch, each next one the result of one legal
    move; with ``polls=True``, snapshots of work in progress (more requests
    done, more tokens used, no move) are drawn in between as well.

    Example:
        >>> from hypothesis import given
        >>> import batchfsm as bf
        >>> @given(lifecycles("completed"))
        ... def test(snapshots):
        ...     assert bf.check_trace(snapshots) == []
        >>> test()
    """
    target = draw(st.sampled_from(_statuses(status)))
    path = draw(st.sampled_from(_PATHS[target]))
    endpoint = draw(st.sampled_from(sorted(ENDPOINTS)))
    batch = new_batch(
        id="batch_" + draw(_hex_ids),
        input_file_id="file-" + draw(_hex_ids)[:22],
        endpoint=endpoint,
        created_at=draw(_times),
        metadata=draw(_metadata),
    )
    if draw(st.booleans()):  # as the live API creates it, usage already zeroed
        batch = attrs.evolve(batch, usage=_NO_USAGE)
    snapshots = [batch]
    now = batch.created_at
    for event in path:
        if polls and batch.status in PROGRESS_STATUSES:
            for _ in range(draw(st.integers(0, 2))):
                now += draw(_delay)
                batch = progress(batch, **draw(_progress(batch, finish=False)))
                snapshots.append(batch)
        now += draw(_delay)
        if event is Event.EXPIRE:
            assert batch.expires_at is not None
            now = max(now, batch.expires_at + draw(_delay))
        batch = advance(batch, event, at=now, **draw(_changes(batch, event)))
        snapshots.append(batch)
    return snapshots


def batches(
    status: BatchStatus | str | Iterable[BatchStatus | str] | None = None,
) -> st.SearchStrategy[Batch]:
    """Valid batches (passing :func:`batchfsm.check`), in one of ``status``.

    ``status`` is a status, several, or ``None`` for any. Each batch was reached
    along a legal path from :func:`batchfsm.new_batch`, with realistic ids,
    endpoints, models, metadata, counts and usage.

    Example:
        >>> from hypothesis import given
        >>> import batchfsm as bf
        >>> @given(batches(status=["completed", "expired"]))
        ... def test(batch):
        ...     assert batch.status in bf.TERMINAL_STATUSES
        >>> test()
    """
    return lifecycles(status).map(lambda snapshots: snapshots[-1])


def api_dicts(
    status: BatchStatus | str | Iterable[BatchStatus | str] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """:func:`batches` as the API's JSON: every key present, ``None`` where unset.

    Example:
        >>> from hypothesis import given
        >>> @given(api_dicts(status="failed"))
        ... def test(data):
        ...     assert data["status"] == "failed" and data["errors"]["data"]
        >>> test()
    """
    return batches(status).map(to_dict)


def events() -> st.SearchStrategy[Event]:
    """Any event; shrinks towards ``start``.

    Example:
        >>> import batchfsm as bf
        >>> from hypothesis import given
        >>> @given(events())
        ... def test(event):
        ...     assert isinstance(event, bf.Event)
        >>> test()
    """
    return st.sampled_from(list(Event))


@st.composite
def traces(
    draw: st.DrawFn, max_batches: int = 3, *, skip_polls: bool = True
) -> list[Batch]:
    """What a poller records of up to ``max_batches`` batches, interleaved.

    Each batch's snapshots keep their order; with ``skip_polls`` the poller may
    miss some of them (never the first it saw of a batch), and it may see the
    same snapshot twice. Every drawn trace passes :func:`batchfsm.check_trace`.

    Example:
        >>> import batchfsm as bf
        >>> from hypothesis import given
        >>> @given(traces())
        ... def test(trace):
        ...     assert bf.check_trace(trace) == []
        >>> test()
    """
    runs = draw(
        st.lists(
            lifecycles(polls=True),
            min_size=1,
            max_size=max_batches,
            unique_by=lambda snapshots: snapshots[0].id,
        )
    )
    queues: list[list[Batch]] = []
    for snapshots in runs:
        seen = [snapshots[0]]
        for snapshot in snapshots[1:]:
            if skip_polls and draw(st.booleans()):
                continue  # missed this one
            seen.append(snapshot)
            if draw(st.integers(0, 4)) == 0:
                seen.append(snapshot)  # polled again, nothing changed
        queues.append(seen)
    trace: list[Batch] = []
    while queues:
        queue = queues[draw(st.integers(0, len(queues) - 1))]
        trace.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return trace


# -- broken documents ------------------------------------------------------------
#
# Each breaker takes an API dict of a batch in one of its statuses and breaks
# exactly its rule; the statuses are those where the rule can be broken alone.

_Breaker = tuple[Iterable[BatchStatus], Any]
_S = BatchStatus


def _unset_own_stamp(data: dict[str, Any], draw: st.DrawFn) -> None:
    data[STAMPS[_S(data["status"])]] = None


def _set_forbidden_stamp(data: dict[str, Any], draw: st.DrawFn) -> None:
    chain = CHAIN[_S(data["status"])]
    name = draw(st.sampled_from([n for n in STAMPS.values() if n not in chain]))
    data[name] = max(v for v in (data[n] for n in chain) if v is not None) + 86_400


def _rewind_own_stamp(data: dict[str, Any], draw: st.DrawFn) -> None:
    chain = CHAIN[_S(data["status"])]
    earlier = [data[n] for n in chain[:-1] if data[n] is not None]
    data[chain[-1]] = earlier[-1] - 1


def _set_unexpected_field(data: dict[str, Any], draw: st.DrawFn) -> None:
    status = _S(data["status"])
    name = draw(
        st.sampled_from(
            sorted(n for n, ok in FIELD_STATUSES.items() if status not in ok)
        )
    )
    data[name] = {
        "errors": {
            "object": "list",
            "data": [{"code": "x", "line": None, "message": "x", "param": None}],
        },
        "usage": {
            "input_tokens": 1,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 1,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 2,
        },
    }.get(name, "file-unexpected")


def _set(path: str, value: Any) -> Any:
    *parents, last = path.split(".")

    def breaker(data: dict[str, Any], draw: st.DrawFn) -> None:
        target = data
        for parent in parents:
            target = target[parent]
        target[last] = value(target) if callable(value) else value

    return breaker


_NOT_VALIDATING = [s for s in _S if s is not _S.VALIDATING]
_WITH_USAGE = [_S.FINALIZING, _S.COMPLETED]
_BREAKERS: dict[str, _Breaker] = {
    "schema": (_S, _set("status", "running")),
    "number.negative": (_NOT_VALIDATING, _set("request_counts.failed", lambda c: -1)),
    "stamp.missing": (_NOT_VALIDATING, _unset_own_stamp),
    "stamp.unexpected": (
        [s for s in _S if s is not _S.CANCELLED],
        _set_forbidden_stamp,
    ),
    "stamp.order": (
        [s for s in _NOT_VALIDATING if s is not _S.EXPIRED],
        _rewind_own_stamp,
    ),
    "completion_window.unknown": (_S, _set("completion_window", "48h")),
    "expires_at.window": (_S, _set("expires_at", lambda d: d["expires_at"] - 1)),
    "expired_at.early": (
        [_S.EXPIRED],
        _set("expired_at", lambda d: d["expires_at"] - 1),
    ),
    "field.unexpected": (
        [_S.VALIDATING, _S.IN_PROGRESS, _S.FAILED],
        _set_unexpected_field,
    ),
    "counts.sum": (_S, _set("request_counts.completed", lambda c: c["total"] + 1)),
    "counts.early": (
        [_S.VALIDATING, _S.FAILED],
        _set("request_counts", {"total": 2, "completed": 1, "failed": 0}),
    ),
    "counts.unfinished": (
        [_S.COMPLETED],
        _set("request_counts.total", lambda c: c["total"] + 1),
    ),
    "errors.missing": ([_S.FAILED], _set("errors", None)),
    "errors.object": ([_S.FAILED], _set("errors.object", "dict")),
    "usage.total": (
        _WITH_USAGE,
        _set("usage.total_tokens", lambda u: u["total_tokens"] + 1),
    ),
    "usage.details": (
        _WITH_USAGE,
        _set(
            "usage.input_tokens_details.cached_tokens",
            lambda d: d["cached_tokens"] + 10**9,
        ),
    ),
}

#: The rules :func:`broken_dicts` can break: every single-snapshot rule. Of these,
#: ``schema`` and ``number.negative`` make documents that :func:`batchfsm.from_dict`
#: refuses (``SchemaError``); :func:`batchfsm.check` flags the others.
BROKEN_RULES: frozenset[str] = frozenset(_BREAKERS)
assert set(RULES) >= BROKEN_RULES


def broken_dicts(
    rule: str | None = None,
) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """API dicts that break exactly one rule, as ``(rule, document)``.

    ``rule`` picks the rule (one of :data:`BROKEN_RULES`); ``None`` draws any.
    For testing validators: a document for ``schema`` or ``number.negative`` is
    not a valid Batch at all; every other one parses, and :func:`batchfsm.check`
    flags its rule and no other. Shrinks like :func:`api_dicts`, and towards
    the first rule in alphabetical order.

    Raises:
        ValueError: an unknown rule.

    Example:
        >>> import batchfsm as bf
        >>> from hypothesis import given
        >>> @given(broken_dicts(rule="counts.sum"))
        ... def test(case):
        ...     rule, document = case
        ...     assert {v.rule for v in bf.check(bf.from_dict(document))} == {rule}
        >>> test()
    """
    if rule is not None and rule not in _BREAKERS:
        raise ValueError(
            f"unknown rule {rule!r}; rules: {', '.join(sorted(_BREAKERS))}"
        )
    rules = [rule] if rule is not None else sorted(_BREAKERS)
    return st.sampled_from(rules).flatmap(_broken)


def _broken(rule: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    statuses, breaker = _BREAKERS[rule]

    @st.composite
    def broken(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
        data = draw(api_dicts(list(statuses)))
        breaker(data, draw)
        return rule, data

    return broken()
