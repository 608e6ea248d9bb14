"""Real ``batchfsm serve`` processes on SQLite and PostgreSQL: kill -9, restart, race.

Each test starts servers as the user would (``python -m batchfsm serve --db
…``), kills them with SIGKILL at chosen moments of a batch's life, and judges
only what the API answers: every object whose creation was answered 200 is
still there; the batch ends; each ``custom_id`` is in exactly one result file
exactly once; ``completed + failed == total``; and the snapshots polled across
every process and restart form a legal trace (no stamp rewritten, no status
going back), as :func:`batchfsm.check_trace` judges.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import batchfsm as bf
from batchfsm.emulator import make_input_file
from benchmarks._serving import sql as _sql

from .test_sql_stores import _other

#: Emulated seconds per real second: a request a millisecond or so.
SPEED = "40"
#: Short leases, so that a killed process's batches are taken over quickly.
LEASE = "1"
#: How long the tests wait for a batch before they give up (not a speed check).
PATIENCE = 120


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


class Server:
    """One ``batchfsm serve`` process (started by :func:`servers`)."""

    def __init__(
        self, db: str, *args: str, command: tuple[str, ...] = ("-m", "batchfsm")
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.log = Path(tempfile.mkstemp(prefix="batchfsm-serve-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *command, "serve", "--port", str(self.port),
                 "--db", db, "--lease-seconds", LEASE, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60  # a readiness wait, not a speed check
        while True:
            try:
                httpx2.get(f"{self.base}/batches", timeout=5)
                break
            except httpx2.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(self.output()) from None
                time.sleep(0.05)
        self.http = httpx2.Client(base_url=self.base, timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no clean-up, no lease given back, nothing flushed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.unlink(missing_ok=True)


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(db: str, *args: str, **options: Any) -> Server:
        started.append(Server(db, *args, **options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'batches.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


def _upload(server: Server, requests: int) -> str:
    answer = server.http.post(
        "/files",
        files={"file": ("in.jsonl", make_input_file(requests), "application/jsonl")},
        data={"purpose": "batch"},
    )
    assert answer.status_code == 200, answer.text
    file_id: str = answer.json()["id"]
    return file_id


def _create(server: Server, file_id: str) -> dict[str, Any]:
    answer = server.http.post(
        "/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert answer.status_code == 200, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _poll(
    server: Server,
    batch_id: str,
    trace: list[dict[str, Any]],
    until: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    deadline = time.monotonic() + PATIENCE
    while True:
        answer = server.http.get(f"/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        trace.append(answer.json())
        if until(trace[-1]):
            return trace[-1]
        assert time.monotonic() < deadline, f"stuck at {trace[-1]}\n{server.output()}"
        time.sleep(0.005)


def _ended(batch: dict[str, Any]) -> bool:
    return batch["status"] in {s.value for s in bf.TERMINAL_STATUSES}


def _judge(
    server: Server, batch: dict[str, Any], requests: int, trace: list[dict[str, Any]]
) -> None:
    """The ended batch's results: every request exactly once, the trace legal."""
    assert bf.check_trace(trace) == [], trace
    counts = batch["request_counts"]
    assert counts["total"] == requests
    assert counts["completed"] + counts["failed"] == requests
    seen: list[str] = []
    for key in ("output_file_id", "error_file_id"):
        if batch[key] is not None:
            content = server.http.get(f"/files/{batch[key]}/content")
            assert content.status_code == 200
            lines = content.text.splitlines()
            seen += [json.loads(line)["custom_id"] for line in lines]
    assert sorted(seen) == sorted(f"request-{i}" for i in range(requests))


MOMENTS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "right after create": lambda b: True,
    "while in progress": lambda b: (
        b["status"] == "in_progress" and b["request_counts"]["completed"] > 0
    ),
    "once completed": _ended,
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_restart_after_kill_9_carries_on(servers, db, moment):
    requests = 100
    first = servers(db, "--speed", SPEED)
    file_id = _upload(first, requests)
    created = _create(first, file_id)
    trace = [created]
    _poll(first, created["id"], trace, MOMENTS[moment])
    first.kill()
    again = servers(db, "--speed", SPEED)
    # What was answered 200 is there.
    assert again.http.get(f"/files/{file_id}").status_code == 200
    assert again.http.get(f"/files/{file_id}/content").content == make_input_file(
        requests
    )
    done = _poll(again, created["id"], trace, _ended)
    assert done["status"] == "completed"
    _judge(again, done, requests, trace)


