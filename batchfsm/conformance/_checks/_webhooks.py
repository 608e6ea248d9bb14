"""Checks of webhook delivery, judged at a receiver the run was given.

The server must be set to deliver its batch events to the receiver (for
``batchfsm serve``: ``--webhook-url URL --webhook-secret whsec_…``); without a
receiver these checks skip, saying how to give one.
"""

from __future__ import annotations

import json
from typing import Any

from .._registry import check
from .._session import Session, SkippedError, expect

__all__: list[str] = []

_NO_RECEIVER = (
    "no webhook receiver: run conform with --webhook-secret whsec_... and set the "
    "server to deliver its webhooks to the receiver conform starts"
)


def _event_for(s: Session, batch_id: str) -> Any:
    """The first request the receiver got whose event names ``batch_id``, or None."""
    assert s.webhooks is not None
    waited, step = 0.0, 1.0
    while True:
        for got in list(s.webhooks.received):
            try:
                event = json.loads(got.body)
            except ValueError:
                continue
            data = event.get("data") if isinstance(event, dict) else None
            if isinstance(data, dict) and data.get("id") == batch_id:
                return got
        if waited >= s.timeout:
            return None
        s.tell_wait(f"waiting for the webhook event of {batch_id} ({waited:.0f} s)")
        s.wait(step)
        waited += step
        step = min(step * 2, 30.0)
        s.call("GET", f"/v1/batches/{batch_id}")  # a server may run due work on calls


@check("webhooks.signed", needs=["happy.terminal"])
def webhooks_signed(s: Session) -> None:
    """A batch's end is POSTed as batch.completed, signed with the webhook secret."""
    if s.webhooks is None or s.webhooks.secret is None:
        raise SkippedError(_NO_RECEIVER)
    from standardwebhooks import Webhook, WebhookVerificationError

    batch_id = s.result_of("happy.terminal")["id"]
    got = _event_for(s, batch_id)
    expect(
        got is not None,
        f"no event for {batch_id} reached {s.webhooks.url} within "
        f"{s.timeout:g} s of its end",
    )
    headers = {k: v for k, v in got.headers.items() if k.startswith("webhook-")}
    try:
        Webhook(s.webhooks.secret).verify(got.body, got.headers)
    except WebhookVerificationError as exc:
        expect(False, f"the signature does not verify ({exc}): {headers}")
    event = json.loads(got.body)
    expected = {"object": "event", "type": "batch.completed", "data": {"id": batch_id}}
    wrong = {k: event.get(k) for k, v in expected.items() if event.get(k) != v}
    expect(not wrong, f"the event has {wrong}: {s.dump(event)}")
    expect(
        isinstance(event.get("id"), str) and event["id"].startswith("evt_"),
        f"the event's id is not evt_…: {s.dump(event)}",
    )
    expect(
        type(event.get("created_at")) is int,
        f"the event's created_at is not Unix seconds: {s.dump(event)}",
    )
