"""The store's outages: told once as each starts and once as it ends; the backoff.

While the store is unavailable (:class:`StoreUnavailable`) every call that
needs it fails the same way: the HTTP app answers 503 with ``Retry-After``,
the worker waits and tries again. :class:`Outage` keeps that from being a
log line (let alone a traceback) per request: one WARNING as an outage
starts, one INFO as it ends, and a store that flaps is told at most once
every :data:`QUIET_SECONDS`. :class:`Backoff` is the worker's wait between
tries: exponential, bounded, jittered.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from ._store_errors import StoreUnavailable

__all__ = [
    "MAX_BACKOFF_SECONDS",
    "QUIET_SECONDS",
    "RETRY_AFTER_SECONDS",
    "Backoff",
    "Outage",
]

log = logging.getLogger("batchfsm.emulator")

#: An outage that starts this soon after the last one told is not told again.
QUIET_SECONDS = 10.0
#: The worker's longest wait between two tries of an unavailable store.
MAX_BACKOFF_SECONDS = 5.0
#: What a 503 answer's ``Retry-After`` says, in seconds.
RETRY_AFTER_SECONDS = 1


class Outage:
    """Whether the store is away, told in the log once as it goes and comes back.

    Example:
        >>> outage = Outage()
        >>> outage.failed(StoreUnavailable("db: database is locked"))
        >>> outage.down, outage.failures
        (True, 1)
        >>> outage.ok()
        >>> outage.down
        False
    """

    def __init__(self) -> None:
        self.down = False
        #: Calls that failed for it since the outage started.
        self.failures = 0
        #: Since the start (for ``/metrics``): calls that failed for the store,
        #: outages begun, and the worker's runs that failed and are retried.
        self.total_failures = 0
        self.outages = 0
        self.retries = 0
        self._since = 0.0
        self._told = False
        self._last_told = -QUIET_SECONDS
        self._lock = threading.Lock()

    def failed(self, exc: StoreUnavailable, *, retried: bool = False) -> None:
        """A call found the store unavailable (``retried``: the worker tries again)."""
        with self._lock:
            self.failures += 1
            self.total_failures += 1
            self.retries += retried
            if self.down:
                return
            self.outages += 1
            self.down, self._since = True, time.monotonic()
            # A store that logged its own line (a deleted file) is not told twice.
            quiet = self._since - self._last_told < QUIET_SECONDS
            self._told = not (exc.logged or quiet)
            if self._told:
                self._last_told = self._since
                log.warning(
                    "the store is unavailable (%s): calls are answered 503 and "
                    "batches wait until it is back",
                    exc,
                )

    def ok(self) -> None:
        """A call succeeded: an outage under way is over."""
        if self.down:  # the common case is one read, no lock
            self._end()

    def _end(self) -> None:
        with self._lock:
            if not self.down:
                return
            if self._told:
                log.info(
                    "the store is available again after %.1f s (%d calls failed)",
                    time.monotonic() - self._since,
                    self.failures,
                )
            self.down, self.failures = False, 0


class Backoff:
    """Waits between tries of an unavailable store: doubling, bounded, jittered.

    Each wait is drawn between half and all of the current bound, which
    starts at ``first`` and doubles up to ``most``; :meth:`reset` after a
    success. The jitter keeps processes that lost one database together
    from coming back at the same instant.

    Example:
        >>> backoff = Backoff(first=0.1, most=0.4)
        >>> [0.05 <= backoff.next() <= 0.1, 0.1 <= backoff.next() <= 0.2]
        [True, True]
        >>> all(backoff.next() <= 0.4 for _ in range(5))
        True
    """

    def __init__(self, first: float = 0.05, most: float = MAX_BACKOFF_SECONDS) -> None:
        self.first, self.most = first, most
        self._bound = first

    def next(self) -> float:
        """How long to wait before the next try."""
        wait = random.uniform(self._bound / 2, self._bound)  # jitter, not a secret
        self._bound = min(self._bound * 2, self.most)
        return wait

    def reset(self) -> None:
        """The store answered: the next outage starts with short waits again."""
        self._bound = self.first
