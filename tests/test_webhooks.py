"""Webhooks: each batch's end writes its event, delivered signed, at least once.

Every test here delivers to a real HTTP receiver (a small server the test
starts) and verifies signatures with the official client's ``webhooks.unwrap``.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchFailedWebhookEvent,
)

from batchfsm.emulator import (
    Emulator,
    SQLiteStore,
    VirtualClock,
    WebhookEndpoint,
    WebhookEvent,
    Webhooks,
    make_input_file,
)
from batchfsm.emulator._receiver import WebhookReceiver
from batchfsm.emulator._webhooks import check_secret, sign, webhook_id

SECRET = "whsec_" + base64.b64encode(b"batchfsm webhook test secret").decode()
EMBED = "/v1/embeddings"


def unwrap(body: bytes, headers: dict[str, str], secret: str = SECRET) -> Any:
    """The official client's verdict on one delivery."""
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    return client.webhooks.unwrap(body, headers, secret=secret)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as made:
        yield made


def _emulator(receiver: WebhookReceiver, **options: Any) -> Emulator:
    hooks = Webhooks(
        [WebhookEndpoint(receiver.url, SECRET)],
        first_retry_seconds=10,
        window_seconds=3600,
        timeout_seconds=5,
    )
    return Emulator(clock=VirtualClock(), seed=3, webhooks=hooks, **options)


def _advance(emu: Emulator, seconds: int) -> None:
    clock = emu.clock
    assert isinstance(clock, VirtualClock)
    clock.advance(seconds)
    emu.run()


def _batch(emu: Emulator, content: bytes) -> str:
    upload = emu.create_file(content, "in.jsonl", "batch")
    return emu.create_batch(input_file_id=upload.id, endpoint=EMBED).id


def _good(emu: Emulator) -> str:
    return _batch(
        emu, make_input_file(2, endpoint=EMBED, model="text-embedding-3-small")
    )


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> SQLiteStore:
    """An SQLite store, closed when the test ends."""
    store = SQLiteStore(tmp_path / "db")
    request.addfinalizer(store.close)
    return store


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_the_receiver_gets_exactly_the_events_of_the_batches_it_caused(
    receiver, store, tmp_path, request
):
    options = {} if store == "memory" else {"store": _sqlite(tmp_path, request)}
    emu = _emulator(receiver, **options)
    done, failed, cancelled = _good(emu), _batch(emu, b"{oops"), _good(emu)
    emu.cancel_batch(cancelled)
    _advance(emu, 60)
    emu.run()
    got = receiver.wait_for(3)
    assert len(receiver.received) == 3
    events = {}
    for r in got:
        event = unwrap(r.body, r.headers)  # the official client accepts it
        events[event.data.id] = event
        assert r.headers["webhook-id"] == webhook_id(event.id)
    assert isinstance(events[done], BatchCompletedWebhookEvent)
    assert isinstance(events[failed], BatchFailedWebhookEvent)
    assert isinstance(events[cancelled], BatchCancelledWebhookEvent)
    batch = emu.retrieve_batch(done)
    assert events[done].created_at == batch.completed_at
    assert events[done].object == "event"
    assert sorted(e.batch_id for e in emu.webhook_events()) == sorted(events)
    deliveries = emu.webhook_deliveries()
    assert {d.state for d in deliveries} == {"delivered"}
    assert all(len(d.attempts) == 1 and d.attempts[0].status == 200 for d in deliveries)


def test_a_wrong_secret_is_refused_by_the_official_client(receiver):
    emu = _emulator(receiver)
    _batch(emu, b"{oops")
    _advance(emu, 60)
    emu.run()
    (got,) = receiver.wait_for(1)
    other = "whsec_" + base64.b64encode(b"another secret").decode()
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(got.body, got.headers, other)
    tampered = got.body.replace(b"batch.failed", b"batch.complet")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        unwrap(tampered, got.headers)


def test_an_endpoint_down_for_a_while_gets_the_events_when_it_returns(receiver):
    emu = _emulator(receiver)
    receiver.status = 503
    batch_id = _batch(emu, b"{oops")
    _advance(emu, 5)
    emu.run()  # the first attempt: 503
    _advance(emu, 5)
    emu.run()  # too early for the next (backoff 5..10 s after the first)
    assert len(receiver.received) == 1
    receiver.status = 200
    for _ in range(3):
        _advance(emu, 20)
        emu.run()
    got = receiver.wait_for(1)
    assert [unwrap(r.body, r.headers).data.id for r in got] == [batch_id]
    (delivery,) = emu.webhook_deliveries()
    assert delivery.state == "delivered"
    assert [a.status for a in delivery.attempts] == [503, 200]
    assert delivery.attempts[0].error == "answered 503"
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1  # a retry is the same message


