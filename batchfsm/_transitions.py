"""The lifecycle as a ``transitions`` Machine, built from the same table."""

from __future__ import annotations

from typing import Any

from transitions import Machine

from ._graph import NOOPS
from ._model import (
    TERMINAL_STATUSES,
    BatchStatus,
)
from ._table import (
    INITIAL,
    MOVES,
)

__all__ = ["machine"]


def _build_machine() -> Machine:
    states = [
        {"name": status.value, "final": status in TERMINAL_STATUSES}
        for status in BatchStatus
    ]
    moves: list[dict[str, Any]] = [
        {
            "trigger": move.event.value,
            "source": [source.value for source in move.sources],
            "dest": move.dest.value,
        }
        for move in MOVES
    ]
    # A no-op is an internal transition: accepted, and the state stays.
    moves += [
        {"trigger": event.value, "source": status.value, "dest": None}
        for status, event in sorted(NOOPS)
    ]
    return Machine(
        model=None,
        states=states,
        transitions=moves,
        initial=INITIAL.value,
        auto_transitions=False,  # no to_<state>() shortcut around the table
        send_event=True,
    )


#: The lifecycle as a ``transitions`` Machine, built from the same table. It has
#: no model of its own: bind yours with ``machine.add_model(obj)``.
machine: Machine = _build_machine()
