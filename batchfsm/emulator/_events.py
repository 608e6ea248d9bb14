"""Batch events: what a terminal move writes to the outbox, and its deliveries.

Each move of a batch to a terminal status (``completed``, ``failed``,
``expired``, ``cancelled``) writes one :class:`WebhookEvent` to the store's
outbox in the same conditional write as the move, so no batch ends without
its event (the API's webhooks, delivered at least once, each event signed).
The event is derived from the ended batch alone: its type names the status,
``created_at`` is the batch's terminal stamp, and its id is a digest of the
batch id (a batch ends once: one event, the same id however often a write of
it is retried, random when the batch id is).

Each event keeps the project of its batch, and is then delivered to every
webhook endpoint the store knew when it was written that is the project's or
every project's (:class:`Delivery`), each attempt recorded (:class:`Attempt`).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import attrs

from .. import _json
from .._model import Batch, BatchStatus

__all__ = ["Attempt", "Claim", "Delivery", "DeliveryState", "WebhookEvent", "event_for"]

#: A delivery waits for its next attempt, was delivered, or was given up.
DeliveryState = Literal["pending", "delivered", "failed"]

_STAMPS = {
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLED: "cancelled_at",
}


@attrs.frozen
class WebhookEvent:
    """One batch event, as the live API sends it.

    Example:
        >>> e = WebhookEvent("evt_1", "batch.completed", 1700000000, "batch_1")
        >>> e.body()
        b'{"id":"evt_1","object":"event","type":"batch.completed","created_at":1700000000,"data":{"id":"batch_1"}}'
    """

    id: str
    type: str
    created_at: int
    batch_id: str
    project: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The event's JSON, key for key as the live API's."""
        return {
            "id": self.id,
            "object": "event",
            "type": self.type,
            "created_at": self.created_at,
            "data": {"id": self.batch_id},
        }

    def body(self) -> bytes:
        """The bytes a delivery sends (and signs): the same at every attempt."""
        return _json.encode(self.to_dict())


def event_for(batch: Batch, project: str | None = None) -> WebhookEvent | None:
    """The event of ``batch``'s move to its status; None if it is not terminal.

    ``project`` is the batch's: only its endpoints (and those of every
    project) are delivered the event.

    Example:
        >>> import batchfsm as bf
        >>> b = bf.new_batch(id="batch_1", input_file_id="f",
        ...                  endpoint="/v1/embeddings", created_at=1)
        >>> event_for(b) is None
        True
        >>> cancelling = bf.advance(b, "cancel", at=2)
        >>> e = event_for(bf.advance(cancelling, "mark_cancelled", at=3))
        >>> e.type, e.created_at, e.batch_id, e.id[:4], len(e.id)
        ('batch.cancelled', 3, 'batch_1', 'evt_', 36)
    """
    stamp = _STAMPS.get(batch.status)
    if stamp is None:
        return None
    at = getattr(batch, stamp)
    assert isinstance(at, int)
    digest = hashlib.sha256(f"event:{batch.id}".encode()).hexdigest()[:32]
    return WebhookEvent(
        id=f"evt_{digest}",
        type=f"batch.{batch.status.value}",
        created_at=at,
        batch_id=batch.id,
        project=project,
    )


@attrs.frozen
class Attempt:
    """One attempt to deliver an event to an endpoint.

    Attributes:
        event_id, endpoint: what was sent, where.
        at: when (Unix seconds, the deliverer's clock).
        status: the HTTP status answered, or None (no answer).
        error: why it did not count as delivered (None if it did).
    """

    event_id: str
    endpoint: str
    at: float
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        """Whether this attempt delivered the event (a 2xx answer)."""
        return self.error is None


@attrs.frozen
class Delivery:
    """An event's delivery to one endpoint, and every attempt so far."""

    event_id: str
    endpoint: str
    state: DeliveryState
    attempts: tuple[Attempt, ...] = ()


@attrs.frozen
class Claim:
    """A delivery leased to one deliverer for its next attempt.

    ``epoch`` fences the record of the attempt: a deliverer whose lease was
    taken over cannot record over the new holder's.
    """

    event: WebhookEvent
    body: bytes
    endpoint: str
    epoch: int
    attempts: int
    deadline: float | None