def test_a_delivery_past_its_window_is_given_up_and_says_why(receiver):
    receiver.status = 500
    hooks = Webhooks(
        [WebhookEndpoint(receiver.url, SECRET)],
        first_retry_seconds=10,
        window_seconds=100,
        timeout_seconds=5,
    )
    emu = Emulator(clock=VirtualClock(), webhooks=hooks)
    _batch(emu, b"{oops")
    for _ in range(40):
        _advance(emu, 10)
        emu.run()
    (delivery,) = emu.webhook_deliveries()
    assert delivery.state == "failed"
    assert 2 <= len(delivery.attempts) <= 10
    at = [a.at for a in delivery.attempts]
    assert at[-1] - at[0] <= 100
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert gaps == sorted(gaps)  # backing off


def test_a_connection_refused_is_retried(receiver):
    url = receiver.url
    receiver.close()  # nobody listens there now
    hooks = Webhooks([WebhookEndpoint(url, SECRET)], first_retry_seconds=1)
    emu = Emulator(clock=VirtualClock(), webhooks=hooks)
    _batch(emu, b"{oops")
    _advance(emu, 5)
    emu.run()
    (delivery,) = emu.webhook_deliveries()
    assert delivery.state == "pending"
    (attempt,) = delivery.attempts
    assert attempt.status is None
    assert (attempt.error or "").startswith("no answer")


def test_every_terminal_move_writes_its_event_even_without_endpoints():
    emu = Emulator(clock=VirtualClock(), request_seconds=50_000)
    failed = _batch(emu, b"{oops")
    expired = _good(emu)
    _advance(emu, 2)
    emu.run()
    _advance(emu, 86_400)
    events = {e.batch_id: e for e in emu.webhook_events()}
    assert events[failed].type == "batch.failed"
    assert events[expired].type == "batch.expired"
    assert events[expired].created_at == emu.retrieve_batch(expired).expired_at
    assert emu.webhook_deliveries() == []


def test_the_event_body_is_the_official_clients_event():
    event = WebhookEvent("evt_1", "batch.expired", 1700000000, "batch_1")
    parsed = openai.types.webhooks.BatchExpiredWebhookEvent.model_validate_json(
        event.body()
    )
    assert parsed.model_dump() == event.to_dict()


def test_signatures_verify_with_the_official_client_directly():
    import time

    body = WebhookEvent("evt_1", "batch.completed", 1, "batch_1").body()
    headers = sign(SECRET, "wh_1", int(time.time()), body)
    assert unwrap(body, headers).data.id == "batch_1"


@pytest.mark.parametrize(
    "secret", ["secret", "whsec_", "whsec_not base64!", "whsec_abc", None]
)
def test_a_bad_secret_is_refused_naming_it(secret):
    with pytest.raises(ValueError, match="whsec_"):
        check_secret(secret)
    with pytest.raises(ValueError, match="http://x/h"):
        WebhookEndpoint("http://x/h", secret)


def test_a_bad_url_or_a_url_twice_is_refused():
    with pytest.raises(ValueError, match="http:// or https://"):
        WebhookEndpoint("ftp://x", SECRET)
    twice = [WebhookEndpoint("http://x/", SECRET)] * 2
    with pytest.raises(ValueError, match="named twice"):
        Webhooks(twice)


# -- conform's webhook check ----------------------------------------------------


def _conform(receiver: WebhookReceiver | None, *endpoints: WebhookEndpoint) -> Any:
    from batchfsm.conformance import emulator_client, run

    http, wait = emulator_client(webhooks=list(endpoints))
    with http:
        report = run(http, wait=wait, only={"webhooks.signed"}, webhooks=receiver)
    return {r.id: r for r in report.results}["webhooks.signed"]


def test_conform_passes_a_server_whose_events_verify(receiver):
    result = _conform(receiver, WebhookEndpoint(receiver.url, SECRET))
    assert result.outcome == "pass", result.evidence


def test_conform_fails_a_server_that_signs_with_another_secret(receiver):
    other = "whsec_" + base64.b64encode(b"another secret").decode()
    result = _conform(receiver, WebhookEndpoint(receiver.url, other))
    assert result.outcome == "fail"
    assert "signature does not verify" in result.evidence


def test_conform_fails_a_server_that_sends_no_event(receiver):
    result = _conform(receiver)
    assert result.outcome == "fail"
    assert "no event for batch_" in result.evidence


def test_conform_skips_the_webhook_check_without_a_receiver():
    result = _conform(None)
    assert result.outcome == "skip"
    assert "--webhook-secret" in result.evidence


