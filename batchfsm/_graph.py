"""Facts about the lifecycle graph, derived once from the transition table.

Nothing here is typed by hand: each table below is computed from
:data:`batchfsm._table.MOVES`, and the invariants, ``advance`` and the
strategies read them.
"""

from __future__ import annotations

from ._errors import BatchFSMError
from ._model import TERMINAL_STATUSES, BatchStatus
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
    "TableError",
    "check_table",
]

Edges = dict[BatchStatus, set[BatchStatus]]


class TableError(BatchFSMError):
    """The transition table is inconsistent (a bug in batchfsm itself)."""


def _edges(moves: tuple[Move, ...]) -> tuple[Edges, Edges]:
    successors: Edges = {s: set() for s in BatchStatus}
    predecessors: Edges = {s: set() for s in BatchStatus}
    for move in moves:
        for source in move.sources:
            successors[source].add(move.dest)
            predecessors[move.dest].add(source)
    return successors, predecessors


def _closure(start: BatchStatus, edges: Edges) -> frozenset[BatchStatus]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


def check_table(moves: tuple[Move, ...]) -> None:
    """Raise :class:`TableError` unless ``moves`` is a sound lifecycle.

    Beyond soundness, the invariants need one property of the graph: the
    statuses on the paths to any status lie on a single path (no two branches
    rejoin), so that stamps can be ordered along it.
    """
    if set(STAMPS) != set(BatchStatus) or len(set(STAMPS.values())) != len(STAMPS):
        raise TableError("every status needs a stamp field of its own")
    seen_pairs: set[tuple[BatchStatus, Event]] = set()
    for move in moves:
        if move.dest == INITIAL:
            raise TableError(f"{move.event}: nothing may enter the initial status")
        for source in move.sources:
            if source in TERMINAL_STATUSES:
                raise TableError(f"{move.event}: leaves terminal status {source}")
            if (source, move.event) in seen_pairs:
                raise TableError(f"{move.event} from {source} is declared twice")
            seen_pairs.add((source, move.event))
    successors, predecessors = _edges(moves)
    unreachable = set(BatchStatus) - _closure(INITIAL, successors)
    if unreachable:
        raise TableError(f"unreachable statuses: {sorted(unreachable)}")
    for status in BatchStatus:
        reach = _closure(status, successors)
        if any(status in _closure(nxt, successors) for nxt in successors[status]):
            raise TableError(f"{status} lies on a cycle")
        if not reach & TERMINAL_STATUSES:
            raise TableError(f"{status} can reach no terminal status")
        ancestors = _closure(status, predecessors)
        for a in ancestors:
            for b in ancestors:
                apart = b not in _closure(a, successors)
                if apart and a not in _closure(b, successors):
                    raise TableError(f"{a} and {b} precede {status} on different paths")


check_table(MOVES)

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

_SUCCESSORS, _PREDECESSORS = _edges(MOVES)


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
    return tuple(order)


#: Every status, each after all statuses that can precede it.
TOPO_ORDER = _topological_order()


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
