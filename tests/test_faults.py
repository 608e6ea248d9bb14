"""Real ``batchfsm serve`` processes meeting the faults of a real deployment.

PostgreSQL: the serve process's connections terminated, then the server
crashed and restarted (``pg_ctl restart -m immediate``) while batches run;
SQLite: a full disk (a small tmpfs this test mounts), a read-only database, a
database file deleted under the server. Judged from outside, as an operator
would: no 500 (503 with ``Retry-After`` and the API's error body while the
store is away), one log line each way and no traceback, every batch ends
``completed`` with each request exactly once, nothing acknowledged is lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .postgres import new_database, restart
from .test_durable import (
    SPEED,
    Server,
    _create,
    _ended,
    _free_port,
    _judge,
    _upload,
    servers,  # noqa: F401 - a fixture
)

#: Requests per batch: at SPEED, several seconds of work, so faults land mid-run.
REQUESTS = 150


class Watcher:
    """Polls a server's routes from a thread; keeps every answer's status.

    A 503 must carry ``Retry-After`` and the API's error body; anything else
    5xx fails the test at :meth:`stop`.
    """

    def __init__(self, server: Server, batch_ids: list[str]) -> None:
        self.server = server
        self.batch_ids = batch_ids
        self.statuses: list[int] = []
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx2

        with httpx2.Client(base_url=self.server.base, timeout=30) as http:
            while not self._stop.is_set():
                for path in ["/batches", *(f"/batches/{b}" for b in self.batch_ids)]:
                    answer = http.get(path)
                    self.statuses.append(answer.status_code)
                    if answer.status_code == 503:
                        error = answer.json()["error"]
                        if (
                            answer.headers.get("retry-after") != "1"
                            or error["type"] != "server_error"
                            or "store is unavailable" not in error["message"]
                            or set(error) != {"message", "type", "param", "code"}
                        ):
                            self.bad.append(f"{answer.headers} {answer.text}")
                    elif answer.status_code != 200:
                        self.bad.append(f"{answer.status_code} {answer.text}")
                self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        assert self.bad == [], self.bad[:3]


def _get(server: Server, path: str) -> Any:
    """GET through an outage: 503 is waited out, anything else but 200 fails."""
    import time

    deadline = time.monotonic() + 120  # not a speed check
    while True:
        answer = server.http.get(path)
        if answer.status_code == 200:
            return answer.json()
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)


def _run_to_the_end(server: Server, ids: list[str]) -> list[list[dict[str, Any]]]:
    import time

    traces: list[list[dict[str, Any]]] = [[] for _ in ids]
    deadline = time.monotonic() + 120  # not a speed check
    while not all(trace and _ended(trace[-1]) for trace in traces):
        for batch_id, trace in zip(ids, traces, strict=True):
            trace.append(_get(server, f"/batches/{batch_id}"))
        assert time.monotonic() < deadline, f"{traces}\n{server.output()}"
        time.sleep(0.02)
    return traces


def _terminate(url: str) -> int:
    """``pg_terminate_backend`` of every other connection to ``url``'s database."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _until_some_progress(server: Server, batch_id: str, beyond: int) -> int:
    import time

    deadline = time.monotonic() + 120  # not a speed check
    while True:
        batch = _get(server, f"/batches/{batch_id}")
        done = batch["request_counts"]["completed"]
        if done > beyond or _ended(batch):
            return int(done)
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.01)


