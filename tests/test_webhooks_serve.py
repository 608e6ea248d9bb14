"""Webhooks from real ``batchfsm serve`` processes: kill -9, restart, two processes.

The receiver is a real HTTP server the test starts; every event it got is
verified with the official client's ``webhooks.unwrap``. A ``kill -9`` between
a batch's end and its event's delivery loses nothing: the event is in the
database with the move, and a restarted server (or the other process sharing
PostgreSQL) delivers it; a duplicate carries the same ``webhook-id``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import pytest

from batchfsm.emulator._receiver import WebhookReceiver

from .test_durable import (  # noqa: F401 - fixtures
    PATIENCE,
    SPEED,
    Server,
    _create,
    _ended,
    _poll,
    _upload,
    db,
    servers,
)
from .test_webhooks import SECRET, unwrap


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as made:
        yield made


def _hooked(servers, db, receiver: WebhookReceiver) -> Server:  # noqa: F811
    made: Server = servers(
        db, "--speed", SPEED, "--webhook-url", receiver.url, "--webhook-secret", SECRET
    )
    return made


def _wait_for(receiver: WebhookReceiver, batch_ids: set[str]) -> dict[str, list[str]]:
    """Until each batch's event was answered 2xx: batch id -> webhook-ids got."""
    deadline = time.monotonic() + PATIENCE
    while True:
        got: dict[str, list[str]] = collections.defaultdict(list)
        for r in receiver.wait_for(len(batch_ids), timeout=1):
            event = unwrap(r.body, r.headers)
            got[event.data.id].append(r.headers["webhook-id"])
        if set(got) >= batch_ids or time.monotonic() > deadline:
            return got


def test_kill_9_between_the_end_and_the_delivery_delivers_after_restart(
    servers,  # noqa: F811
    db,  # noqa: F811
    receiver,
):
    receiver.status = 503  # down: each event stays undelivered
    first = _hooked(servers, db, receiver)
    ids = {_create(first, _upload(first, 3))["id"] for _ in range(3)}
    for batch_id in ids:
        _poll(first, batch_id, [], _ended)
    first.kill()
    assert not any(200 <= r.answered < 300 for r in receiver.received)
    receiver.status = 200
    again = _hooked(servers, db, receiver)
    got = _wait_for(receiver, ids)
    assert set(got) == ids, again.output()
    for webhook_ids in got.values():
        assert len(set(webhook_ids)) == 1  # at least once, always the same id


def test_an_endpoint_down_for_a_while_gets_every_event_when_it_returns(
    servers,  # noqa: F811
    tmp_path,
    receiver,
):
    receiver.status = 503
    server = _hooked(servers, f"sqlite:///{tmp_path / 'db'}", receiver)
    ids = {_create(server, _upload(server, 2))["id"] for _ in range(2)}
    for batch_id in ids:
        _poll(server, batch_id, [], _ended)
    deadline = time.monotonic() + PATIENCE
    while len(receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the first attempts, refused
    receiver.status = 200
    got = _wait_for(receiver, ids)  # the retries, after the backoff
    assert set(got) == ids, server.output()


@pytest.mark.postgres
def test_two_processes_on_postgres_deliver_each_event_none_lost(
    servers,  # noqa: F811
    postgres_url,
    receiver,
):
    receiver.status = 503
    first = _hooked(servers, postgres_url, receiver)
    second = _hooked(servers, postgres_url, receiver)
    ids = set()
    for n in range(8):
        server = (first, second)[n % 2]
        ids.add(_create(server, _upload(server, 2))["id"])
    for batch_id in ids:
        _poll(first, batch_id, [], _ended)
    first.kill()  # its claims and its lease on batches die with it
    receiver.status = 200
    got = _wait_for(receiver, ids)
    assert set(got) == ids, second.output()
    for webhook_ids in got.values():
        assert len(set(webhook_ids)) == 1
    # Each delivery claimed by one process at a time: a delivered event is
    # not sent again once answered 2xx.
    time.sleep(1)
    delivered = collections.Counter(
        unwrap(r.body, r.headers).data.id
        for r in receiver.received
        if 200 <= r.answered < 300
    )
    assert set(delivered.values()) == {1}, delivered
