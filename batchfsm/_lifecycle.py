"""The lifecycle layer's door: moves, the machine object, the transitions Machine.

Each job has its own module: :mod:`batchfsm._moves` (``new_batch``,
``advance``, ``progress``, ``allowed_events``, ``can``),
:mod:`batchfsm._movegen` (the code generated for them), :mod:`batchfsm._machine`
(``BatchMachine``) and :mod:`batchfsm._transitions` (``machine``).
"""

from ._machine import BatchMachine, TransitionCallback
from ._moves import advance, allowed_events, can, new_batch, progress
from ._transitions import machine

__all__ = [
    "BatchMachine",
    "TransitionCallback",
    "advance",
    "allowed_events",
    "can",
    "machine",
    "new_batch",
    "progress",
]