def test_postgres_dropped_and_restarted_mid_run_loses_and_repeats_nothing(
    servers,  # noqa: F811 - the fixture
    postgres_server,
):
    url = new_database(postgres_server)
    server = servers(url, "--speed", SPEED)
    file_id = _upload(server, REQUESTS)
    created = [_create(server, file_id) for _ in range(3)]
    ids = [batch["id"] for batch in created]
    watcher = Watcher(server, ids)
    try:
        done = _until_some_progress(server, ids[0], 0)
        assert _terminate(url) >= 1  # the serve process's connections, cut
        done = _until_some_progress(server, ids[0], done)
        assert _terminate(url) >= 1
        done = _until_some_progress(server, ids[0], done)
        restart(url)  # a crash: every connection cut, recovery, back
        traces = _run_to_the_end(server, ids)
    finally:
        watcher.stop()
    for batch_created, trace in zip(created, traces, strict=True):
        assert trace[-1]["status"] == "completed", trace[-1]
        _judge(server, trace[-1], REQUESTS, [batch_created, *trace])
    log = server.output()
    assert 503 in watcher.statuses  # the outage was met, and answered so
    assert "Traceback" not in log
    assert 500 not in watcher.statuses
    # Told once as it went and once as it came back (connections cut twice
    # and a restart within seconds: one outage in the log, rate limited).
    assert 1 <= log.count("the store is unavailable") <= 3, log
    assert log.count("the store is unavailable") == log.count("available again")


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 32 MiB tmpfs mounted for the test (root only: CI runs as root)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test needs root under CI", pytrace=False)
        pytest.skip("mounting a small tmpfs needs root")
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="batchfsm-small-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        where.rmdir()
        message = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def _serve_refused(db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve", "--port", _free_port(), "--db", db],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _one_line(refused: subprocess.CompletedProcess[str], words: str) -> None:
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert words in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def _sqlite_server(servers, path: Path) -> Server:  # noqa: F811 - the fixture
    server: Server = servers(f"sqlite:///{path}", "--speed", SPEED)
    return server


def _upload_bytes(server: Server, size: int) -> Any:
    line = b'{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}'
    content = line + b" " * max(0, size - len(line) - 1) + b"\n"
    return server.http.post(
        "/files",
        files={"file": ("in.jsonl", content, "application/jsonl")},
        data={"purpose": "batch"},
    )


def _fill(server: Server, kept: dict[str, int]) -> Any:
    """Upload 1 MiB files until the disk is full (503); the refusal."""
    for _ in range(64):
        answer = _upload_bytes(server, 1 << 20)
        if answer.status_code != 200:
            assert answer.status_code == 503, answer.text
            return answer
        kept[answer.json()["id"]] = answer.json()["bytes"]
    raise AssertionError("64 MiB uploaded to a 32 MiB disk")


def test_a_full_disk_answers_503_frees_space_by_delete_and_loses_nothing(
    servers,  # noqa: F811 - the fixture
    small_disk,
):
    path = small_disk / "batches.sqlite"
    server = _sqlite_server(servers, path)
    kept: dict[str, int] = {}
    answer = _fill(server, kept)
    assert answer.headers["retry-after"] == "1"
    assert "is on a full disk" in answer.json()["error"]["message"]
    assert len(kept) >= 2
    # Reads go on; a delete passes (the reserve beside the database given
    # up for it) and frees space that uploads use again.
    victim = next(iter(kept))
    assert server.http.get(f"/files/{victim}").status_code == 200
    deleted = server.http.delete(f"/files/{victim}")
    assert deleted.status_code == 200, deleted.text
    del kept[victim]
    for _ in range(2):
        again = _upload_bytes(server, 256 * 1024)
        assert again.status_code == 200, again.text
        kept[again.json()["id"]] = again.json()["bytes"]
    assert server.http.delete(f"/files/{next(iter(kept))}").status_code == 200
    del kept[next(iter(kept))]
    # Full again, and again: a delete still passes each time (the space it
    # freed went back to the disk, and the reserve was made again from it
    # before new content could take it).
    for _ in range(3):
        _fill(server, kept)
        victim = next(iter(kept))
        deleted = server.http.delete(f"/files/{victim}")
        assert deleted.status_code == 200, deleted.text
        del kept[victim]
    log = server.output()
    assert "Traceback" not in log and "cannot rollback" not in log
    # One line as each outage starts and one as it ends (rate limited).
    assert 1 <= log.count("the store is unavailable") <= 4, log
    assert log.count("the store is unavailable") == log.count("available again")
    server.stop()
    # Nothing acknowledged is lost.
    server = _sqlite_server(servers, path)
    for file_id, size in kept.items():
        assert server.http.get(f"/files/{file_id}").json()["bytes"] == size
    server.stop()
    # A disk full at start: refused in one line.
    ballast = small_disk / "ballast"
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={ballast}", "bs=64k"],
        capture_output=True, check=False,
    )  # fmt: skip
    _one_line(_serve_refused(f"sqlite:///{path}"), "the disk is full")


