"""The moves' fast path: straight-line code generated from the table.

attrs.evolve would rerun Batch.__init__: the status converter, the ``object``
validator and the metadata converter, which checks and copies the mapping again.
Every value of a batch passed them when it was built, and the changes are
type-checked by :func:`batchfsm.advance`, so a move copies the slots straight
into an unfrozen instance of the class (:mod:`batchfsm._unfrozen`), with one generated
function per move; ``new_batch`` fills a new one the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ._codegen import compile_function
from ._graph import MOVE_FROM, REACHABLE
from ._model import (
    Batch,
    BatchRequestCounts,
    BatchStatus,
)
from ._table import (
    INITIAL,
    MOVES,
    STAMP_FIELDS,
    STAMPS,
    Event,
    Move,
)
from ._unfrozen import UNFROZEN

__all__ = ["MOVE_BUILDERS", "created", "latest_stamp"]

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


created: Callable[..., Batch] = compile_function(
    "created",
    _created_source(),
    {
        "_new": object.__new__,
        "_OpenBatch": UNFROZEN[Batch],
        "_Batch": Batch,
        "_INITIAL": INITIAL,
        "_NO_REQUESTS": _NO_REQUESTS,
    },
)


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
    """The source of ``latest_stamp(batch) -> (name, value)``: its latest stamp."""
    lines = ["def latest_stamp(b):", "    name, latest = 'created_at', b.created_at"]
    for field in STAMP_FIELDS:
        lines += [
            f"    value = b.{field}",
            "    if value is not None and value > latest:",
            f"        name, latest = {field!r}, value",
        ]
    lines.append("    return name, latest")
    return lines


latest_stamp: Callable[[Batch], tuple[str, Any]] = compile_function(
    "latest_stamp", _latest_source(), {}
)

_Build = Callable[[Batch, int, dict[str, Any]], Batch]
_Builder = tuple[Move, _Build]


def _builders() -> dict[tuple[BatchStatus, Event], _Builder]:
    """(status, event) -> the move and its generated copy."""
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_OpenBatch": UNFROZEN[Batch],
        "_Batch": Batch,
    }
    builds: dict[Event, _Build] = {}
    for move in MOVES:
        name = f"advance_{move.event.value}"
        builds[move.event] = compile_function(
            name, _build_source(name, move), {**namespace, "_DEST": move.dest}
        )
    builders: dict[tuple[BatchStatus, Event], _Builder] = {}
    for (source, event), move in MOVE_FROM.items():
        # A move is a step the rules allow; advance still judges its result.
        assert move.dest in REACHABLE[source]
        builders[source, event] = (move, builds[event])
    return builders


#: (status, event) -> the move, and the function copying a batch into it.
MOVE_BUILDERS = _builders()
