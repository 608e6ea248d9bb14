"""The SQL stores, each against a real database: SQLite files and PostgreSQL."""

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm.emulator import (
    AnchoredClock,
    FileObject,
    MemoryIds,
    PostgresStore,
    ResultLines,
    SchemaVersionError,
    SQLiteStore,
    SQLStore,
    StoreError,
    Work,
    open_store,
)
from batchfsm.emulator._database import Tx
from batchfsm.emulator._leases import dead_here, this_process
from batchfsm.emulator._migrations import CHUNK_BYTES, LATEST, MIGRATIONS, chunks
from batchfsm.strategies import batches

S = bf.BatchStatus


def _batch(batch_id: str = "batch_1", created_at: int = 100) -> bf.Batch:
    return bf.new_batch(
        id=batch_id, input_file_id="file-1", endpoint="/v1/embeddings",
        created_at=created_at,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def open_db(request, tmp_path) -> Iterator[Callable[[], SQLStore]]:
    """Open (and reopen) one database of each kind: a factory of stores on it."""
    if request.param == "sqlite":
        url = str(tmp_path / "batches.sqlite")
    else:
        url = request.getfixturevalue("postgres_url")
    opened: list[SQLStore] = []

    def open_(lease_seconds: float = 30) -> SQLStore:
        store = open_store(url, lease_seconds=lease_seconds)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_db: Callable[[], SQLStore]) -> SQLStore:
    return open_db()


# -- values in, the same values out ---------------------------------------------------

_COUNTS = st.integers(0, 2**62)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=batches(),
    work=st.builds(
        Work, due_at=_COUNTS, epoch=_COUNTS, done=_COUNTS, offset=_COUNTS,
        completed=_COUNTS, failed=_COUNTS, input_tokens=_COUNTS,
        output_tokens=_COUNTS, output_expires_after=st.none() | _COUNTS,
    ),
)  # fmt: skip
def test_any_batch_and_work_come_back_equal(store, batch, work):
    batch = attrs.evolve(batch, id=f"batch_{uuid.uuid4().hex}")  # new each example
    store.insert(batch, work)
    assert store.get(batch.id) == batch
    assert store.work(batch.id) == work
    assert store.page(None, 1)[0] == [batch]


# -- one conditional write, whole or not at all ------------------------------------


def test_a_failure_inside_a_write_rolls_all_of_it_back(store):
    batch = _batch()
    store.insert(batch, Work(due_at=101))
    started = bf.advance(batch, "start", at=101)
    with pytest.raises(UnicodeEncodeError):
        # The batch row is updated first; the unwritable result line fails after.
        store.write(
            started,
            Work(due_at=102, done=2),
            status=S.VALIDATING,
            epoch=0,
            output=["fine"],
            errors=["\ud800 cannot be stored"],
        )
    assert store.get(batch.id) == batch
    assert store.work(batch.id) == Work(due_at=101)
    assert store.results(batch.id, "output") == b""
    assert store.due(101, 10) == [batch.id]