def test_what_deletes_free_goes_back_to_the_disk_and_to_the_reserve(small_disk):
    from batchfsm.emulator import SQLiteStore
    from batchfsm.emulator._sqlite import RESERVE_BYTES
    from batchfsm.emulator._stores import FileObject

    path = small_disk / "batches.sqlite"
    reserve = Path(f"{path}-reserve")
    store = SQLiteStore(path)
    try:
        for n in range(6):
            store.files.add(
                FileObject(id=f"file-{n}", bytes=1 << 20, created_at=1,
                           filename="a.jsonl", purpose="batch"),
                bytes(1 << 20),
            )  # fmt: skip
        wal = Path(f"{path}-wal")
        held = path.stat().st_size + wal.stat().st_size
        reserve.unlink()  # as on a full disk: given up
        # The disk has room for part of the reserve only: that part is made.
        ballast = small_disk / "ballast"
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={ballast}", "bs=64k"],
            capture_output=True, check=False,
        )  # fmt: skip
        os.truncate(ballast, ballast.stat().st_size - (3 << 20))
        store._db.tend()
        assert 0 < reserve.stat().st_size < RESERVE_BYTES
        # Deletes free pages inside the database; they go back to the disk
        # (the file shrinks) and the reserve is made whole from them.
        for n in range(4):
            assert store.files.delete(f"file-{n}")
        store._db.tend()
        assert path.stat().st_size + wal.stat().st_size <= held - (3 << 20)
        assert reserve.stat().st_size == RESERVE_BYTES
        assert store.files.read("file-5", 0, 4) == bytes(4)
    finally:
        store.close()


def test_a_read_only_database_is_refused_at_start_in_one_line(tmp_path, small_disk):
    path = small_disk / "batches.sqlite"
    from batchfsm.emulator import SQLiteStore

    SQLiteStore(path).close()
    remounted = subprocess.run(
        ["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, check=False
    )
    assert remounted.returncode == 0, remounted.stderr
    _one_line(_serve_refused(f"sqlite:///{path}"), "is read-only")


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_under_the_server_takes_no_more_writes(
    servers,  # noqa: F811 - the fixture
    tmp_path,
    how,
):
    path = tmp_path / "batches.sqlite"
    server = _sqlite_server(servers, path)
    first = _upload_bytes(server, 100)
    assert first.status_code == 200
    if how == "deleted":
        path.unlink()
    else:
        other = tmp_path / "other.sqlite"
        from batchfsm.emulator import SQLiteStore

        SQLiteStore(other).close()
        other.replace(path)
    # Noticed by the server itself (its heartbeat, its worker), before any
    # client writes.
    import time

    deadline = time.monotonic() + 60  # not a speed check
    while f"was {how}" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.02)
    for _ in range(3):
        refused = _upload_bytes(server, 100)
        assert refused.status_code == 503, refused.text
        assert f"was {how}" in refused.json()["error"]["message"]
    log = server.output()
    assert log.count(f"was {how}") == 1, log  # one line, however many refusals
    assert "Traceback" not in log


def test_a_vanished_or_corrupt_database_is_refused_at_start_in_one_line(tmp_path):
    _one_line(
        _serve_refused(str(tmp_path / "gone" / "batches.sqlite")),
        f"the directory {tmp_path / 'gone'} does not exist",
    )
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    _one_line(_serve_refused(str(corrupt)), "is not a usable SQLite database")


# -- batches an older version set aside -------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'batches.sqlite'}"
    return new_database(request.getfixturevalue("postgres_server"))


#: The tables of the versions after 9, dropped to stand for a version-8 database.
_AFTER_9 = (
    "batchfsm_line_chunks",
    "batchfsm_storage",
    "batchfsm_delivery_attempts",
    "batchfsm_deliveries",
    "batchfsm_webhook_endpoints",
    "batchfsm_events",
)


