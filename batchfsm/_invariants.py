"""Rules that tell a consistent batch (or a correct server) from a wrong one.

:func:`check` judges one snapshot, :func:`check_step` two snapshots of one batch
taken in order, :func:`check_trace` a whole recording, possibly interleaving many
batches. Each finding is a :class:`Violation` whose ``rule`` is a stable code
listed in :data:`RULES`. The rules themselves are plain Python in
:mod:`batchfsm._rules`, reading reachability and stamp order from the
transition table (``batchfsm._graph``), never from hand-typed lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._errors import SchemaError
from ._json_io import _Dumps, from_dict, pydantic_dump

# COMPLETION_WINDOWS is re-exported: the emulator and conformance import it here.
from ._model import COMPLETION_WINDOWS, Batch
from ._rules import RULES, Violation, snapshot_problems, step_problems

__all__ = [
    "COMPLETION_WINDOWS",
    "RULES",
    "Violation",
    "check",
    "check_step",
    "check_trace",
    "snapshot_ok",
    "step_ok",
]


def _dumped(snapshot: object) -> object:
    """``snapshot``, or its JSON dump if it is a pydantic model.

    The official client's ``openai.types.Batch`` is a pydantic model; its
    ``model_dump(mode="json")`` is the API's JSON.
    """
    dumped = pydantic_dump(snapshot)
    return snapshot if dumped is None else dumped


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
    return snapshot_problems(batch)


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
    return step_problems(before, after)


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


# -- the rules themselves live in batchfsm._rules -----------------------------------

_check = snapshot_problems
_check_step = step_problems


def snapshot_ok(batch: Batch) -> bool:
    """True when ``check(batch)`` finds nothing (False for a malformed batch)."""
    try:
        return not snapshot_problems(batch)
    except Exception:  # noqa: BLE001 - malformed: check() says how
        return False


def step_ok(before: Batch, after: Batch) -> bool:
    """True when ``check_step(before, after)`` finds nothing."""
    try:
        return not step_problems(before, after)
    except Exception:  # noqa: BLE001 - malformed: check_step() says how
        return False


_snapshot_ok = snapshot_ok
_step_ok = step_ok
