"""Clocks: where the emulator's time comes from.

Virtual time for tests, the system clock for serving, and the system clock
anchored in a store, for serving across restarts and processes.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Protocol

from ._store_errors import StoreError

if TYPE_CHECKING:
    from ._sql import SQLStore

__all__ = ["MAX_SPEED", "AnchoredClock", "Clock", "SystemClock", "VirtualClock"]

#: The fastest a :class:`SystemClock` runs: a year of real time stays far
#: inside the int64 seconds of the API's stamps.
MAX_SPEED = 1e9


class Clock(Protocol):
    """Anything that tells the time in Unix seconds."""

    def now(self) -> float:
        """The time now, in Unix seconds."""


class SystemClock:
    """The real time, optionally running ``speed`` times faster from its start.

    Example:
        >>> clock = SystemClock()
        >>> abs(clock.now() - time.time()) < 1
        True
    """

    def __init__(self, speed: float = 1.0) -> None:
        if not (isinstance(speed, int | float) and 0 < speed <= MAX_SPEED):
            raise ValueError(
                f"speed must be a number in (0, {MAX_SPEED:g}], got {speed}"
            )
        self.speed = speed
        self._start_real = time.time()
        self._ahead = 0.0

    def now(self) -> float:
        """The (sped-up) time now, plus what :meth:`advance` moved it."""
        real = time.time()
        return self._start_real + (real - self._start_real) * self.speed + self._ahead

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backwards), from now on."""
        if seconds < 0:
            raise ValueError(f"time does not go backwards: advance({seconds})")
        self._ahead += seconds


class VirtualClock:
    """Time that moves only when told to: deterministic tests.

    Example:
        >>> clock = VirtualClock(1_700_000_000)
        >>> clock.advance(90)
        >>> clock.now()
        1700000090
    """

    def __init__(self, start: int = 1_700_000_000) -> None:
        self._now = start

    def now(self) -> int:
        """The virtual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError(f"time does not go backwards: advance({seconds})")
        self._now += int(seconds)


class AnchoredClock:
    """The real time, ``speed`` times faster, from an anchor kept in a store.

    The first process to open a database anchors its emulated clock there
    (real and emulated time, and the speed); every process that opens it later
    reads the same anchor, so a ``--speed`` server's time continues across
    restarts and is the same in every process that shares the database. Real
    time is the database's clock (this host's, corrected by the offset the
    store measures at each heartbeat: :attr:`SQLStore.clock_offset`), so
    processes on hosts whose clocks disagree stamp their batches alike and
    lists stay in creation order. Time never runs backwards within a
    process, even if the system clock does.

    Raises:
        StoreError: the database's clock runs at another speed.

    Example:
        >>> from batchfsm.emulator import SQLiteStore
        >>> store = SQLiteStore(":memory:")
        >>> first = AnchoredClock(store, speed=60)
        >>> AnchoredClock(store, speed=60).anchor == first.anchor
        True
        >>> AnchoredClock(store, speed=2)
        Traceback (most recent call last):
        ...
        batchfsm.emulator._store_errors.StoreError: :memory: keeps an emulated clock running
        at --speed 60; start with that speed, or use another database
        >>> store.close()
    """  # noqa: E501

    def __init__(self, store: SQLStore, speed: float = 1.0) -> None:
        if not (0 < speed < float("inf")):
            raise ValueError(f"speed must be finite and positive, got {speed}")
        self._store = store
        real = self._real_now()
        proposal = json.dumps({"real": real, "emulated": real, "speed": speed})
        anchor = json.loads(store.setting("clock", proposal))
        if anchor["speed"] != speed:
            raise StoreError(
                f"{store.where} keeps an emulated clock running at --speed "
                f"{anchor['speed']:g}; start with that speed, or use another database"
            )
        self.speed = speed
        self._real = float(anchor["real"])
        self._emulated = float(anchor["emulated"])
        self._last = 0.0
        self._lock = threading.Lock()

    def _real_now(self) -> float:
        # The database's clock, as this host's corrected by the offset the
        # store measured last: one clock for every process on the database.
        return time.time() + self._store.clock_offset

    @property
    def anchor(self) -> tuple[float, float]:
        """The real and the emulated time at the anchor, in Unix seconds."""
        return self._real, self._emulated

    def now(self) -> float:
        """The emulated time now, in Unix seconds."""
        emulated = self._emulated + (self._real_now() - self._real) * self.speed
        with self._lock:
            self._last = max(self._last, emulated)
            return self._last