def _back_to_version_8(url: str) -> None:
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        for table in _AFTER_9:
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA user_version = 8")
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            for table in _AFTER_9:
                pg.execute(f"DROP TABLE {table}")
            pg.execute("UPDATE batchfsm_schema SET version = 8")


@pytest.mark.parametrize("until", ["expiry", "never"])
def test_a_batch_an_older_version_set_aside_runs_again_after_the_upgrade(db_url, until):
    import attrs

    from batchfsm.emulator import Emulator, VirtualClock, make_input_file, open_store
    from batchfsm.emulator._migrations import NEVER

    clock = VirtualClock()

    def emulator() -> Emulator:
        store = open_store(db_url)
        return Emulator(clock=clock, store=store, files=store.files, ids=store.ids())

    emu = emulator()
    upload = emu.create_file(make_input_file(5), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
    clock.advance(3)
    counts = emu.retrieve_batch(batch.id).request_counts
    assert counts is not None and counts.completed == 2
    # As an older worker left a batch after a store error: due at its expiry
    # (where it would expire with 2 of 5 done) or never.
    store = emu.batches
    now, work = store.get(batch.id), store.work(batch.id)
    assert now is not None and work is not None and now.expires_at is not None
    aside = now.expires_at if until == "expiry" else NEVER
    store.write(
        now, attrs.evolve(work, due_at=aside), status=now.status, epoch=work.epoch
    )
    store.close()  # type: ignore[attr-defined]
    _back_to_version_8(db_url)
    emu = emulator()  # the upgrade
    clock.advance(60)
    done = emu.retrieve_batch(batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.completed == 5
    emu.batches.close()  # type: ignore[attr-defined]


# -- one clock for every process on a database ------------------------------------

#: ``python -c`` for a serve process whose host clock is 600 s ahead.
SKEWED = (
    "-c",
    "import sys, time; real = time.time; time.time = lambda: real() + 600; "
    "from batchfsm._cli import main; sys.exit(main(sys.argv[1:]))",
)


def test_processes_on_one_postgres_stamp_by_its_clock_whatever_their_own(
    servers,  # noqa: F811 - the fixture
    postgres_server,
):
    url = new_database(postgres_server)
    speed = "5"
    right = servers(url, "--speed", speed)
    ahead = servers(url, "--speed", speed, command=SKEWED)
    stamps = [
        _create(server, "file-none")["created_at"]
        for server in (right, ahead, right, ahead)
    ]
    # Created one after the other: stamped in that order, within the real
    # seconds the creates took (at speed 5), not 600 * 5 s apart. Two processes'
    # clocks agree within the error of measuring the offset (half a round trip
    # to the database, times the speed), so a stamp may round to the second
    # before its predecessor's.
    assert all(later >= earlier - 1 for earlier, later in pairwise(stamps)), stamps
    assert stamps[-1] - stamps[0] < 60, stamps
    listed = right.http.get("/batches").json()["data"]
    created = [batch["created_at"] for batch in listed]
    assert created == sorted(created, reverse=True)


def test_a_process_measures_the_databases_clock_against_its_own(
    postgres_server, monkeypatch
):
    import time

    from batchfsm.emulator import open_store

    store = open_store(new_database(postgres_server))
    try:
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 600)
        store._measure_clock()
        # The same host's clock, 600 s ahead: off by half a round trip at most.
        assert abs(store.clock_offset + 600) < 0.5, store.clock_offset
    finally:
        monkeypatch.undo()
        store.close()


# -- file expiry at extreme speeds ------------------------------------------------


def test_at_the_fastest_speed_a_batch_reads_the_input_its_client_just_uploaded(
    servers,  # noqa: F811 - the fixture
    tmp_path,
):
    import time

    server = servers(f"sqlite:///{tmp_path / 'batches.sqlite'}", "--speed", "1e9")
    for _ in range(2):
        file_id = _upload(server, 3)
        # 50 ms of real time: 50 million emulated seconds, past the file's
        # 30 days. The client named it right away as far as it can tell.
        time.sleep(0.05)
        created = _create(server, file_id)
        # Over the API it expired on time ...
        assert server.http.get(f"/files/{file_id}").status_code == 404
        # ... and its batch, created right after it, still read it.
        done = _get(server, f"/batches/{created['id']}")
        deadline = time.monotonic() + 60  # not a speed check
        while not _ended(done):
            assert time.monotonic() < deadline, done
            time.sleep(0.01)
            done = _get(server, f"/batches/{created['id']}")
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}


