"""Each project's stored bytes: a counter every write of files moves, never a scan.

``stored_bytes(project=)`` is what ``--max-storage`` checks at each upload.
The SQL stores keep it as one row per project, moved in the transaction of
each write that adds files (uploads, a batch's result files) or deletes them
(delete, purge). Judged against the truth (a sum over every stored File
object) after every kind of write, with writers racing on one database
(SQLite: two connections; PostgreSQL: several), and after an upgrade of a
database made before the counter.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from batchfsm.emulator import (
    ApiError,
    Emulator,
    FileObject,
    MemoryBatchStore,
    SQLiteStore,
    SQLStore,
    VirtualClock,
    make_input_file,
    open_store,
)

from .test_sql_stores import _postgres_at_version, _sqlite_at_version

CHAT = "/v1/chat/completions"


def _truth(store: SQLStore) -> dict[str, int]:
    """Each project's bytes, summed over every stored File object's JSON."""
    size = (
        "(body::json ->> 'bytes')::bigint"
        if store._db.postgres
        else "json_extract(body, '$.bytes')"
    )
    with store._db.transaction(write=False) as tx:
        rows = tx.all(
            f"SELECT project, sum({size}) FROM batchfsm_files GROUP BY project"
        )
    return {project: int(held) for project, held in rows if held}


def _counted(store: SQLStore) -> dict[str, int]:
    with store._db.transaction(write=False) as tx:
        rows = tx.all("SELECT project, bytes FROM batchfsm_storage")
    return {project: int(held) for project, held in rows if held}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "db.sqlite")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[SQLStore]:
    made = open_store(url)
    yield made
    made.close()


def _file(i: int, size: int, expires_at: int | None = None) -> FileObject:
    return FileObject(id=f"file-{i:022d}", bytes=size, created_at=1,
                      filename="a.jsonl", purpose="batch",
                      expires_at=expires_at)  # fmt: skip


def test_every_write_of_files_moves_its_projects_count(store):
    emu = Emulator(clock=VirtualClock(), store=store, ids=store.ids())
    for project in ("team_a", "team_b"):
        content = make_input_file(3)
        upload = emu.create_file(content, "in.jsonl", "batch", project=project)
        emu.create_batch(input_file_id=upload.id, endpoint=CHAT, project=project)
    emu.clock.advance(120)  # type: ignore[attr-defined]
    emu.run()  # the batches end: their result files count too
    assert _counted(store) == _truth(store)
    store.files.add(_file(1, 7, expires_at=10), b"x" * 7, project="team_a")
    store.files.add(_file(2, 5), b"y" * 5, project="team_b")
    assert _counted(store) == _truth(store)
    assert store.files.purge(100, 10) == 1  # file 1 expired
    assert store.files.delete(_file(2, 5).id)
    assert not store.files.delete(_file(2, 5).id)  # gone: nothing given back twice
    truth = _truth(store)
    assert _counted(store) == truth and set(truth) == {"team_a", "team_b"}
    for project, held in truth.items():
        assert store.files.stored_bytes(project=project) == held
    assert store.files.stored_bytes() == sum(truth.values())
    assert store.files.stored_bytes(project="nobody") == 0


def test_racing_writers_lose_no_bytes(url):
    # Writers on connections of their own add and delete files of two
    # projects at once; the count ends as the truth, to the byte.
    stores = [open_store(url) for _ in range(4)]
    try:

        def write(n: int) -> None:
            rng = random.Random(n)
            files = stores[n].files
            mine = []
            for i in range(40):
                file = _file(n * 1000 + i, rng.randrange(1, 500))
                files.add(file, b"z" * file.bytes, project=f"team_{'ab'[i % 2]}")
                mine.append(file.id)
                if rng.random() < 0.3:
                    assert files.delete(mine.pop(rng.randrange(len(mine))))

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        truth = _truth(stores[0])
        assert _counted(stores[0]) == truth and set(truth) == {"team_a", "team_b"}
    finally:
        for made in stores:
            made.close()


def test_a_version_11_database_gets_its_counts_from_its_files(url):
    if url.startswith("postgresql"):
        _postgres_at_version(url, 11)
        import psycopg

        conn: Any = psycopg.connect(url)
    else:
        _sqlite_at_version(url, 11)
        conn = sqlite3.connect(url)
    for i, (project, size) in enumerate([("team_a", 3), ("team_a", 4), ("b", 9)]):
        conn.execute(
            "INSERT INTO batchfsm_files (id, body, purpose, project)"
            f" VALUES ('file-{i}', '{{\"bytes\": {size}}}', 'batch', '{project}')"
        )
    conn.commit()
    conn.close()
    store = open_store(url)
    try:
        assert _counted(store) == {"team_a": 7, "b": 9} == _truth(store)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_the_storage_bound_is_each_projects_own_on_every_store(kind, tmp_path, request):
    store: Any
    if kind == "memory":
        store = MemoryBatchStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "db.sqlite")
    else:
        store = open_store(request.getfixturevalue("postgres_url"))
    try:
        emu = Emulator(clock=VirtualClock(), store=store, max_storage_bytes=100)
        emu.create_file(b"{}\n" * 30, "in.jsonl", "batch", project="team_a")
        with pytest.raises(ApiError, match="Storage limit reached") as refused:
            emu.create_file(b"{}\n" * 4, "in.jsonl", "batch", project="team_a")
        assert refused.value.status_code == 413
        # The other project's storage is its own: the same file fits there.
        emu.create_file(b"{}\n" * 30, "in.jsonl", "batch", project="team_b")
    finally:
        if kind != "memory":
            store.close()


#: Uploads racing for room under the storage limit, and the files that fit.
RACERS, FITS, SIZE = 8, 3, 100


def _gated(files: Any, barrier: threading.Barrier) -> None:
    """Make every upload wait, once it has read the room left, for all the others.

    So every racer has seen room for its file before any of them writes: a
    check made on that reading alone lets them all in, every time.
    """
    read = files.stored_bytes

    def stored_bytes(*, project: str | None = None) -> int:
        held: int = read(project=project)
        barrier.wait()
        return held

    files.stored_bytes = stored_bytes


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_racing_uploads_never_pass_the_storage_limit_together(kind, tmp_path, request):
    # RACERS uploads, each having seen room, race for room for FITS of them:
    # FITS are stored, every other one is refused with the 413, and the
    # project never holds more than the limit. SQL racers each have a store
    # of their own on one database, as processes sharing it do.
    barrier = threading.Barrier(RACERS, timeout=60)  # a hang guard
    limit = FITS * SIZE + SIZE // 2
    if kind == "memory":
        shared = Emulator(store=MemoryBatchStore(), max_storage_bytes=limit)
        emus, stores = [shared] * RACERS, []
    else:
        url = (
            str(tmp_path / "db.sqlite")
            if kind == "sqlite"
            else str(request.getfixturevalue("postgres_url"))
        )
        stores = [open_store(url) for _ in range(RACERS)]
        emus = [Emulator(store=s, ids=s.ids(), max_storage_bytes=limit) for s in stores]
    for emu in set(emus):
        _gated(emu.files, barrier)
    stored: list[str] = []
    refused: list[BaseException] = []

    def upload(n: int) -> None:
        try:
            made = emus[n].create_file(b"x" * SIZE, "a.bin", "user_data")
            stored.append(made.id)
        except Exception as exc:  # noqa: BLE001 - judged below: each the typed refusal
            refused.append(exc)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(RACERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for emu in set(emus):
            del emu.files.stored_bytes  # ungated
        files = emus[0].files
        assert len(stored) == FITS, (stored, refused)
        assert files.stored_bytes(project="proj_default") == FITS * SIZE <= limit
        assert sorted(f.id for f in files.list()) == sorted(stored)
        for exc in refused:
            assert isinstance(exc, ApiError), repr(exc)
            assert exc.status_code == 413
            assert exc.body["error"]["code"] == "storage_limit_exceeded"
            assert str(exc) == (
                "413: Storage limit reached: this file of 100 bytes would bring "
                "the files stored to 400 bytes, past this server's limit of 350 "
                "bytes. Delete files to make room."
            )
        if stores:
            assert _counted(stores[0]) == _truth(stores[0]) == {"proj_default": 300}
    finally:
        for made in stores:
            made.close()
