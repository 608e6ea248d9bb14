"""Webhook endpoints per project: each gets its project's events, never another's.

The live API sets webhooks per project. Here an endpoint bound to a project
(``WebhookEndpoint(..., project=)``, ``serve --webhook-url PROJECT=URL``) is
delivered the events of that project's batches only; one bound to none
(``*=URL``) every project's. Every receiver is a real HTTP server the test
starts, with a secret of its own; every event it got is verified with the
official client's ``webhooks.unwrap`` and that secret.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batchfsm.emulator import (
    Emulator,
    EmulatorTransport,
    MemoryBatchStore,
    SQLiteStore,
    SQLStore,
    VirtualClock,
    WebhookEndpoint,
    create_app,
    make_input_file,
    open_store,
)
from batchfsm.emulator._receiver import WebhookReceiver

from .receivers import delivered, new_secret, verified
from .test_durable import (  # noqa: F401 - fixtures
    PATIENCE,
    SPEED,
    Server,
    _ended,
    servers,
)
from .test_sql_stores import _postgres_at_version, _sqlite_at_version

CHAT = "/v1/chat/completions"


@pytest.fixture
def receivers() -> Iterator[dict[str, WebhookReceiver]]:
    """A receiver for team_a's endpoint, one for team_b's, one for every project's."""
    made = {who: WebhookReceiver(new_secret()) for who in ("a", "b", "all")}
    yield made
    for receiver in made.values():
        receiver.close()


def _endpoints(receivers: dict[str, WebhookReceiver]) -> list[WebhookEndpoint]:
    return [
        WebhookEndpoint(r.url, r.secret or "", None if who == "all" else f"team_{who}")
        for who, r in receivers.items()
    ]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryBatchStore()
        return
    made: SQLStore
    if request.param == "sqlite":
        made = SQLiteStore(tmp_path / "db.sqlite")
    else:
        made = open_store(request.getfixturevalue("postgres_url"))
    try:
        yield made
    finally:
        made.close()


def test_each_projects_endpoint_gets_exactly_its_projects_events(store, receivers):
    import httpx2

    emu = Emulator(clock=VirtualClock(), store=store, webhooks=_endpoints(receivers))
    keys = {"sk-a": "team_a", "sk-b": "team_b"}
    made: dict[str, set[str]] = {"a": set(), "b": set()}
    with httpx2.Client(
        transport=EmulatorTransport(create_app(emu, api_keys=keys)),
        base_url="http://e/v1",
    ) as http:
        for n in range(6):
            who = "ab"[n % 2]
            auth = {"Authorization": f"Bearer sk-{who}"}
            content = make_input_file(2) if n % 3 else b"{oops"  # some fail
            upload = http.post(
                "/files",
                headers=auth,
                files={"file": ("in.jsonl", content)},
                data={"purpose": "batch"},
            ).json()
            body = {"input_file_id": upload["id"], "endpoint": CHAT,
                    "completion_window": "24h"}  # fmt: skip
            made[who].add(http.post("/batches", headers=auth, json=body).json()["id"])
        cancelled = sorted(made["b"])[0]
        http.post(
            f"/batches/{cancelled}/cancel", headers={"Authorization": "Bearer sk-b"}
        )
    emu.clock.advance(120)  # type: ignore[attr-defined]
    emu.run()
    got = {who: verified(r) for who, r in receivers.items()}
    for who in "ab":
        assert sorted(e.data.id for e in got[who]) == sorted(made[who])
    assert sorted(e.data.id for e in got["all"]) == sorted(made["a"] | made["b"])
    # The outbox says the same: no delivery of an event to another project's URL.
    urls = {r.url: who for who, r in receivers.items()}
    owner = {b: who for who in "ab" for b in made[who]}
    batch_of = {e.id: e.batch_id for e in emu.webhook_events()}
    for delivery in emu.webhook_deliveries():
        assert urls[delivery.endpoint] in ("all", owner[batch_of[delivery.event_id]])
    assert {e.project for e in emu.webhook_events()} == {"team_a", "team_b"}


