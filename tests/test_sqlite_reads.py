"""Retrieve on SQLite reads on the event loop, never waits there, never reads stale."""

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from batchfsm.emulator import (
    Emulator,
    EmulatorTransport,
    SQLiteStore,
    create_app,
    make_input_file,
)
from batchfsm.emulator._api_error import ApiError
from batchfsm.emulator._endpoint import AppContext
from batchfsm.emulator._sqlite import _busy
from batchfsm.emulator._store_errors import WouldWait

ENDPOINT = "/v1/chat/completions"


@pytest.fixture
def emu(tmp_path: Path):
    store = SQLiteStore(tmp_path / "db.sqlite")
    emulator = Emulator(store=store, files=store.files, ids=store.ids())
    yield emulator
    emulator.stop()
    store.close()


def _batch_id(emu: Emulator) -> str:
    file = emu.create_file(make_input_file(2), "in.jsonl", "batch")
    return emu.create_batch(
        input_file_id=file.id, endpoint=ENDPOINT, completion_window="24h"
    ).id


@contextlib.contextmanager
def _reading_now(store: SQLiteStore) -> Iterator[None]:
    """Another caller in the middle of a read on the loop's connection."""
    held = store._db._now_taken  # type: ignore[attr-defined]
    assert held.acquire(timeout=5)
    try:
        yield
    finally:
        held.release()


def test_a_read_now_answers_as_the_ordinary_read_does(emu):
    batch_id = _batch_id(emu)
    with pytest.raises(WouldWait):  # no background worker: a call runs due work
        emu._retrieve_batch_now(batch_id)
    emu.start()
    assert emu._retrieve_batch_now(batch_id).id == batch_id
    assert emu._retrieve_batch_now(batch_id) == emu.retrieve_batch(batch_id)
    with pytest.raises(ApiError) as unknown:
        emu._retrieve_batch_now("batch_nope")
    assert unknown.value.status_code == 404
    with pytest.raises(ApiError) as elsewhere:  # another project's: unknown
        emu._retrieve_batch_now(batch_id, project="proj_other")
    assert elsewhere.value.status_code == 404
    with pytest.raises(ApiError) as malformed:
        emu._retrieve_batch_now("x")
    assert malformed.value.status_code == 400


def test_a_read_now_refuses_to_wait_for_another_reader(emu):
    batch_id = _batch_id(emu)
    emu.start()
    with _reading_now(emu.batches), pytest.raises(WouldWait):
        emu._retrieve_batch_now(batch_id)
    assert emu._retrieve_batch_now(batch_id).id == batch_id  # and usable again


def test_sqlites_busy_is_a_wait_refused_and_other_errors_are_not(tmp_path):
    # A real "database is locked": a rollback-journal file another connection
    # holds exclusively, read by a connection that does not wait.
    path = tmp_path / "journal.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    reader = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as busy:
        reader.execute("SELECT * FROM t").fetchall()
    with pytest.raises(sqlite3.OperationalError) as wrong:
        holder.execute("SELECT * FROM no_such_table")
    holder.close()
    reader.close()
    assert _busy(busy.value) and not _busy(wrong.value)


def test_the_route_reads_on_the_loop_and_in_a_thread_when_it_must(emu, monkeypatch):
    batch_id = _batch_id(emu)
    emu.start()
    hops: list[str] = []
    hop = AppContext.in_thread

    async def counted(self, function, *args, **kwargs):
        hops.append(function.__name__)
        return await hop(self, function, *args, **kwargs)

    monkeypatch.setattr(AppContext, "in_thread", counted)
    transport = EmulatorTransport(create_app(emu))
    with httpx2.Client(transport=transport, base_url="http://e") as http:
        first = http.get(f"/v1/batches/{batch_id}")
        assert first.status_code == 200 and first.json()["id"] == batch_id
        assert hops == []  # read on the event loop
        with _reading_now(emu.batches):
            held = http.get(f"/v1/batches/{batch_id}")  # read in a store thread
        assert held.content == first.content
        assert hops == ["retrieve_batch"]
        assert http.get("/v1/batches/batch_nope").status_code == 404


def test_two_processes_on_one_file_never_read_a_stale_batch(serve, tmp_path):
    # One serve writes, the other reads at once: every read shows the write
    # answered just before it (each read is a transaction of its own, so it
    # sees every commit made before it began, by any process).
    db = str(tmp_path / "shared.sqlite")
    writer = httpx2.Client(base_url=serve("--db", db), timeout=30)
    reader = httpx2.Client(base_url=serve("--db", db), timeout=30)
    with writer, reader:
        for _ in range(10):
            upload = writer.post(
                "/v1/files",
                files={"file": ("in.jsonl", make_input_file(2))},
                data={"purpose": "batch"},
            )
            created = writer.post(
                "/v1/batches",
                json={
                    "input_file_id": upload.json()["id"],
                    "endpoint": ENDPOINT,
                    "completion_window": "24h",
                },
            ).json()
            path = f"/v1/batches/{created['id']}"
            seen = reader.get(path)
            assert seen.status_code == 200 and seen.json()["id"] == created["id"]
            cancelled = writer.post(f"{path}/cancel")
            if cancelled.status_code != 200:  # it completed first: as read then
                assert reader.get(path).json()["status"] == "completed"
                continue
            status = reader.get(path).json()["status"]
            assert status in {"cancelling", "cancelled"}
