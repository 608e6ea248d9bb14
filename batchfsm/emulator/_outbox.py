"""The outbox in memory: batch events, their deliveries and attempts.

:class:`MemoryOutbox` is the part of :class:`~._stores.MemoryBatchStore` that
keeps the events its terminal writes add (under the store's lock, in the same
write as the move) and the state of each event's delivery to each webhook
endpoint of the event's project (or of every project). A delivery is
claimed for one attempt at a time: the claim moves its
next attempt past the lease and its epoch on, so a second claimer skips it
until the lease runs out, and a late record of a claim taken over is refused.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import attrs

from ._events import Attempt, Claim, Delivery, DeliveryState, WebhookEvent

__all__ = ["LEASE_SECONDS", "MemoryOutbox"]

#: How long a claimed delivery is held for its attempt before another
#: deliverer may take it over (the attempt's own timeout is far shorter).
LEASE_SECONDS = 120.0


@attrs.define
class _Row:
    state: DeliveryState = "pending"
    next_at: float = 0.0
    epoch: int = 0
    attempts: list[Attempt] = attrs.Factory(list)
    deadline: float | None = None


class MemoryOutbox:
    """Events, deliveries and attempts, in memory (see the module).

    Example:
        >>> outbox = MemoryOutbox(threading.Lock())
        >>> url = "http://127.0.0.1:9/hook"
        >>> outbox.add_webhook_endpoint(url)
        >>> outbox.record(WebhookEvent("evt_1", "batch.failed", 5, "batch_1"))
        >>> [c.event.id for c in outbox.claim_deliveries([url], 10, 5)]
        ['evt_1']
        >>> outbox.claim_deliveries([url], 10, 5)  # leased
        []
    """

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock  # the store's: an event joins its batch's write
        self._endpoints: dict[str, str | None] = {}  # URL -> project (None: all)
        self._events: list[WebhookEvent] = []
        self._rows: dict[tuple[str, str], _Row] = {}
        self._pending: dict[tuple[str, str], _Row] = {}  # claims read these only
        self._by_id: dict[str, WebhookEvent] = {}

    def add_webhook_endpoint(self, url: str, project: str | None = None) -> None:
        """Deliver the events written from now on to ``url`` too.

        Those of ``project``'s batches only; of every project's if None. A URL
        added again is bound to the project named last.
        """
        with self._lock:
            self._endpoints[url] = project

    def record(self, event: WebhookEvent) -> None:
        """Add ``event`` and its deliveries (the caller holds the store's lock)."""
        if event.id in self._by_id:
            return
        self._events.append(event)
        self._by_id[event.id] = event
        for url, project in self._endpoints.items():
            if project is not None and project != event.project:
                continue  # another project's endpoint: never told of it
            self._rows[(event.id, url)] = self._pending[(event.id, url)] = _Row()

    def events(self, after: str | None = None, limit: int = 100) -> list[WebhookEvent]:
        """Up to ``limit`` events in the order written, after the event ``after``."""
        with self._lock:
            start = 0
            if after is not None:
                ids = [e.id for e in self._events]
                start = ids.index(after) + 1 if after in ids else len(ids)
            return self._events[start : start + limit]

    def claim_deliveries(
        self,
        endpoints: Iterable[str],
        now: float,
        limit: int,
        lease: float = LEASE_SECONDS,
    ) -> list[Claim]:
        """Lease up to ``limit`` pending deliveries to ``endpoints`` due by ``now``.

        Each for ``lease`` seconds: then another claimer may take it over.
        """
        wanted = set(endpoints)
        claims: list[Claim] = []
        with self._lock:
            for (event_id, url), row in self._pending.items():
                if len(claims) >= limit:
                    break
                if url in wanted and row.next_at <= now:
                    row.epoch += 1
                    row.next_at = now + lease
                    event = self._by_id[event_id]
                    claims.append(
                        Claim(event, event.body(), url, row.epoch,
                              len(row.attempts), row.deadline)
                    )  # fmt: skip
        return claims

    def record_attempt(
        self, claim: Claim, attempt: Attempt, next_at: float | None, deadline: float
    ) -> bool:
        """Record ``attempt`` of ``claim``; whether its lease still held.

        ``next_at`` None ends the delivery: delivered if the attempt was,
        given up otherwise.
        """
        with self._lock:
            row = self._rows.get((claim.event.id, claim.endpoint))
            if row is None or row.epoch != claim.epoch or row.state != "pending":
                return False
            row.attempts.append(attempt)
            row.deadline = deadline
            if next_at is None:
                row.state = "delivered" if attempt.ok else "failed"
                del self._pending[(claim.event.id, claim.endpoint)]
            else:
                row.next_at = next_at
            return True

    def deliveries(self, event_id: str | None = None) -> list[Delivery]:
        """Every delivery (of ``event_id`` only, if given), each with its attempts."""
        with self._lock:
            return [
                Delivery(e, url, row.state, tuple(row.attempts))
                for (e, url), row in self._rows.items()
                if event_id is None or e == event_id
            ]

    def next_delivery_at(self, endpoints: Iterable[str]) -> float | None:
        """When the earliest pending delivery to ``endpoints`` is due, or None."""
        wanted = set(endpoints)
        with self._lock:
            times = [
                row.next_at for (_, url), row in self._pending.items() if url in wanted
            ]
        return min(times, default=None)