def test_an_end_files_its_lines_adds_its_event_and_clears_up_at_once(
    open_db: Callable[[], SQLStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write that ends a batch: its output file (the lines stored, then a
    # tail), its error file (bytes), the project's stored bytes, its event
    # and the delivery to the endpoint, its stored lines gone; on PostgreSQL
    # all in one statement (no BEGIN, no COMMIT); a stale one writes nothing.
    store = open_db()
    store.outbox.add_webhook_endpoint("http://127.0.0.1:9/hook")
    batch = _batch()
    store.insert(batch, Work(due_at=101))
    counts = bf.BatchRequestCounts(total=3, completed=2, failed=1)
    started = bf.advance(batch, "start", at=101, request_counts=counts)
    stored = ['{"custom_id": "a"}', '{"custom_id": "b"}']
    assert store.write(
        started, Work(due_at=102, done=2), status=S.VALIDATING, epoch=0, output=stored
    )
    tail, errors = b'{"custom_id": "c"}\n', b'{"custom_id": "d"}\n'
    output = "".join(f"{line}\n" for line in stored).encode() + tail
    files = [
        (
            FileObject(
                id=f"file-{kind}",
                bytes=size,
                created_at=102,
                filename=f"{kind}.jsonl",
                purpose="batch_output",
            ),
            content,
        )
        for kind, size, content in (
            ("output", len(output), ResultLines(batch.id, "output", tail)),
            ("errors", len(errors), errors),
        )
    ]
    ended = bf.advance(
        bf.advance(started, "finalize", at=102), "complete", at=103,
        output_file_id="file-output", error_file_id="file-errors",
    )  # fmt: skip
    before = store.files.stored_bytes()
    ran: list[str] = []
    run = Tx.run

    def counted(tx: Tx, sql: str, params: Any = ()) -> Any:
        ran.append(sql)
        return run(tx, sql, params)

    monkeypatch.setattr(Tx, "run", counted)
    begun: list[bool] = []
    transaction = type(store._db).transaction

    def counted_transactions(db: Any, write: bool = True) -> Any:
        begun.append(write)  # a write's: BEGIN and COMMIT; else one statement
        return transaction(db, write)

    monkeypatch.setattr(type(store._db), "transaction", counted_transactions)
    assert not store.write(ended, None, status=S.IN_PROGRESS, epoch=0, files=files)
    assert len(ran) == 1 or not store._db.postgres, ran
    assert store.files.get("file-output") is None and store.outbox.events() == []
    ran.clear()
    begun.clear()
    assert store.write(ended, None, status=S.IN_PROGRESS, epoch=1, files=files)
    assert len(ran) == 1 or not store._db.postgres, ran
    assert begun == [store._db.postgres is False]  # on PostgreSQL: no BEGIN
    monkeypatch.undo()
    assert store.get(batch.id) == ended
    assert store.files.content("file-output") == output
    assert store.files.content("file-errors") == errors
    assert store.files.stored_bytes() == before + len(output) + len(errors)
    [event] = store.outbox.events()
    assert (event.type, event.batch_id) == ("batch.completed", batch.id)
    assert [d.endpoint for d in store.outbox.deliveries(event.id)] == [
        "http://127.0.0.1:9/hook"
    ]
    assert store.results(batch.id, "output") == b""


# -- leases and epochs -------------------------------------------------------------


def test_a_batch_leased_by_one_store_is_left_out_by_another(open_db):
    first, second = open_db(), open_db()
    first.insert(_batch("batch_a"), Work(due_at=100))
    first.insert(_batch("batch_b"), Work(due_at=100))
    assert first.due(100, 1) == ["batch_a"]
    assert second.due(100, 10) == ["batch_b"]
    assert first.due(100, 10) == ["batch_a"]  # its own lease, still its own
    first.close()  # gives its leases back
    assert second.due(100, 10) == ["batch_a", "batch_b"]


def _db_now(store: SQLStore) -> float:
    with store._db.transaction(write=False) as tx:
        return float(tx.one(f"SELECT {store._db.now_sql}")[0])


def _heartbeat(store: SQLStore, owner: str) -> tuple[float, float] | None:
    """``owner``'s last renewal and lease end (the database's time), or None."""
    with store._db.transaction(write=False) as tx:
        row = tx.one(
            "SELECT heartbeat_at, lease_until FROM batchfsm_owners WHERE owner = ?",
            (owner,),
        )
    return None if row is None else (float(row[0]), float(row[1]))


def _wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 60  # a bound for a broken build, not a speed
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def _stall(store: SQLStore) -> None:
    """Stop ``store``'s heartbeat, as a paused or partitioned process's stops."""
    assert store._heartbeat is not None
    store._heartbeat.stop()


def test_a_live_holder_keeps_its_batches_however_long_its_work_takes(open_db):
    slow, other = open_db(lease_seconds=0.3), open_db(lease_seconds=0.3)
    batch = bf.advance(_batch(), "start", at=101)
    slow.insert(batch, Work(due_at=102))
    assert slow.due(102, 1) == [batch.id]
    read = slow.work(batch.id)
    assert read is not None
    # Timed by the database's clock: the lease lasts lease_seconds from now.
    beat = _heartbeat(slow, slow.owner)
    assert beat is not None
    renewed, until = beat
    assert renewed <= _db_now(slow) and until == pytest.approx(renewed + 0.3)
    # The holder is busy (a long handler call, say) well past the lease it had
    # when it claimed the batch; its heartbeat goes on meanwhile.
    _wait_for(lambda: _db_now(other) > until + 0.3, "a lease's time passed")
    assert other.due(102, 10) == []  # not taken over,
    beat = _heartbeat(other, slow.owner)
    assert beat is not None and beat[1] > until  # for it was renewed
    taken = other.work(batch.id)
    assert taken is not None and taken.epoch == read.epoch
    assert slow.write(
        batch, attrs.evolve(read, done=1), status=S.IN_PROGRESS, epoch=read.epoch,
        output=["on time"],
    )  # fmt: skip
    assert slow.results(batch.id, "output") == b"on time\n"


def test_a_stalled_holders_late_write_is_refused_by_the_epoch(open_db):
    stalled, other = open_db(lease_seconds=0.2), open_db()
    batch = bf.advance(_batch(), "start", at=101)
    stalled.insert(batch, Work(due_at=102))
    assert stalled.due(102, 1) == [batch.id]
    read = stalled.work(batch.id)
    assert read is not None
    # The holder stalls; once its lease ran out the other store takes over.
    _stall(stalled)
    assert other.due(102, 1) == []  # not yet: its lease lasts
    _wait_for(lambda: other.due(102, 1), "the lease ran out")
    taken = other.work(batch.id)
    assert taken is not None and taken.epoch == read.epoch + 1
    late = attrs.evolve(read, done=1, due_at=103)
    assert not stalled.write(
        batch, late, status=S.IN_PROGRESS, epoch=read.epoch, output=["late"]
    )
    assert other.write(
        batch, attrs.evolve(taken, done=1), status=S.IN_PROGRESS, epoch=taken.epoch,
        output=["on time"],
    )  # fmt: skip
    assert other.results(batch.id, "output") == b"on time\n"
    # Awake again, the old holder renews its heartbeat, but the batch stays
    # with the store that took it.
    stalled._beat()
    assert stalled.due(103, 10) == []


def test_a_heartbeat_that_falls_behind_is_renewed_before_a_claim(open_db):
    store, other = open_db(lease_seconds=0.2), open_db()
    store.insert(_batch(), Work(due_at=101))
    store.due(100, 1)  # starts the heartbeat
    _stall(store)
    beat = _heartbeat(other, store.owner)
    assert beat is not None
    _wait_for(lambda: _db_now(other) > beat[1], "its lease ran out")
    other._beat()  # others drop a heartbeat that lapsed
    assert _heartbeat(other, store.owner) is None
    assert store.due(101, 1) == ["batch_1"]  # renewed first: a lease that lasts
    assert _heartbeat(other, store.owner) is not None
    assert other.due(101, 1) == []


def test_concurrent_claimers_never_share_a_batch(open_db):
    stores = [open_db() for _ in range(4)]
    for n in range(40):
        stores[0].insert(_batch(f"batch_{n:02}"), Work(due_at=100))
    claimed: list[list[str]] = [[] for _ in stores]
    lost: list[str] = []
    barrier = threading.Barrier(len(stores))

    def claim_all(index: int) -> None:
        store = stores[index]
        barrier.wait()
        while got := store.due(100, 3):
            for batch_id in got:  # a worker's step: here, ending the batch
                claimed[index].append(batch_id)
                work = store.work(batch_id)
                ended = bf.advance(_batch(batch_id), "cancel", at=100)
                if work is None or not store.write(
                    ended, None, status=S.VALIDATING, epoch=work.epoch
                ):
                    lost.append(batch_id)  # another claimer had it too

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed for i in ids]
    assert sorted(every) == [f"batch_{n:02}" for n in range(40)] and lost == []


# -- settings and ids --------------------------------------------------------------


def test_the_first_writer_of_a_setting_wins_and_counters_count(open_db):
    first, second = open_db(), open_db()
    assert first.setting("clock", "a") == "a"
    assert second.setting("clock", "b") == "a"
    assert [first.count("ids"), second.count("ids"), first.count("ids")] == [1, 2, 3]


def test_seeded_ids_never_repeat_across_a_restart(open_db):
    before = [open_db().ids(7).new_id("file-", 22) for _ in range(3)]
    after = open_db().ids(7).new_id("file-", 22)  # a restart, or another process
    assert len({*before, after}) == 4
    assert before[0] == MemoryIds(7).new_id("file-", 22)  # reproducible from a seed


# -- schema versions -----------------------------------------------------------------


def test_everything_survives_closing_and_reopening(open_db):
    store = open_db()
    store.insert(_batch(), Work(due_at=101, done=3, offset=99))
    store.write(_batch(), Work(due_at=102), status=S.VALIDATING, epoch=0, output=["o"])
    store.files.add(
        FileObject(id="file-a", bytes=1, created_at=1, filename="a", purpose="batch"),
        b"a",
    )
    store.close()
    again = open_db()
    assert again.get("batch_1") == _batch() and again.files.content("file-a") == b"a"
    assert again.work("batch_1") == Work(due_at=102, epoch=1)
    assert again.results("batch_1", "output") == b"o\n"


def _sqlite_at_version(path, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:version]:
        for statement in migration.sqlite:
            conn.execute(statement)
        if migration.step is not None:
            migration.step(Tx(conn, postgres=False))
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def _postgres_at_version(url: str, version: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        for migration in MIGRATIONS[:version]:
            for statement in migration.postgres:
                pg.execute(statement)
            if migration.step is not None:
                migration.step(Tx(pg, postgres=True))
        pg.execute("CREATE TABLE batchfsm_schema (version integer NOT NULL)")
        pg.execute("INSERT INTO batchfsm_schema VALUES (%s)", (version,))


#: Files as a version 2 database kept them (content in one value): an empty
#: one, one of a few bytes, one of several chunks ending mid-chunk.
_OLD_FILES = {
    "file-empty": b"",
    "file-small": b'{"custom_id": "r1"}\n',
    "file-big": bytes(range(256)) * (CHUNK_BYTES // 256 * 3) + b"tail",
}


def _old_body(body: str, file_id: str, content: bytes) -> str:
    return body.replace("x", file_id).replace("N", str(len(content)))


def _judge_upgraded_files(store: SQLStore) -> None:
    for file_id, content in _OLD_FILES.items():
        assert store.files.content(file_id) == content
        got, offset = b"", 0
        while piece := store.files.read(file_id, offset, 5_000):
            got, offset = got + piece, offset + len(piece)
        assert got == content
    assert (
        store.files.read("file-big", CHUNK_BYTES - 3, 6)
        == (_OLD_FILES["file-big"][CHUNK_BYTES - 3 : CHUNK_BYTES + 3])
    )
    assert store.files.delete("file-big") and store.files.content("file-big") is None


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_version_2_database_has_its_file_content_moved_into_chunks(
    kind, tmp_path, request
):
    # Built by version 2's own statements, with rows as version 2 wrote them
    # (a file's JSON holds its size, which the storage count reads).
    body = '{"id": "x", "bytes": N}'
    if kind == "sqlite":
        path = tmp_path / "v2.sqlite"
        _sqlite_at_version(path, 2)
        conn = sqlite3.connect(path, isolation_level=None)
        for file_id, content in _OLD_FILES.items():
            conn.execute(
                "INSERT INTO batchfsm_files (id, body, content) VALUES (?, ?, ?)",
                (file_id, _old_body(body, file_id, content), content),
            )
        conn.close()
        url = str(path)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        _postgres_at_version(url, 2)
        with psycopg.connect(url, autocommit=True) as pg:
            for file_id, content in _OLD_FILES.items():
                pg.execute(
                    "INSERT INTO batchfsm_files (id, body, content)"
                    " VALUES (%s, %s, %s)",
                    (file_id, _old_body(body, file_id, content), content),
                )
    with open_store(url) as store:
        _judge_upgraded_files(store)
        with store._db.transaction() as tx:
            assert [tuple(row) for row in tx.all(
                "SELECT file_id, count(*) FROM batchfsm_file_chunks"
                " GROUP BY file_id ORDER BY file_id"
            )] == [("file-small", 1)]  # fmt: skip
            assert store._db.version(tx) == LATEST
        with (
            pytest.raises(Exception, match="content"),  # the column is gone
            store._db.transaction() as tx,
        ):
            tx.one("SELECT content FROM batchfsm_files")


def test_an_older_sqlite_database_is_upgraded_keeping_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    _sqlite_at_version(path, 1)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO batchfsm_batches (id, status, body, work, due_at)"
        " VALUES (?, ?, ?, ?, ?)",
        ("batch_1", "validating", bf.dumps(_batch()), "{}", 101),
    )
    conn.close()
    with SQLiteStore(path) as store:
        assert store.get("batch_1") == _batch() and store.due(101, 5) == ["batch_1"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "batchfsm_batches_due" in names  # migration 2 ran
    conn.close()


def test_an_older_postgres_database_is_upgraded_keeping_its_rows(postgres_url):
    import psycopg

    _postgres_at_version(postgres_url, 1)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO batchfsm_batches (id, status, body) VALUES (%s, %s, %s)",
            ("batch_1", "validating", bf.dumps(_batch())),
        )
    with PostgresStore(postgres_url) as store:
        assert store.get("batch_1") == _batch()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM batchfsm_schema").fetchall() == [
            (LATEST,)
        ]


#: Files as an older database lists them: (purpose, expiry, content), one of
#: several chunks ending mid-chunk.
_LISTED = [
    ("batch", 50, b"x"),
    ("user_data", None, b""),
    ("batch", None, bytes(range(256)) * (CHUNK_BYTES // 128) + b"end"),
    ("batch", 10, b'{"custom_id": "r1"}\n'),
]
_LISTED_FILES = [
    FileObject(id=f"file-{i}", bytes=len(content), created_at=i,
               filename="a.jsonl", purpose=purpose, expires_at=expiry)
    for i, (purpose, expiry, content) in enumerate(_LISTED)
]  # fmt: skip


def _old_file_rows(version: int) -> list[tuple[str, tuple[object, ...]]]:
    """Statements adding :data:`_LISTED_FILES` as ``version`` stored them.

    A file numbered in between is added and deleted, so its number is taken.
    """
    gone = FileObject(id="file-gone", bytes=0, created_at=9, filename="a.jsonl",
                      purpose="batch")  # fmt: skip
    added = [*_LISTED_FILES[:2], gone, *_LISTED_FILES[2:]]
    contents = {f.id: c for f, (_, _, c) in zip(_LISTED_FILES, _LISTED, strict=True)}
    rows: list[tuple[str, tuple[object, ...]]] = []
    for f in added:
        content = contents.get(f.id, b"")
        if version == 2:
            rows.append((
                "INSERT INTO batchfsm_files (id, body, content) VALUES (?, ?, ?)",
                (f.id, json.dumps(f.to_dict()), content),
            ))  # fmt: skip
            continue
        rows.append((
            "INSERT INTO batchfsm_files (id, body) VALUES (?, ?)",
            (f.id, json.dumps(f.to_dict())),
        ))  # fmt: skip
        rows += [
            (
                "INSERT INTO batchfsm_file_chunks (file_id, n, data) VALUES (?, ?, ?)",
                (f.id, n, bytes(chunk)),
            )
            for n, chunk in chunks(content)
        ]
    rows.append(("DELETE FROM batchfsm_files WHERE id = ?", ("file-gone",)))
    return rows


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_files_of_an_older_database_are_listed_and_read_after_the_upgrade(
    request, tmp_path, dialect, version
):
    # Version 4 copies purpose and expiry out of each file's JSON into columns,
    # version 7 indexes the expiry; from version 2, version 3 moves the
    # content into chunks first.
    if dialect == "sqlite":
        url = str(tmp_path / f"v{version}.sqlite")
        _sqlite_at_version(url, version)
        conn = sqlite3.connect(url, isolation_level=None)
        for sql, params in _old_file_rows(version):
            conn.execute(sql, params)
        conn.close()
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        _postgres_at_version(url, version)
        with psycopg.connect(url, autocommit=True) as pg:
            for sql, params in _old_file_rows(version):
                pg.execute(sql.replace("?", "%s"), params)
    with open_store(url) as store:
        with store._db.transaction(write=False) as tx:
            assert store._db.version(tx) == LATEST
        page, more = store.files.page(None, 5, purpose="batch", now=20)
        assert ([f.id for f in page], more) == (["file-2", "file-0"], False)
        page, more = store.files.page("file-0", 1, order="asc", now=60)
        assert ([f.id for f in page], more) == (["file-1"], True)
        assert store.files.get("file-3") == _LISTED_FILES[3]
        for f, (_, _, content) in zip(_LISTED_FILES, _LISTED, strict=True):
            assert store.files.content(f.id) == content
            got, offset = b"", 0
            while piece := store.files.read(f.id, offset, 5_000):
                got, offset = got + piece, offset + len(piece)
            assert got == content
        big = _LISTED[2][2]
        at = CHUNK_BYTES - 3
        assert store.files.read("file-2", at, 6) == big[at : at + 6]
        # The older files are purged through the index of expiry times too.
        assert (store.files.purge(10, 9), store.files.get("file-3")) == (1, None)
        assert store.files.get("file-0") == _LISTED_FILES[0]
        store.files.add(
            attrs.evolve(_LISTED_FILES[0], id="file-new", bytes=len(big)), big
        )
        assert store.files.content("file-new") == big
        assert store.files.read("file-new", at, 6) == big[at : at + 6]
        page, _ = store.files.page(None, 1)
        assert [f.id for f in page] == ["file-new"]
    if dialect == "sqlite":  # the number of the deleted file is not reused
        conn = sqlite3.connect(url)
        numbers = conn.execute("SELECT id, seq FROM batchfsm_files").fetchall()
        assert dict(numbers)["file-new"] == len(_LISTED_FILES) + 2
        conn.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_version_4_database_moves_to_heartbeat_leases(request, tmp_path, dialect):
    # Version 4 leased each batch until its own lease_until; a lease taken then
    # has no heartbeat to last by, so it is free after the upgrade, and its
    # holder's late write is refused by the epoch.
    rows = [
        "INSERT INTO batchfsm_batches (id, status, body, work, due_at, epoch,"
        " lease_owner, lease_until) VALUES (?, 'validating', ?, '{}', 100, 3,"
        " 'old-holder', 1e12)",
        "INSERT INTO batchfsm_batches (id, status, body, work, due_at)"
        " VALUES (?, 'validating', ?, '{}', 100)",
    ]
    if dialect == "sqlite":
        url = str(tmp_path / "v4.sqlite")
        _sqlite_at_version(url, 4)
        conn = sqlite3.connect(url, isolation_level=None)
        for n, sql in enumerate(rows):
            conn.execute(sql, (f"batch_{n}", bf.dumps(_batch(f"batch_{n}"))))
        conn.close()
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        _postgres_at_version(url, 4)
        with psycopg.connect(url, autocommit=True) as pg:
            for n, sql in enumerate(rows):
                pg.execute(
                    sql.replace("?", "%s"),
                    (f"batch_{n}", bf.dumps(_batch(f"batch_{n}"))),
                )
    with open_store(url) as store:
        with store._db.transaction(write=False) as tx:
            assert store._db.version(tx) == LATEST
            owners = tx.all("SELECT owner FROM batchfsm_owners")
        assert [tuple(o) for o in owners] == [(store.owner,)]
        old = store.work("batch_0")
        assert old is not None and old.epoch == 3
        assert store.due(100, 10) == ["batch_0", "batch_1"]
        taken, fresh = store.work("batch_0"), store.work("batch_1")
        assert taken is not None and taken.epoch == 4  # fenced off
        assert fresh is not None and fresh.epoch == 0
        with (
            pytest.raises(Exception, match="lease_until"),  # the column is gone
            store._db.transaction() as tx,
        ):
            tx.one("SELECT lease_until FROM batchfsm_batches")


def test_a_newer_sqlite_database_is_refused_with_one_line_and_left_alone(tmp_path):
    path = tmp_path / "new.sqlite"
    _sqlite_at_version(path, LATEST)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaVersionError) as caught:
        open_store(f"sqlite:///{path}")
    assert str(caught.value) == (
        f"{path} has schema version {LATEST + 1}, newer than this batchfsm's "
        f"{LATEST}: upgrade batchfsm"
    )
    assert isinstance(caught.value, bf.BatchFSMError)
    assert path.read_bytes() == before


def test_a_newer_postgres_database_is_refused(postgres_url):
    with PostgresStore(postgres_url) as store:
        store.insert(_batch(), Work(due_at=1))
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE batchfsm_schema SET version = version + 1")
    with pytest.raises(SchemaVersionError, match="newer than this batchfsm's"):
        PostgresStore(postgres_url)


@pytest.fixture
def sqlite_connections(monkeypatch: pytest.MonkeyPatch) -> list[sqlite3.Connection]:
    """Every SQLite connection opened while the test runs: the real ones, recorded."""
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording)
    return opened


def is_open(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
        return False
    return True


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database, just text\n" * 200, "is not a usable SQLite"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "is not a usable SQLite"),
    ],
)
def test_a_corrupt_file_is_refused_with_one_line(
    tmp_path, content, message, sqlite_connections
):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=message) as caught:
        open_store(str(path))
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content
    # Refused, and no connection left open (Python 3.13 would warn at its
    # collection; every Python can ask the connection itself).
    assert sqlite_connections
    assert [conn for conn in sqlite_connections if is_open(conn)] == []