def test_an_endpoint_of_no_project_gets_the_default_projects_events(receivers):
    hook = receivers["all"]
    emu = Emulator(webhooks=[WebhookEndpoint(hook.url, hook.secret or "")])
    upload = emu.create_file(b"{oops", "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint=CHAT)
    emu.clock.advance(5)  # type: ignore[attr-defined]
    emu.run()
    assert [e.data.id for e in verified(hook)] == [batch.id]


def test_an_endpoint_added_again_is_bound_to_the_project_named_last(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        store.outbox.add_webhook_endpoint("http://x/", "team_a")
        store.outbox.add_webhook_endpoint("http://x/", "team_b")
        emu = Emulator(clock=VirtualClock(), store=store)
        for project in ("team_a", "team_b"):
            f = emu.create_file(b"{oops", "in.jsonl", "batch", project=project)
            emu.create_batch(input_file_id=f.id, endpoint=CHAT, project=project)
        emu.clock.advance(5)  # type: ignore[attr-defined]
        emu.run()
        events = {e.id: e.project for e in emu.webhook_events()}
        assert [events[d.event_id] for d in emu.webhook_deliveries()] == ["team_b"]
    finally:
        store.close()


def test_a_bad_project_of_an_endpoint_is_refused_naming_it():
    with pytest.raises(ValueError, match="the project of http://x/ must be 1 to 64"):
        WebhookEndpoint("http://x/", new_secret(), "team a")


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_version_10_database_keeps_its_endpoints_for_every_project(
    db, tmp_path, request
):
    # Made by the batchfsm before endpoints had projects: an event written
    # then gets its batch's project, and its endpoints stay every project's.
    if db == "sqlite":
        url = str(tmp_path / "old.sqlite")
        _sqlite_at_version(url, 10)
        conn: Any = sqlite3.connect(url)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        _postgres_at_version(url, 10)
        conn = psycopg.connect(url)
    for statement in (
        "INSERT INTO batchfsm_batches (id, body, status, epoch, project)"
        " VALUES ('batch_1', '{}', 'failed', 1, 'team_a')",
        "INSERT INTO batchfsm_events (id, batch_id, type, created_at, body)"
        " VALUES ('evt_1', 'batch_1', 'batch.failed', 1, '{}')",
        "INSERT INTO batchfsm_webhook_endpoints (url) VALUES ('http://x/')",
    ):
        conn.execute(statement)
    conn.commit()
    conn.close()
    store = open_store(url)
    try:
        assert [e.project for e in store.outbox.events()] == ["team_a"]
        with store._db.transaction(write=False) as tx:
            rows = tx.all("SELECT url, project FROM batchfsm_webhook_endpoints")
        assert [tuple(r) for r in rows] == [("http://x/", None)]
    finally:
        store.close()


# -- serve's settings ----------------------------------------------------------------


def _settings(urls: list[str], keys: dict[str, str] | None) -> Any:
    from batchfsm._cli import _webhooks

    args = argparse.Namespace(
        webhook_url=urls, webhook_secret=[new_secret()], webhook_window="60"
    )
    return _webhooks(args, keys)


def test_serve_binds_each_url_to_the_project_it_names():
    keys = {"sk-a": "team_a", "sk-b": "team_b"}
    hooks = _settings(
        ["team_a=http://a/?x=1", "*=http://all/", "team_b=https://b/"], keys
    )
    assert [(e.url, e.project) for e in hooks.endpoints] == [
        ("http://a/?x=1", "team_a"),
        ("http://all/", None),
        ("https://b/", "team_b"),
    ]
    # Without projects (no key, or plain keys), a plain URL is every project's.
    assert _settings(["http://x/?a=b"], None).endpoints[0].project is None
    assert _settings(["http://x/"], {"sk": "proj_default"}).endpoints[0].project is None


@pytest.mark.parametrize(
    ("urls", "keys", "message"),
    [
        (["http://x/"], {"sk-a": "team_a"},
         "--webhook-url http://x/: the API keys are in projects (team_a): name the "
         "project whose events it gets, PROJECT=URL, or *=URL for every project's"),
        (["team_c=http://x/"], {"sk-a": "team_a"},
         "--webhook-url team_c=http://x/: no API key is in project team_c"),
        (["team_a=http://x/"], None,
         "--webhook-url team_a=http://x/: no API key is in project team_a"),
        (["team a=http://x/"], {"sk-a": "team_a"},
         "--webhook-url team a=http://x/: the project must be 1 to 64 letters"),
        (["team_a=ftp://x/"], {"sk-a": "team_a"},
         "a webhook URL must be http:// or https://, got 'ftp://x/'"),
    ],
)  # fmt: skip
def test_serve_refuses_an_url_that_could_leak_or_reach_no_one(urls, keys, message):
    with pytest.raises(ValueError, match="webhook") as refused:
        _settings(urls, keys)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_serve_refuses_a_plain_url_beside_project_keys_in_one_line(capsys):
    from batchfsm._cli import main

    secret = new_secret()
    code = main(["serve", "--port", "1", "--api-key", "sk-a=team_a",
                 "--webhook-url", "http://x/", "--webhook-secret", secret])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert "name the project whose events it gets" in err


# -- real serve processes --------------------------------------------------------------


def _hooked(servers, db: str, receivers: dict[str, WebhookReceiver]) -> Server:  # noqa: F811
    args = ["--speed", SPEED, "--api-key", "sk-a=team_a", "--api-key", "sk-b=team_b"]
    for who, r in receivers.items():
        args += ["--webhook-url", f"{'*' if who == 'all' else 'team_' + who}={r.url}",
                 "--webhook-secret", r.secret or ""]  # fmt: skip
    made: Server = servers(db, *args)
    return made


def _batch(server: Server, who: str, good: bool) -> str:
    auth = {"Authorization": f"Bearer sk-{who}"}
    content = make_input_file(2) if good else b"{oops"
    upload = server.http.post(
        "/files", headers=auth, files={"file": ("in.jsonl", content)},
        data={"purpose": "batch"},
    )  # fmt: skip
    assert upload.status_code == 200, upload.text
    body = {"input_file_id": upload.json()["id"], "endpoint": CHAT,
            "completion_window": "24h"}  # fmt: skip
    answer = server.http.post("/batches", headers=auth, json=body)
    assert answer.status_code == 200, answer.text
    batch_id: str = answer.json()["id"]
    return batch_id


def _wait_ended(server: Server, who: str, batch_id: str) -> None:
    deadline = time.monotonic() + PATIENCE
    auth = {"Authorization": f"Bearer sk-{who}"}
    while not _ended(server.http.get(f"/batches/{batch_id}", headers=auth).json()):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.01)


def _wait_events(receivers: dict[str, WebhookReceiver], want: dict[str, set[str]]):
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if all(len(verified(receivers[w])) >= len(want[w]) for w in want):
            break
        time.sleep(0.05)
    time.sleep(0.5)  # any event sent where it must not go arrives by now too


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_serve_delivers_each_projects_events_to_its_endpoints_only(
    servers,  # noqa: F811
    receivers,
    db,
    request,
    tmp_path,
):
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if db == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    # Two processes sharing PostgreSQL (SQLite: one), each creating batches
    # of both projects; the first killed once its batches ended.
    procs = [_hooked(servers, url, receivers)]
    if db == "postgres":
        procs.append(_hooked(servers, url, receivers))
    made: dict[str, set[str]] = {"a": set(), "b": set()}
    for n in range(8):
        server, who = procs[n % len(procs)], "ab"[(n // 2) % 2]
        made[who].add(_batch(server, who, good=n % 3 != 0))
    for who in "ab":
        for batch_id in made[who]:
            _wait_ended(procs[-1], who, batch_id)
    if db == "postgres":
        procs[0].kill()
    _wait_events(receivers, {"a": made["a"], "b": made["b"],
                             "all": made["a"] | made["b"]})  # fmt: skip
    for who, want in (("a", made["a"]), ("b", made["b"]),
                      ("all", made["a"] | made["b"])):  # fmt: skip
        got = delivered(receivers[who])
        assert set(got) == want, procs[-1].output()
        assert all(len(ids) == 1 for ids in got.values())  # one webhook-id each
