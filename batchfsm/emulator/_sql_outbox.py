"""The outbox in SQL: batch events, their deliveries and attempts.

:func:`add_event` runs inside the write that ends a batch (the same
transaction as the move), adding the event and one pending delivery per
registered endpoint of the event's project (or of every project).
:class:`SQLOutbox` claims deliveries for an attempt
(PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so deliverers in several processes
never wait for each other nor take the same delivery while its lease lasts:
the claim moves ``next_at`` past the lease and the ``epoch`` on) and records
each attempt only if the claim still holds (its epoch).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._database import Database, Tx
from ._events import Attempt, Claim, Delivery, DeliveryState, WebhookEvent
from ._outbox import LEASE_SECONDS

__all__ = ["SQLOutbox", "add_event", "clear_and_add_event", "cleared", "deliveries_of"]


_ADD_EVENT = (
    "INSERT INTO batchfsm_events (id, batch_id, type, created_at, project, body)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)

#: An event's pending deliveries: one to each endpoint of its project or of
#: every project. ``events`` is a table of the event's id and project.
_ADD_DELIVERIES = (
    "INSERT INTO batchfsm_deliveries (event_id, endpoint)"
    " SELECT e.id, w.url FROM {events} e, batchfsm_webhook_endpoints w"
    " WHERE w.project IS NULL OR w.project = e.project"
)


def cleared(batches: str) -> tuple[str, str]:
    """The statements deleting an ended batch's result lines and line chunks.

    ``batches``: the batch's id (``?``) or a query of ids.
    """
    return (
        f"DELETE FROM batchfsm_results WHERE batch_id IN ({batches})",
        f"DELETE FROM batchfsm_line_chunks WHERE batch_id IN ({batches})",
    )


def deliveries_of(events: str) -> str:
    """The statement adding the pending deliveries of ``events`` (id, project)."""
    return _ADD_DELIVERIES.format(events=events)


def _event_values(event: WebhookEvent) -> tuple[object, ...]:
    return (
        event.id,
        event.batch_id,
        event.type,
        event.created_at,
        event.project,
        event.body().decode(),
    )


def add_event(tx: Tx, event: WebhookEvent) -> None:
    """Add ``event`` and its pending deliveries, in the caller's transaction."""
    tx.run(_ADD_EVENT, _event_values(event))
    tx.run(
        deliveries_of("(SELECT ? AS id, ? AS project)"),
        (event.id, event.project),
    )


def clear_and_add_event(tx: Tx, batch_id: str, event: WebhookEvent | None) -> None:
    """An ended batch's leftovers deleted, its event added (:func:`add_event`).

    The stored result lines and line chunks of ``batch_id`` go; on
    PostgreSQL in one statement with the event and its deliveries (its
    data-modifying ``WITH`` clauses all run, each once, in the caller's
    transaction): one round trip, not four.
    """
    clear = cleared("?")
    if not tx.postgres:
        for statement in clear:
            tx.run(statement, (batch_id,))
        if event is not None:
            add_event(tx, event)
        return
    if event is None:
        tx.run(f"WITH r AS ({clear[0]}) {clear[1]}", (batch_id, batch_id))
        return
    tx.run(
        f"WITH r AS ({clear[0]}), c AS ({clear[1]}),"
        f" e AS ({_ADD_EVENT} RETURNING id, project) " + deliveries_of("e"),
        (batch_id, batch_id, *_event_values(event)),
    )


def _event(row: tuple[str, str, str, int, str | None]) -> WebhookEvent:
    return WebhookEvent(row[0], row[2], int(row[3]), row[1], row[4])


_EVENT = "SELECT e.id, e.batch_id, e.type, e.created_at, e.project"


