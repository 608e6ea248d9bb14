"""The lifecycle as a ``transitions`` Machine, built from the same table.

One machine, shared: :class:`batchfsm.BatchMachine` triggers its events with
itself as the model (``machine.events[name].trigger(model, ...)``, what a bound
``model.start()`` calls), without ``add_model``, so no machine, no bound
methods and no entry in ``machine.models`` are kept per object. Each
transition's ``before`` makes the move (:meth:`Lifecycle._make_move`); each
state's ``on_exit`` and ``on_enter`` run the callbacks a model registered for it.
A model of your own bound with ``machine.add_model(obj)`` moves between the
same states, and these callbacks leave it alone.
"""

from __future__ import annotations

from typing import Any

from transitions import EventData, Machine

from ._graph import NOOPS
from ._model import (
    TERMINAL_STATUSES,
    BatchStatus,
)
from ._table import (
    INITIAL,
    MOVES,
)

__all__ = ["Lifecycle", "machine"]


class Lifecycle:
    """A model whose moves are batch moves: what :data:`machine` calls back.

    Each hook gets transitions' ``EventData``; ``data.args`` are the arguments
    the model passed to the event's ``trigger``.
    """

    __slots__ = ()

    def _make_move(self, data: EventData) -> None:
        """Before the state changes: make the move, or raise its refusal."""
        raise NotImplementedError

    def _exited(self, data: EventData) -> None:
        """On leaving ``data.transition.source``."""
        raise NotImplementedError

    def _moved(self, data: EventData) -> None:
        """Between leaving a state and entering the next."""
        raise NotImplementedError

    def _entered(self, data: EventData) -> None:
        """On entering ``data.transition.dest``."""
        raise NotImplementedError


# Module functions, not method names: transitions would look a name up on every
# model, and a plain model bound to the machine has none of these.


def _make_move(data: EventData) -> None:
    if isinstance(data.model, Lifecycle):
        data.model._make_move(data)


def _exited(data: EventData) -> None:
    if isinstance(data.model, Lifecycle):
        data.model._exited(data)


def _moved(data: EventData) -> None:
    if isinstance(data.model, Lifecycle):
        data.model._moved(data)


def _entered(data: EventData) -> None:
    if isinstance(data.model, Lifecycle):
        data.model._entered(data)


def _build_machine() -> Machine:
    states = [
        {
            "name": status.value,
            "final": status in TERMINAL_STATUSES,
            # on_transition runs between the exits and the entries.
            "on_exit": [_exited, _moved],
            "on_enter": [_entered],
        }
        for status in BatchStatus
    ]
    moves: list[dict[str, Any]] = [
        {
            "trigger": move.event.value,
            "source": [source.value for source in move.sources],
            "dest": move.dest.value,
            "before": [_make_move],
        }
        for move in MOVES
    ]
    # A no-op is an internal transition: accepted, and the state stays (no
    # exit, no entry); its move still judges the arguments.
    moves += [
        {
            "trigger": event.value,
            "source": status.value,
            "dest": None,
            "before": [_make_move],
        }
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


#: The lifecycle as a ``transitions`` Machine, built from the same table; it
#: runs every :class:`batchfsm.BatchMachine` move. It has no model of its own:
#: bind yours with ``machine.add_model(obj)``.
machine: Machine = _build_machine()
