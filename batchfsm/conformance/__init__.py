"""Judge any Batch API server from the outside.

:func:`run` drives a server through plain ``httpx2`` (so no client's leniency
hides a fault) and returns a :class:`Report`: one :class:`Result` per check in
:data:`CHECKS`, each with a stable id, an outcome and evidence or a reason.
Checks are declared once, with :func:`check`; :data:`CHECKS` (id ->
:class:`Check`), the run order and the dependencies all come from those
declarations.
:func:`emulator_client` gives a client for the built-in emulator, in-process,
on a virtual clock. ``batchfsm conform`` is the command-line face of both.

Example:
    >>> from batchfsm.conformance import emulator_client, run
    >>> http, wait = emulator_client()
    >>> with http:
    ...     report = run(http, wait=wait)
    >>> report.passed, len(report.results)
    (True, 26)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._registry import CHECKS, Check, check
from ._runner import Report, Result, run

if TYPE_CHECKING:
    import httpx2

    from ..emulator import VirtualClock

__all__ = ["CHECKS", "Check", "Report", "Result", "check", "emulator_client", "run"]


def emulator_client(**options: object) -> tuple[httpx2.Client, Callable[[float], None]]:
    """A client for a fresh built-in emulator, and how to let its time pass.

    ``options`` go to :class:`batchfsm.emulator.Emulator`.

    Example:
        >>> http, wait = emulator_client(any_model=True)
        >>> with http:
        ...     http.get("/v1/batches").json()["data"]
        []
    """
    import httpx2

    from ..emulator import Emulator, EmulatorTransport, VirtualClock, create_app

    clock = VirtualClock()
    emulator = Emulator(clock=clock, **options)  # type: ignore[arg-type]
    http = httpx2.Client(
        transport=EmulatorTransport(create_app(emulator)),
        base_url="http://batchfsm.emulator",
    )
    return http, _waiting(clock)


def _waiting(clock: VirtualClock) -> Callable[[float], None]:
    """How to let seconds pass on ``clock``, fractions carried until whole.

    The virtual clock moves in whole seconds, and the polls wait fractions.
    """
    carried = 0.0

    def wait(seconds: float) -> None:
        nonlocal carried
        carried += seconds
        clock.advance(int(carried))
        carried -= int(carried)

    return wait