def test_kill_9_at_random_moments_loses_nothing_and_runs_nothing_twice(servers, db):
    requests = 120
    rng = random.Random(14)
    server = servers(db, "--speed", SPEED)
    file_id = _upload(server, requests)
    created = _create(server, file_id)
    trace = [created]
    batch = created
    for _ in range(4):
        pause = time.monotonic() + rng.uniform(0.05, 0.6)
        while time.monotonic() < pause and not _ended(batch):
            batch = _poll(server, created["id"], trace, lambda b: True)
        server.kill()
        server = servers(db, "--speed", SPEED)
        batch = _poll(server, created["id"], trace, lambda b: True)
    done = _poll(server, created["id"], trace, _ended)
    assert done["status"] == "completed"
    _judge(server, done, requests, trace)


def test_the_emulated_clock_goes_on_across_a_restart(servers, db):
    server = servers(db, "--speed", "1000")
    before = _create(server, "file-none")["created_at"]
    server.kill()
    server = servers(db, "--speed", "1000")
    after = _create(server, "file-none")["created_at"]
    assert after >= before  # it continues; it does not start again from now
    refused = subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve", "--port", _free_port(), "--db", db,
         "--speed", "2"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "keeps an emulated clock running at --speed 1000" in refused.stderr


def test_the_banner_says_whether_state_is_kept(tmp_path):
    def banner(*args: str) -> list[str]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "batchfsm", "serve", "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            return [process.stdout.readline(), process.stdout.readline()]
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stdout:
                process.stdout.close()

    assert "ephemeral" in banner()[1]
    path = tmp_path / "kept.sqlite"
    assert banner("--db", str(path))[1] == (
        f"batchfsm emulator: batches and files kept in {path}\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "mysql://x/y"], "unknown database scheme 'mysql'"),
        (["--db", "x.sqlite", "--lease-seconds", "0"], "--lease-seconds must be"),
        (["--db", "x.sqlite", "--lease-seconds", "nan"], "--lease-seconds must be"),
        # A heartbeat every third of a microsecond: the process spent its
        # time renewing it, and two took each other's batches at every step.
        (["--db", "x.sqlite", "--lease-seconds", "1e-6"], "of at least 1, got"),
        (["--db", "x.sqlite", "--lease-seconds", "0.99"], "of at least 1, got"),
        # Without --db too: a wrong setting is refused even where unused.
        (["--lease-seconds", "abc"], "--lease-seconds must be"),
        (["--lease-seconds", "inf"], "--lease-seconds must be"),
        (["--lease-seconds", "-1"], "--lease-seconds must be"),
    ],
)
def test_bad_db_settings_are_one_line_and_exit_2(tmp_path, args, message):
    refused = subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve", "--port", _free_port(), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and message in refused.stderr


def test_serve_help_says_what_lease_seconds_does(capsys):
    from batchfsm._cli import main

    with pytest.raises(SystemExit) as ended:
        main(["serve", "--help"])
    assert ended.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--lease-seconds LEASE_SECONDS" in text
    assert "renews a heartbeat every third of this, by the database's clock" in text
    assert "this long after its last heartbeat" in text


