"""Clocks: virtual time for tests, the system clock for serving."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["MAX_SPEED", "Clock", "SystemClock", "VirtualClock"]

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

    def now(self) -> float:
        """The (sped-up) time now."""
        real = time.time()
        return self._start_real + (real - self._start_real) * self.speed


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
