"""Who runs due work, and when: the caller, here and now, or a background thread.

In-process, every call of the emulator first runs the work due by the clock's
time (:meth:`Runner.sync`), so with a virtual clock the same calls give the
same batches. After :meth:`Runner.start`, a background thread runs it instead,
woken early by :meth:`Runner.wake` (when a write adds or moves work, never by
a read), and calls never wait for it. One runner
of due work at a time; a handler calling the emulator from inside a run does
not start another. A store that is unavailable (:class:`StoreUnavailable`)
makes the thread wait and try again (:class:`._outage.Backoff`); a call
running the work itself raises it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ._dispatch import on_handler_loop
from ._outage import Backoff
from ._store_errors import StoreUnavailable

__all__ = ["Runner"]

log = logging.getLogger("batchfsm.emulator")


class Runner:
    """Runs ``work`` (all that is due now): in the caller, or in a thread.

    Example:
        >>> ran = []
        >>> runner = Runner(lambda: ran.append(1))
        >>> runner.sync()  # no thread: the caller runs it
        >>> ran
        [1]
    """

    def __init__(self, work: Callable[[], bool | None]) -> None:
        self._work = work
        self._running = threading.Lock()  # one runner of due work at a time
        self._inside = threading.local()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """Whether a background thread runs the work."""
        return self._thread is not None

    def run(self) -> None:
        """Run the work here and now (unless this thread is running it already).

        All of it: pass after pass while a pass says some is left (a pass
        of ``work`` that returns True ended at its time bound).
        """
        while self._pass():
            pass

    def _pass(self) -> bool:
        """One pass of the work; whether it says some is left."""
        if getattr(self._inside, "run", False) or on_handler_loop():
            return False  # a handler calling the emulator: its own run is under way
        with self._running:
            self._inside.run = True
            try:
                return bool(self._work())
            finally:
                self._inside.run = False

    def start(self, poll_seconds: float) -> None:
        """Run the work in a background thread from now on, every ``poll_seconds``."""
        if self._thread is not None:
            return
        self._stop.clear()

        backoff = Backoff()

        def loop() -> None:
            while not self._stop.is_set():
                wait = poll_seconds
                try:
                    if self._pass():  # some is left: the next pass at once,
                        wait = 0  # unless told to stop meanwhile
                except StoreUnavailable:
                    # Told once by the work's Outage; the work is tried again
                    # after a wait (or as soon as a call wrote: it is back).
                    wait = max(poll_seconds, backoff.next())
                except Exception:  # pragma: no cover - the work isolates each batch
                    log.exception("the emulator's worker failed; carrying on")
                else:
                    backoff.reset()
                if wait:
                    self._wake.wait(wait)
                    self._wake.clear()

        self._thread = threading.Thread(
            target=loop, name="batchfsm-emulator-worker", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (if started) and wait for it."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join()

    def sync(self) -> None:
        """Before a call: run the work due, unless a background thread does."""
        # With the thread started the call leaves the work to it and does not
        # wake it: the answer would not wait for it anyway, and a wake per
        # call costs a thread switch, a fifth of a retrieve under serve.
        # Writes that add or move work wake it themselves (wake()).
        if self._thread is None:
            self.run()

    def wake(self) -> None:
        """New work may be due: the background thread (if any) runs it now."""
        self._wake.set()
