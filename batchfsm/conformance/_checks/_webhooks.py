"""Checks of webhook delivery, judged at a receiver the run was given.

The server must be set to deliver its batch events to the receiver (for
``batchfsm serve``: ``--webhook-url URL --webhook-secret whsec_…``); without a
receiver these checks skip, saying how to give one.

``webhooks.own_project`` also needs a second key, of another project
(``--other-api-key``), and the receiver bound to the first key's project only
(``serve --api-key K1=P1 --api-key K2=P2 --webhook-url P1=URL``): the live
API's webhook endpoints are each their project's (documented: "Creates a
webhook endpoint for the authenticated project", ``POST /webhook_endpoints``).
From outside, a leak is seen only if it comes: the other key's batch ends
first, then one of the first key's, and once that one's event has arrived
(and :data:`LEAK_GRACE_SECONDS` more) no event of the other's may have.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._registry import check
from .._session import Session, SkippedError, expect

if TYPE_CHECKING:
    import httpx2

__all__: list[str] = []

_NO_RECEIVER = (
    "no webhook receiver: run conform with --webhook-secret whsec_... and set the "
    "server to deliver its webhooks to the receiver conform starts"
)


#: How long after the fence's event a leaked one is still waited for.
LEAK_GRACE_SECONDS = 5.0


def _event_for(s: Session, batch_id: str) -> Any:
    """The first request the receiver got whose event names ``batch_id``, or None."""
    assert s.webhooks is not None
    waited, step = 0.0, 1.0
    while True:
        for got in list(s.webhooks.received):
            if _names(got, batch_id):
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


def _names(got: Any, batch_id: str) -> bool:
    """Whether a request the receiver got is an event naming ``batch_id``."""
    try:
        event = json.loads(got.body)
    except ValueError:
        return False
    data = event.get("data") if isinstance(event, dict) else None
    return isinstance(data, dict) and data.get("id") == batch_id


def _cancelled_batch(s: Session, client: httpx2.Client | None) -> str:
    """A batch of ``client``'s key (the run's if None), created and cancelled."""
    from ...emulator import make_input_file

    if client is None:
        file_id = s.input_file(1)
    else:
        content = make_input_file(
            1, endpoint=s.endpoint, model=s.model, custom_id="conform-{}"
        )
        upload = s.call(
            "POST",
            "/v1/files",
            client=client,
            files={"file": ("conformance.jsonl", content, "application/jsonl")},
            data={"purpose": "batch"},
        )
        file_id = s.batch(upload, "the other key's upload")["id"]
    body = {"input_file_id": file_id, "endpoint": s.endpoint,
            "completion_window": "24h"}  # fmt: skip
    made = s.batch(s.call("POST", "/v1/batches", client=client, json=body), "create")
    batch_id: str = made["id"]
    # Cancelled, so that it ends soon; a batch that ended first is as good.
    s.call("POST", f"/v1/batches/{batch_id}/cancel", client=client)
    return batch_id


@check("webhooks.own_project", needs=["webhooks.signed"])
def webhooks_own_project(s: Session) -> Iterator[None]:
    """Another project's batch events never reach this project's endpoint (documented: an endpoint is its project's)."""  # noqa: E501
    if s.webhooks is None or s.webhooks.secret is None:
        raise SkippedError(_NO_RECEIVER)
    other = s.other_http
    if other is None:
        raise SkippedError(
            "needs a second API key, of another project (--other-api-key), and "
            "the receiver bound to the first key's project only"
        )
    theirs = _cancelled_batch(s, other)
    yield
    s.poll(theirs, client=other)
    mine = _cancelled_batch(s, None)  # ends after theirs: the fence
    s.poll(mine)
    expect(
        _event_for(s, mine) is not None,
        f"no event for {mine} reached {s.webhooks.url} within {s.timeout:g} s "
        "of its end",
    )
    s.wait(LEAK_GRACE_SECONDS)
    s.call("GET", f"/v1/batches/{mine}")  # a server may run due work on calls
    leaked = [got for got in list(s.webhooks.received) if _names(got, theirs)]
    expect(
        not leaked,
        f"the event of {theirs}, a batch of the other key's project, reached "
        f"{s.webhooks.url}, this key's project's endpoint: "
        + (leaked[0].body.decode(errors="replace")[:300] if leaked else ""),
    )