def test_another_applications_sqlite_database_is_left_alone(tmp_path):
    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(StoreError, match="another application"):
        SQLiteStore(path)
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["users"]
    conn.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://host/db", "unknown database scheme 'mysql'"),
        ("sqlite://relative.db", "sqlite:///PATH"),
        ("", "empty"),
        ("postgresql://nobody@127.0.0.1:1/none", "cannot connect to"),
    ],
)
def test_bad_db_values_are_one_clear_line(url, message):
    with pytest.raises(StoreError, match=message) as caught:
        open_store(url)
    assert "\n" not in str(caught.value)


def test_a_password_never_shows_in_messages():
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://me:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in str(caught.value) and "me:***@" in str(caught.value)


def test_a_directory_is_not_a_database(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        open_store(str(tmp_path))


# -- the clock -----------------------------------------------------------------------


def test_the_clock_is_anchored_in_the_database(open_db):
    first = AnchoredClock(open_db(), speed=1000)
    before = first.now()
    later = AnchoredClock(open_db(), speed=1000)  # a restart, or another process
    assert later.anchor == first.anchor
    assert later.now() >= before  # it continues; it does not start again from now
    with pytest.raises(StoreError, match="--speed 1000; start with that speed"):
        AnchoredClock(open_db(), speed=1)


_LINUX = pytest.mark.skipif(
    this_process() is None, reason="no /proc to tell a process's start time by"
)


class _Child:
    """A real process that says who it is (this_process()), then waits for stdin."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from batchfsm.emulator._leases import this_process;"
             " print(this_process(), flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.identity = self.process.stdout.readline().strip()

    def end(self, *, reap: bool = True) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        if reap:
            self.process.wait()
            self.process.stdout.close()
        else:  # ended, but its parent has not waited: a zombie
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)


def _other(identity: str, field: int, value: str) -> str:
    parts = identity.split(" ")
    parts[field] = value
    return " ".join(parts)


@_LINUX
def test_a_process_here_is_dead_once_gone_and_never_by_a_reused_pid():
    child = _Child()
    try:
        assert dead_here(child.identity) is False
        # The same pid started at another time: the pid was reused, ours is gone.
        assert dead_here(_other(child.identity, 4, "1")) is True
        # Another host, boot or /proc (PID namespace): not ours to judge.
        for field in (0, 1, 2):
            assert dead_here(_other(child.identity, field, "elsewhere")) is False
        for broken in ("", "a b c", _other(child.identity, 3, "x"), None):
            assert dead_here(broken) is False
    finally:
        child.end(reap=False)
    assert dead_here(child.identity) is True  # a zombie runs nothing
    child.process.wait()
    assert child.process.stdout is not None
    child.process.stdout.close()
    assert dead_here(child.identity) is True  # gone
    assert dead_here(_other(child.identity, 1, "another-boot")) is False


@_LINUX
def test_our_own_pid_started_at_another_time_is_a_dead_predecessor():
    # A server restarted as the same pid (PID 1 in a container, say): the
    # process that held the leases before it is gone, though its pid is ours.
    me = this_process()
    assert me is not None
    assert dead_here(me) is False
    assert dead_here(_other(me, 4, "1")) is True


@_LINUX
def test_leases_of_a_dead_process_on_this_machine_are_taken_at_once(tmp_path):
    path = tmp_path / "kept.sqlite"
    gone, running = _Child(), _Child()
    gone.end()
    holders = {
        "batch_dead": gone.identity,
        "batch_alive": running.identity,  # alive: not ours to take
        # A process elsewhere (another boot: another machine, or before a
        # reboot) whose pid is free here: its lease is waited out.
        "batch_elsewhere": _other(gone.identity, 1, "another-boot"),
        "batch_unknown": None,  # no /proc where it ran: waited out too
    }
    with SQLiteStore(path) as store:
        for batch_id in holders:
            store.insert(_batch(batch_id), Work(due_at=100))
    conn = sqlite3.connect(path, isolation_level=None)
    for batch_id, process in holders.items():
        conn.execute(
            "INSERT INTO batchfsm_owners (owner, process, heartbeat_at, lease_until)"
            " VALUES (?, ?, 0, 1e12)",
            (f"holder-of-{batch_id}", process),
        )
        conn.execute(
            "UPDATE batchfsm_batches SET lease_owner = ? WHERE id = ?",
            (f"holder-of-{batch_id}", batch_id),
        )
    conn.close()
    try:
        with SQLiteStore(path) as store:
            assert store.due(100, 10) == ["batch_dead"]
            work = store.work("batch_dead")
            assert work is not None and work.epoch == 1  # the dead holder is fenced off
    finally:
        running.end()


# -- the PostgreSQL fixture itself ---------------------------------------------------


@pytest.mark.parametrize("ci", [None, "true"])
def test_without_a_server_the_postgres_tests_skip_saying_why_but_not_under_ci(
    pytester, monkeypatch, tmp_path, ci
):
    monkeypatch.setenv("BATCHFSM_POSTGRES_BIN", str(tmp_path / "nothing here"))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile("def test_needs_it(postgres_url):\n    pass\n")
    result = pytester.runpytest("-p", "tests.postgres", "-rs")
    if ci is None:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(
            ["*PostgreSQL tests skipped: no PostgreSQL server binaries*"]
        )
    else:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*cannot run under CI: no PostgreSQL server*"])


def test_postgres_keeps_a_connection_per_live_thread_only(postgres_url):
    store = PostgresStore(postgres_url)
    used: list[tuple[Any, int]] = []  # each thread's connection and its backend

    def use() -> None:
        with store._db.transaction(write=False) as tx:
            backend = int(tx.one("SELECT pg_backend_pid()")[0])
        used.append((store._db._conns.current(), backend))  # type: ignore[attr-defined]

    def backends(pids: list[int]) -> set[int]:
        with store._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(?)", (pids,)
            )
        return {int(pid) for (pid,) in rows}

    try:
        use()  # this thread's
        for _ in range(7):  # threads that come and go, as a pool's idle ones do
            thread = threading.Thread(target=use)
            thread.start()
            thread.join()
        # Each ended thread's connection was closed when the next one connected;
        # this thread's and the last one's are open, and the only ones kept.
        conns = [conn for conn, _ in used]
        assert len({id(c) for c in conns}) == 8
        assert [c.closed for c in conns] == [False] + [True] * 6 + [False]
        assert len(store._db._conns) == 2  # type: ignore[attr-defined]
        # The server sees it too: the closed ones' backends end (closing is a
        # message; the backend's exit follows it, not waited for by close).
        pids = [pid for _, pid in used]
        deadline = time.monotonic() + 60  # a bound for a broken build, not a speed
        while backends(pids) != {pids[0], pids[-1]}:
            assert time.monotonic() < deadline, backends(pids)
            time.sleep(0.02)
    finally:
        store.close()


def test_a_delete_racing_a_purge_in_postgres_waits_its_turn_never_deadlocks(
    postgres_url,
):
    import psycopg

    store = PostgresStore(postgres_url)
    content = b"x" * (3 * CHUNK_BYTES)
    store.files.add(
        FileObject(id="file-1", bytes=len(content), created_at=1, filename="a",
                   purpose="batch", expires_at=5),
        content,
    )  # fmt: skip
    deleted: list[bool] = []
    try:
        with (
            psycopg.connect(postgres_url) as purge,
            psycopg.connect(postgres_url, autocommit=True) as watch,
        ):
            # A purge, paused after it took the file's row and before its chunks.
            purge.execute(
                "SELECT id FROM batchfsm_files WHERE expires_at <= 5"
                " ORDER BY expires_at, seq LIMIT 16 FOR UPDATE SKIP LOCKED"
            )
            user = threading.Thread(
                target=lambda: deleted.append(store.files.delete("file-1"))
            )
            user.start()
            for _ in range(3_000):  # until the delete waits (a bound, not a speed)
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                    " current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting == (1,):
                    break
                time.sleep(0.01)
            assert waiting == (1,)
            # Had the delete taken the chunks first, this would deadlock.
            purge.execute("DELETE FROM batchfsm_file_chunks WHERE file_id = 'file-1'")
            purge.execute("DELETE FROM batchfsm_files WHERE id = 'file-1'")
            purge.commit()
        user.join(timeout=30)
        assert deleted == [False]  # purged first: nothing left to delete
    finally:
        store.close()


def test_sqlite_reads_go_on_beside_a_write_in_another_thread(tmp_path):
    store = SQLiteStore(tmp_path / "batches.sqlite")
    store.insert(_batch(), Work(due_at=101))
    inside, leave = threading.Event(), threading.Event()

    def write_slowly() -> None:
        with store._db.transaction() as tx:
            tx.run("UPDATE batchfsm_batches SET due_at = 7")
            inside.set()
            leave.wait(timeout=30)  # a bound for a broken build, not a speed

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        assert inside.wait(timeout=30)
        # Read while the write is open: answered now, without what it wrote.
        work = store.work("batch_1")
        assert work is not None and work.due_at == 101
        assert not leave.is_set()
    finally:
        leave.set()
        writer.join()
    work = store.work("batch_1")
    assert work is not None and work.due_at == 7
    store.close()


def test_sqlite_keeps_a_connection_per_live_thread_only(tmp_path):
    store = SQLiteStore(tmp_path / "batches.sqlite")
    try:
        for _ in range(7):  # threads that come and go, as a pool's idle ones do
            thread = threading.Thread(target=store.get, args=("batch_x",))
            thread.start()
            thread.join()
        # This thread's and the last one's: each ended thread's was closed.
        assert len(store._db._conns) == 2  # type: ignore[attr-defined]
    finally:
        store.close()