# -- the worker, in-process: a connection lost in the middle of a step ------------


def test_a_connection_lost_mid_step_is_retried_never_set_aside(postgres_server):
    import json

    from batchfsm.emulator import (
        Emulator,
        PostgresStore,
        StoreUnavailable,
        VirtualClock,
        default_handler,
        make_input_file,
    )

    url = new_database(postgres_server)
    store = PostgresStore(url)
    cut: list[str] = []

    def cutting(endpoint: str, body: Any, custom_id: str, now: int) -> Any:
        # The third request's answer is written over a connection the server
        # has just terminated (the worker's own, this thread's).
        if custom_id == "request-2" and not cut:
            cut.append(custom_id)
            pid = store._db._conns.current().info.backend_pid  # type: ignore[attr-defined]
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return default_handler(endpoint, body, custom_id, now)

    clock = VirtualClock()
    emu = Emulator(
        clock=clock, store=store, files=store.files, ids=store.ids(), handler=cutting
    )
    try:
        upload = emu.create_file(make_input_file(6), "in.jsonl", "batch")
        batch = emu.create_batch(
            input_file_id=upload.id, endpoint="/v1/chat/completions"
        )
        clock.advance(60)
        with pytest.raises(StoreUnavailable):
            emu.run()  # the step's write met the dropped connection
        assert cut == ["request-2"]
        emu.run()  # the store is back: the step runs again, from its last write
        done = emu.retrieve_batch(batch.id)
        assert done.status == "completed" and done.output_file_id is not None
        lines = emu.file_content(done.output_file_id).decode().splitlines()
        ids = sorted(json.loads(line)["custom_id"] for line in lines)
        assert ids == [f"request-{n}" for n in range(6)]
    finally:
        store.close()


# -- the one place that sorts a driver's errors --------------------------------------


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (psycopg.errors.AdminShutdown, True),  # 57P01, pg_terminate_backend
        (psycopg.errors.CrashShutdown, True),  # 57P02
        (psycopg.errors.CannotConnectNow, True),  # 57P03, starting up
        (psycopg.errors.SerializationFailure, True),  # 40001
        (psycopg.errors.DeadlockDetected, True),  # 40P01
        (psycopg.errors.LockNotAvailable, True),  # 55P03
        (psycopg.errors.DiskFull, True),  # 53100
        (psycopg.errors.ConnectionFailure, True),  # 08006
        (psycopg.OperationalError, True),  # a connection lost: no SQLSTATE
        (psycopg.errors.UniqueViolation, False),
        (psycopg.errors.SyntaxError, False),
        (psycopg.errors.ObjectNotInPrerequisiteState, False),  # 55000
        (psycopg.errors.InFailedSqlTransaction, False),
    ],
)
def test_postgres_errors_sorted(error, unavailable):
    from batchfsm.emulator._store_errors import postgres_unavailable

    assert postgres_unavailable(error("x")) is unavailable


@pytest.mark.parametrize(
    ("code", "unavailable"),
    [
        ("SQLITE_BUSY", True),
        ("SQLITE_LOCKED", True),
        ("SQLITE_FULL", True),
        ("SQLITE_IOERR_WRITE", True),
        ("SQLITE_READONLY", True),
        ("SQLITE_CORRUPT", True),
        ("SQLITE_CANTOPEN", True),
        ("SQLITE_CONSTRAINT_UNIQUE", False),
        ("SQLITE_ERROR", False),
        ("SQLITE_MISMATCH", False),
    ],
)
def test_sqlite_errors_sorted(code, unavailable):
    import sqlite3

    from batchfsm.emulator._store_errors import sqlite_unavailable

    error = sqlite3.OperationalError("x")
    error.sqlite_errorcode = getattr(sqlite3, code)
    assert sqlite_unavailable(error) is unavailable
