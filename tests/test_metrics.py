"""``GET /metrics``: read back by prometheus_client's own parser; the docs' series."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from batchfsm.emulator import (
    Emulator,
    PostgresStore,
    SQLiteStore,
    StoreUnavailable,
    VirtualClock,
    create_app,
    default_handler,
    make_input_file,
)
from batchfsm.emulator._metrics import SERIES
from batchfsm.emulator._stores import MemoryBatchStore

from .postgres import new_database

DOCS = Path(__file__).parent.parent / "docs" / "operations.rst"
AUTH = {"Authorization": "Bearer k"}


def _scrape(client: TestClient, auth: dict[str, str] = AUTH) -> dict[str, Any]:
    answer = client.get("/metrics", headers=auth)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(answer.text)
    return {f.name: f for f in families}


def _value(families: dict[str, Any], name: str, **labels: str) -> float:
    family = families[re.sub(r"_(total|bucket|count|sum)$", "", name)]
    found = [
        s.value
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, family.samples)
    value: float = found[0]
    return value


def _run(emulator: Emulator, clock: VirtualClock, client: TestClient) -> str:
    upload = emulator.create_file(make_input_file(4), "in.jsonl", "batch")
    answer = client.post(
        "/v1/batches",
        headers=AUTH,
        json={
            "input_file_id": upload.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    clock.advance(100)
    batch_id: str = answer.json()["id"]
    emulator.retrieve_batch(batch_id)  # runs what is due (no worker runs here)
    return batch_id


def test_metrics_parse_and_show_every_series_named() -> None:
    clock = VirtualClock()
    emulator = Emulator(clock=clock)
    client = TestClient(create_app(emulator, api_key="k"))
    assert client.get("/metrics").status_code == 401  # behind the key, as the API
    batch_id = _run(emulator, clock, client)
    assert client.get(f"/v1/batches/{batch_id}", headers=AUTH).status_code == 200
    families = _scrape(client)
    assert set(families) == {re.sub(r"_total$", "", s[0]) for s in SERIES}
    for name, kind, _, _ in SERIES:
        assert families[re.sub(r"_total$", "", name)].type == kind
    assert _value(families, "batchfsm_batches", status="completed") == 1
    assert _value(families, "batchfsm_batches", status="validating") == 0
    assert _value(families, "batchfsm_requests", outcome="completed") == 4
    assert _value(families, "batchfsm_store_up") == 1
    assert _value(families, "batchfsm_work_due") == 0
    retrieved = {"route": "/v1/batches/{batch_id}", "method": "GET", "code": "200"}
    assert _value(families, "batchfsm_http_requests_total", **retrieved) == 1
    refused = {"route": "/metrics", "method": "GET", "code": "401"}
    assert _value(families, "batchfsm_http_requests_total", **refused) == 1
    timed = {"route": "/v1/batches/{batch_id}", "method": "GET", "le": "+Inf"}
    assert _value(families, "batchfsm_http_request_duration_seconds_bucket", **timed)
    one = {"route": "/v1/batches/{batch_id}", "method": "GET"}
    assert _value(families, "batchfsm_http_request_duration_seconds_count", **one) == 1
    unknown = {"route": "(none)", "method": "GET", "code": "404"}
    client.get("/v1/nothing/here", headers=AUTH)
    assert _value(_scrape(client), "batchfsm_http_requests_total", **unknown) == 1


def test_due_work_and_the_workers_lag_are_shown() -> None:
    clock = VirtualClock()
    emulator = Emulator(clock=clock)
    client = TestClient(create_app(emulator, api_key="k"))
    upload = emulator.create_file(make_input_file(2), "in.jsonl", "batch")
    for _ in range(3):
        emulator.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
    clock.advance(7)  # nobody ran the work: 3 batches wait, the earliest 6 s late
    families = _scrape(client)
    assert _value(families, "batchfsm_batches", status="validating") == 3
    assert _value(families, "batchfsm_work_due") == 3
    assert _value(families, "batchfsm_worker_lag_seconds") == 6


def test_the_sqlite_store_counts_the_same(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "m.sqlite"))
    clock = VirtualClock()
    emulator = Emulator(clock=clock, store=store, files=store.files, ids=store.ids())
    try:
        client = TestClient(create_app(emulator, api_key="k"))
        _run(emulator, clock, client)
        families = _scrape(client)
        assert _value(families, "batchfsm_batches", status="completed") == 1
        assert _value(families, "batchfsm_requests", outcome="completed") == 4
        assert _value(families, "batchfsm_requests", outcome="failed") == 0
    finally:
        store.close()


def test_store_errors_retries_and_outages_are_counted_on_postgresql(
    postgres_server: str,
) -> None:
    url = new_database(postgres_server)
    store = PostgresStore(url)
    cut: list[str] = []

    def cutting(endpoint: str, body: Any, custom_id: str, now: int) -> Any:
        if custom_id == "request-2" and not cut:  # the worker's connection drops
            cut.append(custom_id)
            pid = store._db._conns.current().info.backend_pid  # type: ignore[attr-defined]
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return default_handler(endpoint, body, custom_id, now)

    clock = VirtualClock()
    emulator = Emulator(
        clock=clock, store=store, files=store.files, ids=store.ids(), handler=cutting
    )
    try:
        client = TestClient(create_app(emulator, api_key="k"))
        upload = emulator.create_file(make_input_file(6), "in.jsonl", "batch")
        emulator.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
        clock.advance(60)
        with pytest.raises(StoreUnavailable):
            emulator.run()
        families = _scrape(client)  # the scrape's own call brings the store back
        assert _value(families, "batchfsm_store_errors_total") == 1
        assert _value(families, "batchfsm_store_retries_total") == 1
        assert _value(families, "batchfsm_store_outages_total") == 1
        emulator.run()
        families = _scrape(client)
        assert _value(families, "batchfsm_batches", status="completed") == 1
        assert _value(families, "batchfsm_requests", outcome="completed") == 6
        assert _value(families, "batchfsm_store_up") == 1
    finally:
        store.close()


def test_the_docs_list_exactly_the_series_served() -> None:
    text = DOCS.read_text()
    named = set(re.findall(r"``(batchfsm_\w+)``", text))
    assert named == {s[0] for s in SERIES}


def test_lease_takeovers_are_counted(tmp_path: Path) -> None:
    import batchfsm as bf
    from batchfsm.emulator import Work, open_store

    from .test_sql_stores import _stall, _wait_for

    url = str(tmp_path / "leases.sqlite")
    stalled, other = open_store(url, lease_seconds=0.2), open_store(url)
    try:
        client = TestClient(create_app(Emulator(store=other, files=other.files)))
        before = _value(_scrape(client), "batchfsm_lease_takeovers_total")
        batch = bf.advance(
            bf.new_batch(
                id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=1
            ),
            "start",
            at=2,
        )
        stalled.insert(batch, Work(due_at=3))
        assert stalled.due(3, 1) == [batch.id]
        _stall(stalled)
        _wait_for(lambda: other.due(3, 1), "the lease ran out")
        after = _value(_scrape(client), "batchfsm_lease_takeovers_total")
        assert after == before + 1
    finally:
        stalled.close()
        other.close()


def test_any_projects_key_scrapes_the_whole_server_and_no_label_names_a_project() -> (
    None
):
    clock = VirtualClock()
    emulator = Emulator(clock=clock)
    keys = {"sk-a": "team_alpha", "sk-b": "team_beta"}
    client = TestClient(create_app(emulator, api_keys=keys))
    ids = []
    for key in keys:
        auth = {"Authorization": f"Bearer {key}"}
        upload = client.post(
            "/v1/files",
            headers=auth,
            files={"file": ("in.jsonl", make_input_file(2))},
            data={"purpose": "batch"},
        ).json()
        batch = client.post(
            "/v1/batches",
            headers=auth,
            json={
                "input_file_id": upload["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        client.get(f"/v1/batches/{batch['id']}", headers=auth)
        ids += [upload["id"], batch["id"]]
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer sk-c"}).status_code
        == 401
    )
    text = client.get("/metrics", headers={"Authorization": "Bearer sk-b"}).text
    families = _scrape(client, {"Authorization": "Bearer sk-a"})
    assert _value(families, "batchfsm_batches", status="validating") == 2  # both
    for secret in [*ids, *keys, *keys.values(), "proj_"]:
        assert secret not in text
    labels = {k for f in families.values() for s in f.samples for k in s.labels}
    assert labels <= {"status", "outcome", "route", "method", "code", "le"}


class _AwayStore(MemoryBatchStore):
    away = False

    def census(self) -> Any:
        if self.away:
            raise StoreUnavailable("test store: connection lost")
        return super().census()


def test_a_scrape_answers_while_the_store_is_away_and_does_not_end_the_outage() -> None:
    store = _AwayStore()
    emulator = Emulator(store=store)
    client = TestClient(create_app(emulator, api_key="k"))
    store.away = True
    families = _scrape(client)
    assert _value(families, "batchfsm_store_up") == 0
    assert _value(families, "batchfsm_store_errors_total") == 1
    assert "batchfsm_batches" not in families  # not read: no stale numbers
    assert emulator.outage.down
    store.away = False
    families = _scrape(client)
    assert _value(families, "batchfsm_batches", status="completed") == 0
    assert _value(families, "batchfsm_store_up") == 1
