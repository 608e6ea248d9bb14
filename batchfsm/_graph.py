"""Facts about the lifecycle graph, derived once from the transition table.

Nothing here is typed by hand: each table below is computed from
:data:`batchfsm._table.MOVES`, and the invariants, ``advance`` and the
strategies read them.
"""

from __future__ import annotations

from ._model import BatchStatus
from ._table import (
    CREATION_FIELDS,
    INITIAL,
    MOVES,
    PROGRESS_FIELDS,
    PROGRESS_STATUSES,
    STAMPS,
    Event,
    Move,
)

__all__ = [
    "ALLOWED",
    "ANCESTORS",
    "CHAIN",
    "DOMINATORS",
    "FIELD_STATUSES",
    "MOVE_FROM",
    "NOOPS",
    "REACHABLE",
    "TOPO_ORDER",
]

#: (status, event) -> the move it makes.
MOVE_FROM: dict[tuple[BatchStatus, Event], Move] = {
    (source, move.event): move for move in MOVES for source in move.sources
}
#: (status, event) pairs that are accepted and change nothing (a retried cancel).
NOOPS: frozenset[tuple[BatchStatus, Event]] = frozenset(
    (move.dest, move.event) for move in MOVES if move.idempotent
)
#: status -> the events it accepts (no-ops included).
ALLOWED: dict[BatchStatus, frozenset[Event]] = {
    status: frozenset(
        event for (source, event) in (*MOVE_FROM, *NOOPS) if source == status
    )
    for status in BatchStatus
}

_SUCCESSORS: dict[BatchStatus, set[BatchStatus]] = {s: set() for s in BatchStatus}
_PREDECESSORS: dict[BatchStatus, set[BatchStatus]] = {s: set() for s in BatchStatus}
for (_source, _), _move in MOVE_FROM.items():
    _SUCCESSORS[_source].add(_move.dest)
    _PREDECESSORS[_move.dest].add(_source)


def _topological_order() -> tuple[BatchStatus, ...]:
    order: list[BatchStatus] = []
    pending = {s: len(_PREDECESSORS[s]) for s in BatchStatus}
    ready = [s for s in BatchStatus if not pending[s]]
    while ready:
        status = ready.pop(0)
        order.append(status)
        for nxt in sorted(_SUCCESSORS[status], key=list(BatchStatus).index):
            pending[nxt] -= 1
            if not pending[nxt]:
                ready.append(nxt)
    if len(order) != len(BatchStatus):
        raise RuntimeError("the lifecycle has a cycle")
    return tuple(order)


#: Every status, each after all statuses that can precede it.
TOPO_ORDER = _topological_order()


def _closure(
    start: BatchStatus, edges: dict[BatchStatus, set[BatchStatus]]
) -> frozenset[BatchStatus]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


#: status -> the statuses reachable from it (itself included).
REACHABLE = {s: _closure(s, _SUCCESSORS) for s in BatchStatus}
#: status -> the statuses on some path from the initial one to it (itself included).
ANCESTORS = {s: _closure(s, _PREDECESSORS) for s in BatchStatus}


def _dominators() -> dict[BatchStatus, frozenset[BatchStatus]]:
    dominators: dict[BatchStatus, frozenset[BatchStatus]] = {}
    for status in TOPO_ORDER:
        preds = [dominators[p] for p in _PREDECESSORS[status]]
        common = frozenset.intersection(*preds) if preds else frozenset()
        dominators[status] = common | {status}
    return dominators


#: status -> the statuses on *every* path from the initial one to it.
DOMINATORS = _dominators()

#: status -> its ancestors' stamp fields, in path order.
CHAIN: dict[BatchStatus, tuple[str, ...]] = {
    s: tuple(STAMPS[a] for a in TOPO_ORDER if a in ANCESTORS[s]) for s in BatchStatus
}
# The order check walks CHAIN as one path; that needs every status's ancestors to
# lie on a single path (true of the Batch lifecycle: no two branches rejoin).
for _status, _ancestors in ANCESTORS.items():
    for _a in _ancestors:
        for _b in _ancestors:
            if _b not in REACHABLE[_a] and _a not in REACHABLE[_b]:
                raise RuntimeError(
                    f"{_a} and {_b} both precede {_status} on different paths"
                )


def _field_statuses() -> dict[str, frozenset[BatchStatus]]:
    setters: dict[str, set[BatchStatus]] = {}
    for move in MOVES:
        for name in move.may_set:
            setters.setdefault(name, set()).add(move.dest)
    for name in PROGRESS_FIELDS:
        setters.setdefault(name, set()).update(PROGRESS_STATUSES)
    return {
        name: frozenset().union(*(REACHABLE[s] for s in dests))
        for name, dests in setters.items()
        if name not in CREATION_FIELDS
    }


#: field -> the statuses in which a batch may carry it (set by a move or by work
#: in progress, kept from then on). Creation fields are absent: always allowed.
FIELD_STATUSES = _field_statuses()

assert TOPO_ORDER[0] == INITIAL