class SQLOutbox:
    """Events, deliveries and attempts on a :class:`Database` (see the module).

    Example:
        >>> from batchfsm.emulator import SQLiteStore
        >>> store = SQLiteStore(":memory:")
        >>> store.outbox.add_webhook_endpoint("http://127.0.0.1:9/hook")
        >>> store.outbox.events()
        []
        >>> store.close()
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_webhook_endpoint(self, url: str, project: str | None = None) -> None:
        """Deliver the events written from now on to ``url`` too.

        Those of ``project``'s batches only; of every project's if None. A URL
        added again is bound to the project named last (by any process).
        """
        with self._db.transaction() as tx:
            tx.run(
                "INSERT INTO batchfsm_webhook_endpoints (url, project) VALUES (?, ?)"
                " ON CONFLICT (url) DO UPDATE SET project = excluded.project",
                (url, project),
            )

    def events(self, after: str | None = None, limit: int = 100) -> list[WebhookEvent]:
        """Up to ``limit`` events in the order written, after the event ``after``."""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"{_EVENT} FROM batchfsm_events e WHERE e.seq >"
                " coalesce((SELECT seq FROM batchfsm_events WHERE id = ?), -1)"
                " ORDER BY e.seq LIMIT ?",
                (after, limit),
            )
        return [_event(row) for row in rows]

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
        urls = list(endpoints)
        if not urls:
            return []
        marks = ", ".join("?" * len(urls))
        with self._db.transaction() as tx:
            rows = tx.all(
                "SELECT event_id, endpoint, epoch, attempts, deadline"
                " FROM batchfsm_deliveries WHERE state = 'pending' AND next_at <= ?"
                f" AND endpoint IN ({marks}) ORDER BY next_at LIMIT ?"
                f" {self._db.skip_locked_sql}",
                (now, *urls, limit),
            )
            claims = []
            for event_id, url, epoch, attempts, deadline in rows:
                tx.run(
                    "UPDATE batchfsm_deliveries SET epoch = epoch + 1, next_at = ?"
                    " WHERE event_id = ? AND endpoint = ?",
                    (now + lease, event_id, url),
                )
                event_row = tx.one(
                    f"{_EVENT}, e.body FROM batchfsm_events e WHERE e.id = ?",
                    (event_id,),
                )
                claims.append(
                    Claim(_event(event_row[:5]), event_row[5].encode(), url,
                          int(epoch) + 1, int(attempts),
                          None if deadline is None else float(deadline))
                )  # fmt: skip
        return claims

    def record_attempt(
        self, claim: Claim, attempt: Attempt, next_at: float | None, deadline: float
    ) -> bool:
        """Record ``attempt`` of ``claim``; whether its lease still held.

        ``next_at`` None ends the delivery: delivered if the attempt was,
        given up otherwise.
        """
        state: DeliveryState = "pending"
        if next_at is None:
            state = "delivered" if attempt.ok else "failed"
        with self._db.transaction() as tx:
            updated = tx.run(
                "UPDATE batchfsm_deliveries SET state = ?, next_at = ?,"
                " attempts = attempts + 1, deadline = ?"
                " WHERE event_id = ? AND endpoint = ? AND epoch = ?"
                " AND state = 'pending'",
                (state, next_at or 0.0, deadline, claim.event.id, claim.endpoint,
                 claim.epoch),
            ).rowcount  # fmt: skip
            if updated != 1:
                return False
            tx.run(
                "INSERT INTO batchfsm_delivery_attempts"
                " (event_id, endpoint, at, status, error) VALUES (?, ?, ?, ?, ?)",
                (attempt.event_id, attempt.endpoint, attempt.at, attempt.status,
                 attempt.error),
            )  # fmt: skip
            return True

    def deliveries(self, event_id: str | None = None) -> list[Delivery]:
        """Every delivery (of ``event_id`` only, if given), each with its attempts."""
        where = "" if event_id is None else " WHERE d.event_id = ?"
        params = () if event_id is None else (event_id,)
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT d.event_id, d.endpoint, d.state FROM batchfsm_deliveries d"
                f" JOIN batchfsm_events e ON e.id = d.event_id{where}"
                " ORDER BY e.seq, d.endpoint",
                params,
            )
            tried = tx.all(
                "SELECT event_id, endpoint, at, status, error"
                f" FROM batchfsm_delivery_attempts{where.replace('d.', '')}"
                " ORDER BY seq",
                params,
            )
        attempts: dict[tuple[str, str], list[Attempt]] = {}
        for e, url, at, status, error in tried:
            attempts.setdefault((e, url), []).append(
                Attempt(e, url, float(at), status, error)
            )
        return [
            Delivery(e, url, state, tuple(attempts.get((e, url), ())))
            for e, url, state in rows
        ]

    def next_delivery_at(self, endpoints: Iterable[str]) -> float | None:
        """When the earliest pending delivery to ``endpoints`` is due, or None."""
        urls = list(endpoints)
        if not urls:
            return None
        marks = ", ".join("?" * len(urls))
        with self._db.transaction(write=False) as tx:
            (earliest,) = tx.one(
                "SELECT min(next_at) FROM batchfsm_deliveries"
                f" WHERE state = 'pending' AND endpoint IN ({marks})",
                urls,
            )
        return None if earliest is None else float(earliest)