def test_a_corrupt_or_newer_database_is_refused_by_serve(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"not a database at all\n" * 100)
    newer = tmp_path / "newer.sqlite"

    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    for path, message in ((corrupt, "not a usable SQLite"), (newer, "version 999")):
        refused = subprocess.run(
            [sys.executable, "-m", "batchfsm", "serve", "--port", _free_port(),
             "--db", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and message in refused.stderr


# -- several processes on one PostgreSQL ---------------------------------------------


def test_two_servers_race_cancels_against_the_worker_with_one_winner_each(
    servers, postgres_url
):
    # At --speed 50 a batch of 3 requests lives about 0.1 s: validation, three
    # requests and finalizing, 20 ms each.
    a = servers(postgres_url, "--speed", "50")
    b = servers(postgres_url, "--speed", "50")
    file_id = _upload(a, 3)
    rng = random.Random(4)
    outcomes = []
    for attempt in range(30):
        created = _create(rng.choice((a, b)), file_id)
        if attempt % 3:  # else at once: the cancel most likely wins
            time.sleep(rng.uniform(0, 0.4))  # anywhere in its life, or after
        answer = rng.choice((a, b)).http.post(f"/batches/{created['id']}/cancel")
        assert answer.status_code in (200, 409), answer.text
        trace = [created]
        ended = _poll(rng.choice((a, b)), created["id"], trace, _ended)
        assert bf.check_trace(trace) == []
        if ended["request_counts"]["total"]:  # past validation: each request once
            _judge(rng.choice((a, b)), ended, 3, trace)
        else:  # cancelled while validating: nothing ran
            assert ended["output_file_id"] is None is ended["error_file_id"]
        outcomes.append((answer.status_code, ended["status"]))
        # A cancel answered 200 ends cancelled; one refused with 409 never does.
        assert (answer.status_code == 200) == (ended["status"] == "cancelled"), (
            answer.text,
            ended,
        )
    # Both kinds of outcome happened, or the race was never run.
    assert {code for code, _ in outcomes} == {200, 409}, outcomes


def _holder(db: str, batch_id: str) -> str | None:
    """The owner (host:pid:random) whose lease the batch is under, if any."""
    rows = _sql(
        db, "SELECT lease_owner FROM batchfsm_batches WHERE id = ?", (batch_id,)
    )
    return rows[0][0] if rows else None


def _pid(owner: str) -> int:
    return int(owner.split(":")[1])


@pytest.mark.parametrize("where", ["this machine", "another machine"])
def test_a_killed_servers_batch_is_finished_by_the_other(servers, db, where):
    # On this machine the survivor sees at once that the holder no longer runs
    # (leases of an hour: the batch finishes only that way). On another machine
    # it cannot: it waits until the holder's heartbeat is a lease old.
    lease = "3600" if where == "this machine" else LEASE
    requests = 80
    a = servers(db, "--speed", SPEED, "--lease-seconds", lease)
    b = servers(db, "--speed", SPEED, "--lease-seconds", lease)
    by_pid = {a.process.pid: a, b.process.pid: b}
    file_id = _upload(a, requests)
    created = _create(b, file_id)
    trace = [created]
    _poll(a, created["id"], trace, MOMENTS["while in progress"])
    owner = _holder(db, created["id"])
    assert owner is not None
    holder = by_pid[_pid(owner)]
    other = b if holder is a else a
    if where == "another machine":
        # Recorded as another boot's process: as a process elsewhere would be.
        [(process,)] = _sql(
            db, "SELECT process FROM batchfsm_owners WHERE owner = ?", (owner,)
        )
        _sql(
            db,
            "UPDATE batchfsm_owners SET process = ? WHERE owner = ?",
            (_other(process, 1, "another-machine"), owner),
        )
    holder.kill()
    done = _poll(other, created["id"], trace, _ended)
    assert done["status"] == "completed"
    _judge(other, done, requests, trace)
    log = other.output()
    assert f"took over 1 batch(es) from {owner}" in log
    assert (f"{owner} no longer runs" in log) is (where == "this machine")


#: A process that runs one batch's work through the emulator on ``--db``, with
#: a handler that marks its answers and stops at the first request until told
#: to go on (the file GO exists): a long handler call. It prints the batch's id,
#: then "inside" once in that call, and "ended" when the batch has ended.
_SLOW_OWNER = """
import os, sys, time
from batchfsm.emulator import (
    AnchoredClock, Emulator, Reply, default_handler, make_input_file, open_store,
)
db, lease, speed, requests, go, calls = sys.argv[1:]

def handler(endpoint, body, custom_id, now):
    with open(calls, "a") as out:
        out.write(custom_id + "\\n")
    if custom_id == "request-0":
        print("inside", flush=True)
        while not os.path.exists(go):
            time.sleep(0.01)
    reply = default_handler(endpoint, body, custom_id, now)
    return Reply(reply.status_code, {**reply.body, "answered_by": "slow"},
                 reply.input_tokens, reply.output_tokens)

store = open_store(db, lease_seconds=float(lease))
emu = Emulator(clock=AnchoredClock(store, float(speed)), store=store,
               files=store.files, ids=store.ids(), handler=handler)
upload = emu.create_file(make_input_file(int(requests)), "in.jsonl", "batch")
batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
print(batch.id, flush=True)
emu.start()
while emu.retrieve_batch(batch.id).status.value not in (
    "completed", "failed", "expired", "cancelled"
):
    time.sleep(0.01)
emu.stop()
store.close()
print("ended", flush=True)
"""


@pytest.mark.parametrize("owner_is", ["slow", "stalled"])
def test_a_slow_holder_keeps_its_batch_and_a_stalled_ones_late_write_is_refused(
    servers, db, tmp_path, owner_is
):
    # One process holds the batch inside a handler call. Slow: its heartbeat
    # goes on meanwhile, so another serve process on the database leaves the
    # batch alone however long the call takes, and every answer is the slow
    # owner's. Stalled (SIGSTOP: paused, as a process in a long GC pause or cut
    # off from the database is): once its lease ran out the serve process takes
    # the batch over and finishes it; the stalled one, woken, finishes its call
    # and its write is refused (the epoch moved on): no answer of it is kept.
    requests, go, calls = 20, tmp_path / "go", tmp_path / "calls"
    owner = subprocess.Popen(
        [sys.executable, "-c", _SLOW_OWNER, db, LEASE, SPEED, str(requests),
         str(go), str(calls)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        batch_id = owner.stdout.readline().strip()
        assert owner.stdout.readline() == "inside\n"
        [(holder, until)] = _sql(
            db,
            "SELECT owner, lease_until FROM batchfsm_owners"
            " WHERE owner = (SELECT lease_owner FROM batchfsm_batches WHERE id = ?)",
            (batch_id,),
        )
        assert _pid(holder) == owner.pid
        if owner_is == "stalled":
            owner.send_signal(signal.SIGSTOP)
        other = servers(db, "--speed", SPEED)
        trace = [other.http.get(f"/batches/{batch_id}").json()]
        if owner_is == "slow":
            # Until the other's heartbeat, and so its worker, is past the moment
            # the holder's lease would have run out unrenewed, and a lease more.
            deadline = time.monotonic() + PATIENCE
            while not _sql(
                db,
                "SELECT 1 FROM batchfsm_owners WHERE owner <> ? AND heartbeat_at > ?",
                (holder, float(until) + float(LEASE)),
            ):
                assert time.monotonic() < deadline, other.output()
                time.sleep(0.05)
            assert _holder(db, batch_id) == holder  # not taken over
            go.touch()
        done = _poll(other, batch_id, trace, _ended)
        if owner_is == "stalled":
            owner.send_signal(signal.SIGCONT)
            go.touch()
        assert owner.stdout.readline() == "ended\n"
        assert owner.wait(timeout=PATIENCE) == 0
        # The woken owner's late write changed nothing.
        trace.append(other.http.get(f"/batches/{batch_id}").json())
        assert trace[-1] == done
    finally:
        if owner.poll() is None:
            owner.send_signal(signal.SIGCONT)
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    assert done["status"] == "completed"
    _judge(other, done, requests, trace)
    output = other.http.get(f"/files/{done['output_file_id']}/content").text
    answered_by = {json.loads(line)["response"]["body"].get("answered_by")
                   for line in output.splitlines()}  # fmt: skip
    handled = calls.read_text().split()
    log = other.output()
    if owner_is == "slow":
        assert answered_by == {"slow"}
        assert sorted(handled) == sorted(f"request-{i}" for i in range(requests))
        assert "took over" not in log
    else:
        assert answered_by == {None}  # every answer the serve process's own
        assert handled[0] == "request-0" and len(handled) == len(set(handled))
        assert f"took over 1 batch(es) from {holder}" in log


def test_a_restart_on_the_same_machine_takes_a_dead_processs_batches_at_once(
    servers, tmp_path
):
    # Leases of an hour: the batch finishes only if the restarted server sees
    # that their holder no longer runs, rather than waiting for them to run out.
    db, requests = str(tmp_path / "kept.sqlite"), 40
    first = servers(db, "--speed", SPEED, "--lease-seconds", "3600")
    file_id = _upload(first, requests)
    created = _create(first, file_id)
    trace = [created]
    _poll(first, created["id"], trace, MOMENTS["while in progress"])
    first.kill()
    again = servers(db, "--speed", SPEED, "--lease-seconds", "3600")
    done = _poll(again, created["id"], trace, _ended)
    _judge(again, done, requests, trace)
