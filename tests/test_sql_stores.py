"""The SQL stores, each against a real database: SQLite files and PostgreSQL."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

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
    SchemaVersionError,
    SQLiteStore,
    SQLStore,
    StoreError,
    Work,
    open_store,
)
from batchfsm.emulator._database import Tx
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


def test_a_stale_holders_late_write_is_refused_by_the_epoch(open_db):
    stalled, other = open_db(lease_seconds=0.2), open_db()
    batch = bf.advance(_batch(), "start", at=101)
    stalled.insert(batch, Work(due_at=102))
    assert stalled.due(102, 1) == [batch.id]
    read = stalled.work(batch.id)
    assert read is not None
    # The holder stalls; once its lease ran out the other store takes over.
    deadline = time.monotonic() + 30  # waits for the lease, asserts no speed
    while not other.due(102, 1):
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.05)
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


#: Files as a version 2 database kept them (content in one value): an empty
#: one, one of a few bytes, one of several chunks ending mid-chunk.
_OLD_FILES = {
    "file-empty": b"",
    "file-small": b'{"custom_id": "r1"}\n',
    "file-big": bytes(range(256)) * (CHUNK_BYTES // 256 * 3) + b"tail",
}


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
    # Built by version 2's own statements, with rows as version 2 wrote them.
    body = '{"id": "x"}'
    if kind == "sqlite":
        path = tmp_path / "v2.sqlite"
        _sqlite_at_version(path, 2)
        conn = sqlite3.connect(path, isolation_level=None)
        for file_id, content in _OLD_FILES.items():
            conn.execute(
                "INSERT INTO batchfsm_files (id, body, content) VALUES (?, ?, ?)",
                (file_id, body.replace("x", file_id), content),
            )
        conn.close()
        url = str(path)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as pg:
            for migration in MIGRATIONS[:2]:
                for statement in migration.postgres:
                    pg.execute(statement)
            pg.execute("CREATE TABLE batchfsm_schema (version integer NOT NULL)")
            pg.execute("INSERT INTO batchfsm_schema VALUES (2)")
            for file_id, content in _OLD_FILES.items():
                pg.execute(
                    "INSERT INTO batchfsm_files (id, body, content)"
                    " VALUES (%s, %s, %s)",
                    (file_id, body.replace("x", file_id), content),
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

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in MIGRATIONS[0].postgres:
            conn.execute(statement)
        conn.execute("CREATE TABLE batchfsm_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO batchfsm_schema VALUES (1)")
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
    # Version 4 copies purpose and expiry out of each file's JSON into columns;
    # from version 2, version 3 moves the content into chunks first.
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
        with psycopg.connect(url, autocommit=True) as pg:
            for migration in MIGRATIONS[:version]:
                for statement in migration.postgres:
                    pg.execute(statement)
                if migration.step is not None:
                    migration.step(Tx(pg, postgres=True))
            pg.execute("CREATE TABLE batchfsm_schema (version integer NOT NULL)")
            pg.execute("INSERT INTO batchfsm_schema VALUES (%s)", (version,))
            for sql, params in _old_file_rows(version):
                pg.execute(sql.replace("?", "%s"), params)
    with open_store(url) as store:
        with store._db.transaction(write=False) as tx:
            assert store._db.version(tx) == LATEST == 4
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
        store.files.add(attrs.evolve(_LISTED_FILES[0], id="file-new"), big)
        assert store.files.content("file-new") == big
        assert store.files.read("file-new", at, 6) == big[at : at + 6]
        page, _ = store.files.page(None, 1)
        assert [f.id for f in page] == ["file-new"]
    if dialect == "sqlite":  # the number of the deleted file is not reused
        conn = sqlite3.connect(url)
        numbers = conn.execute("SELECT id, seq FROM batchfsm_files").fetchall()
        assert dict(numbers)["file-new"] == len(_LISTED_FILES) + 2
        conn.close()


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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database, just text\n" * 200, "is not a usable SQLite"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "is not a usable SQLite"),
    ],
)
def test_a_corrupt_file_is_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=message) as caught:
        SQLiteStore(path)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content


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


def test_leases_of_a_dead_process_on_this_machine_are_taken_at_once(tmp_path):
    path = tmp_path / "kept.sqlite"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with SQLiteStore(path) as store:
        store.insert(_batch("batch_dead"), Work(due_at=100))
        store.insert(_batch("batch_alive"), Work(due_at=100))
    conn = sqlite3.connect(path, isolation_level=None)
    here = socket.gethostname()
    for batch_id, owner in (
        ("batch_dead", f"{here}:{dead.pid}:0000"),
        ("batch_alive", f"{here}:{os.getppid()}:0000"),  # alive: not ours to take
    ):
        conn.execute(
            "UPDATE batchfsm_batches SET lease_owner = ?, lease_until = 1e12"
            " WHERE id = ?",
            (owner, batch_id),
        )
    conn.close()
    with SQLiteStore(path) as store:
        assert store.due(100, 10) == ["batch_dead"]
        work = store.work("batch_dead")
        assert work is not None and work.epoch == 1  # the dead holder is fenced off


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

    def connections() -> int:
        with store._db.transaction(write=False) as tx:
            count: int = tx.one(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database()"
            )[0]
        return count

    try:
        before = connections()
        for _ in range(6):  # threads that come and go, as a pool's idle ones do
            thread = threading.Thread(target=store.get, args=("batch_x",))
            thread.start()
            thread.join()
        # Each ended thread's connection is closed once another thread connects.
        thread = threading.Thread(target=store.get, args=("batch_x",))
        thread.start()
        thread.join()
        assert connections() == before + 1
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