def test_conform_command_starts_a_receiver_for_the_built_in_emulator(capsys):
    from batchfsm._cli import main

    args = ["conform", "--only", "webhooks.signed", "--webhook-secret", SECRET,
            "--webhook-listen", "127.0.0.1:0", "--json"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr()
    assert "webhook receiver at http://127.0.0.1:" in out.err
    assert main(["conform", "--webhook-secret", "nope"]) == 2
    assert "--webhook-secret must be whsec_" in capsys.readouterr().err


def _conform_projects(receiver: WebhookReceiver | None, project: str | None) -> Any:
    """webhooks.own_project against two keys of two projects, the receiver
    bound to ``project`` (None: every project's events)."""
    import httpx2

    from batchfsm.conformance import run
    from batchfsm.emulator import EmulatorTransport, create_app

    clock = VirtualClock()
    hooks = [WebhookEndpoint(receiver.url, SECRET, project)] if receiver else None
    keys = {"sk-a": "proj_a", "sk-b": "proj_b"}
    app = create_app(Emulator(clock=clock, webhooks=hooks), api_keys=keys)
    transport = EmulatorTransport(app)
    first, other = (
        httpx2.Client(
            transport=transport,
            base_url="http://e",
            headers={"Authorization": f"Bearer {key}"},
        )
        for key in keys
    )
    with first, other:
        report = run(first, wait=clock.advance, only={"webhooks.own_project"},
                     other_http=other, webhooks=receiver)  # fmt: skip
    return {r.id: r for r in report.results}


def test_conform_passes_a_server_that_keeps_each_projects_events_its_own(receiver):
    results = _conform_projects(receiver, "proj_a")
    assert results["webhooks.signed"].outcome == "pass"
    assert results["webhooks.own_project"].outcome == "pass", results[
        "webhooks.own_project"
    ].evidence
    # The other project's batch ended, and its event went nowhere.
    assert len(receiver.received) == 2  # webhooks.signed's batch, and the fence


def test_conform_fails_a_server_that_sends_another_projects_events(receiver):
    result = _conform_projects(receiver, None)["webhooks.own_project"]
    assert (result.outcome, result.level) == ("fail", "required")
    assert "a batch of the other key's project, reached" in result.evidence
    assert '"type":"batch.cancelled"' in result.evidence


def test_conform_skips_the_project_events_check_without_what_it_needs(receiver):
    assert _conform_projects(None, None)["webhooks.own_project"].outcome == "skip"
    from batchfsm.conformance import emulator_client, run

    http, wait = emulator_client(webhooks=[WebhookEndpoint(receiver.url, SECRET)])
    with http:  # a receiver, but no second key
        report = run(http, wait=wait, only={"webhooks.own_project"}, webhooks=receiver)
    result = {r.id: r for r in report.results}["webhooks.own_project"]
    assert result.outcome == "skip" and "--other-api-key" in result.evidence


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-url", "http://127.0.0.1:9/h"], "needs a --webhook-secret"),
        (["--webhook-secret", SECRET], "needs a --webhook-url"),
        (["--webhook-url", "http://127.0.0.1:9/h", "--webhook-secret", "nope"],
         "the secret of http://127.0.0.1:9/h must be whsec_"),
        (["--webhook-url", "a", "--webhook-url", "b", "--webhook-secret", SECRET,
          "--webhook-secret", SECRET, "--webhook-secret", SECRET],
         "2 --webhook-url and 3 --webhook-secret"),
        (["--webhook-url", "ftp://x", "--webhook-secret", SECRET],
         "a webhook URL must be http:// or https://"),
        (["--webhook-url", "http://x/", "--webhook-secret", SECRET,
          "--webhook-window", "0"], "--webhook-window must be a finite number"),
    ],
)  # fmt: skip
def test_serve_refuses_bad_webhook_settings_in_one_line(args, message, capsys):
    from batchfsm._cli import main

    assert main(["serve", "--port", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
    assert "nope" not in err  # a secret is never echoed


def test_serve_takes_the_secret_from_the_environment(monkeypatch):
    import argparse

    from batchfsm._cli import _webhooks

    monkeypatch.setenv("BATCHFSM_WEBHOOK_SECRET", SECRET)
    args = argparse.Namespace(
        webhook_url=["http://a/", "http://b/"], webhook_secret=[], webhook_window="60"
    )
    hooks = _webhooks(args, None)
    assert [(e.url, e.secret) for e in hooks.endpoints] == [
        ("http://a/", SECRET),
        ("http://b/", SECRET),
    ]
    assert hooks.window_seconds == 60


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_claim_taken_over_after_its_lease_cannot_record_late(
    store, tmp_path, request
):
    from batchfsm.emulator import MemoryBatchStore
    from batchfsm.emulator._events import Attempt

    made = MemoryBatchStore() if store == "memory" else _sqlite(tmp_path, request)
    emu = Emulator(clock=VirtualClock(), store=made)
    outbox = emu.outbox
    outbox.add_webhook_endpoint("http://x/")
    _batch(emu, b"{oops")
    _advance(emu, 5)
    (first,) = outbox.claim_deliveries(["http://x/"], 100, 10, lease=30)
    assert outbox.claim_deliveries(["http://x/"], 129, 10, lease=30) == []  # leased
    (second,) = outbox.claim_deliveries(["http://x/"], 130, 10, lease=30)
    assert second.epoch == first.epoch + 1
    late = Attempt(first.event.id, "http://x/", 131, 200, None)
    assert not outbox.record_attempt(first, late, None, 1000)  # fenced off
    ok = Attempt(second.event.id, "http://x/", 131, 200, None)
    assert outbox.record_attempt(second, ok, None, 1000)
    (delivery,) = outbox.deliveries()
    assert delivery.state == "delivered" and delivery.attempts == (ok,)
    assert outbox.claim_deliveries(["http://x/"], 10**6, 10) == []
