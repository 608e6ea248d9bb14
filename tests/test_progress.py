"""Durable progress: after ``kill -9`` only the requests in flight run again.

A real ``batchfsm serve`` process runs with a handler that logs each request
it is handed (its ``custom_id``, one ``write`` on an ``O_APPEND`` file: the
kernel holds it once the call returns, so a SIGKILL cannot lose it) before
answering it like the default handler. The tests kill the process mid-batch,
read what the database holds at that moment, restart ``serve`` and judge
from the log: a request is handed to the handler twice only if it was in
flight at the kill (handed over, its group of answers not yet written), and
every request in flight is handed over again (at least once); the result
files hold each ``custom_id`` exactly once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import batchfsm as bf
from batchfsm.emulator import (
    Emulator,
    Reply,
    RequestLine,
    SQLiteStore,
    _worker,
    make_input_file,
)
from batchfsm.emulator._stores import HeldWrite, ResultLines
from batchfsm.emulator._worker import REQUESTS_PER_WRITE, RESULT_BYTES_PER_WRITE
from benchmarks._serving import sql as _sql

from .fault_upstream import FaultUpstream, fault_upstream
from .test_durable import (
    PATIENCE,
    Server,
    _create,
    _ended,
    _judge,
    _poll,
    _upload,
    db,  # noqa: F401 - the fixture: SQLite and PostgreSQL
    servers,  # noqa: F401 - the fixture
)
from .test_gateway import chat_lines

#: ``serve`` as the command line runs it, its default handler wrapped so
#: that each request it is handed is logged first (``argv``: the log, the
#: seconds each answer takes, then ``serve``'s own arguments).
LOGGED_SERVE = """
import os, sys, time
from batchfsm._cli import main
from batchfsm.emulator import _engine, default_handler

log, seconds = sys.argv[1], float(sys.argv[2])
out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

def logged(endpoint, body, custom_id, now):
    os.write(out, f"{os.getpid()} {custom_id}\\n".encode())
    time.sleep(seconds)
    return default_handler(endpoint, body, custom_id, now)

_engine.Emulator.__init__.__kwdefaults__["handler"] = logged
sys.exit(main(sys.argv[3:]))
"""


def _logged(log: Path) -> list[tuple[int, str]]:
    """The requests handed to a handler so far: (process id, custom_id)."""
    if not log.exists():
        return []
    return [
        (int(pid), custom_id)
        for pid, custom_id in (line.split() for line in log.read_text().splitlines())
    ]


def _written(url: str, batch_id: str) -> set[str]:
    """The custom_ids whose result lines the database holds for ``batch_id``."""
    rows = _sql(
        url, "SELECT lines FROM batchfsm_results WHERE batch_id = ?", (batch_id,)
    )
    return {
        json.loads(line)["custom_id"]
        for (lines,) in rows
        for line in lines.splitlines()
    }


def _wait(until: Callable[[], bool], server: Server) -> None:
    deadline = time.monotonic() + PATIENCE  # a readiness wait, not a speed check
    while not until():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.01)


def test_after_kill_9_only_the_requests_in_flight_are_sent_again(
    servers: Callable[..., Server],  # noqa: F811 - the fixture
    db: str,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    # 1,000 emulated seconds a second, a request each emulated second, an
    # answer every 5 ms of real time: the worker is always behind its clock,
    # so each step runs as many requests as it may (the old worker wrote
    # them 256 at a time: a kill lost every answer of the step so far).
    requests, log = 400, tmp_path / "requests.log"
    command = ("-c", LOGGED_SERVE, str(log), "0.005")

    def start() -> Server:
        return servers(db, "--speed", "1000", command=command)

    first = start()
    created = _create(first, _upload(first, requests))
    trace: list[dict[str, Any]] = [created]
    _wait(lambda: len(_logged(log)) >= 200, first)
    first.kill()
    killed = first.process.pid
    sent = {custom_id for pid, custom_id in _logged(log) if pid == killed}
    written = _written(db, created["id"])
    in_flight = sent - written
    assert written <= sent and written, (len(written), len(sent))
    # What was in flight: one group of answers at most (and the one being made).
    assert len(in_flight) <= REQUESTS_PER_WRITE + 1, len(in_flight)
    again = start()
    done = _poll(again, created["id"], trace, _ended)
    assert done["status"] == "completed"
    _judge(again, done, requests, trace)
    times = Counter(custom_id for _, custom_id in _logged(log))
    assert set(times) == {f"request-{i}" for i in range(requests)}
    # Sent twice: exactly the requests in flight at the kill; none three times.
    assert {custom_id for custom_id, n in times.items() if n > 1} == in_flight
    assert max(times.values()) <= 2


class CountingStore(SQLiteStore):
    """The SQLite store, noting the writes of each transaction of the worker's."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.transactions: list[list[HeldWrite]] = []

    def write(self, batch: bf.Batch, work: Any, **changes: Any) -> bool:
        self.transactions.append([HeldWrite(batch, work, **changes)])
        return super().write(batch, work, **changes)

    def write_many(self, writes: Sequence[HeldWrite]) -> list[bool]:
        self.transactions.append(list(writes))
        return super().write_many(writes)

    def epoch_of(self, batch_id: str) -> int:
        """The stored epoch (an ended batch's too)."""
        with self._db.transaction(write=False) as tx:
            (epoch,) = tx.one(
                "SELECT epoch FROM batchfsm_batches WHERE id = ?", (batch_id,)
            )
        return int(epoch)


def _answers(writes: list[HeldWrite]) -> int:
    """The answers the writes store: their lines, and those filed by an end."""
    filed = sum(
        (content if isinstance(content, bytes) else content.tail).count(b"\n")
        for w in writes
        for _, content in w.files
        if isinstance(content, (bytes, ResultLines))
    )
    return filed + sum(len(w.output) + len(w.errors) for w in writes)


def test_the_steps_of_several_due_batches_commit_together() -> None:
    # 40 batches of 10 requests, all due at once: their moves and their
    # answers are held for one transaction per pass, not one each.
    store = CountingStore()
    emu = Emulator(store=store, seed=3)
    upload = emu.create_file(make_input_file(10), "in.jsonl", "batch")
    made = [
        emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
        for _ in range(40)
    ]
    store.transactions.clear()
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    for batch in made:
        done = emu.retrieve_batch(batch.id)
        assert done.status is bf.BatchStatus.COMPLETED
        assert done.request_counts is not None
        assert done.request_counts.completed == 10
        assert done.output_file_id is not None
        assert len(emu.file_content(done.output_file_id).splitlines()) == 10
    steps = sum(w.steps for t in store.transactions for w in t)
    # Start, the answers (split where a group fills), finalize, complete.
    assert 40 * 4 <= steps <= 40 * 4 + 40 * 10 // REQUESTS_PER_WRITE + 1
    # A batch's steps held for one transaction are one write (one statement).
    writes = sum(len(t) for t in store.transactions)
    assert writes <= 40 + 40 * 10 // REQUESTS_PER_WRITE + 1, writes
    assert len(store.transactions) <= writes / 4, len(store.transactions)
    # And never more answers in flight (held, uncommitted) than a group.
    assert max(_answers(t) for t in store.transactions) <= REQUESTS_PER_WRITE
    store.close()


def test_a_batch_whose_steps_are_all_due_moves_through_each_in_one_commit() -> None:
    # Validation, its requests, finalizing and completing all due at once:
    # each step made from the one before, every status and stamp in turn,
    # merged into one conditional write that moves the epoch on by as many
    # steps; one read, one commit, one statement.
    store = CountingStore()
    reads: list[str] = []
    read = store.batch_and_work

    def counted(batch_id: str, **kwargs: Any) -> Any:
        reads.append(batch_id)
        return read(batch_id, **kwargs)

    store.batch_and_work = counted  # type: ignore[method-assign]
    content_reads: list[int] = []
    read_content = store.files.read

    def content_counted(file_id: str, offset: int, size: int) -> bytes | None:
        content_reads.append(offset)
        return read_content(file_id, offset, size)

    store.files.read = content_counted  # type: ignore[method-assign]
    emu = Emulator(store=store, seed=5)
    upload = emu.create_file(make_input_file(10), "in.jsonl", "batch")
    created = emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
    store.transactions.clear()
    reads.clear()
    content_reads.clear()
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    done = emu.retrieve_batch(created.id)
    assert done.status is bf.BatchStatus.COMPLETED
    assert done.output_file_id is not None  # sized with the lines held with it
    assert len(emu.file_content(done.output_file_id).splitlines()) == 10
    [[write]] = store.transactions
    # Started, answered, finalizing, completed: four steps from epoch 0.
    assert (write.status.value, write.batch.status.value) == ("validating", "completed")
    assert (write.epoch, write.steps) == (0, 4)
    assert write.batch.in_progress_at is not None
    assert write.batch.finalizing_at is not None
    assert bf.check_trace([created, write.batch]) == []
    # Its lines went straight into its output file: none through the rows.
    assert write.output == () and write.errors == ()
    assert store.epoch_of(created.id) == 4  # as if each step had been written
    assert reads == []  # read by the claim that leased it: no read of its own
    # Validated, then run, in one pass: its (small) input is read once.
    assert content_reads == [0]
    store.close()


def test_an_async_run_stepped_on_from_held_writes_sends_each_request_once() -> None:
    # An async run asks the store whether its batch still runs: a start still
    # held (uncommitted) must not read as "no longer in progress", or the
    # requests dispatched meanwhile are dropped and sent again.
    sent: Counter[str] = Counter()

    async def counted(request: RequestLine) -> Reply:
        sent[request.custom_id] += 1
        await asyncio.sleep(0)
        return Reply(200, {"n": request.custom_id}, 1, 1)

    store = CountingStore()
    emu = Emulator(store=store, seed=6, handler=counted, concurrency=4)
    upload = emu.create_file(make_input_file(10), "in.jsonl", "batch")
    made = [
        emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
        for _ in range(3)
    ]
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    for batch in made:
        done = emu.retrieve_batch(batch.id)
        assert done.status is bf.BatchStatus.COMPLETED
    assert sent == {f"request-{i}": 3 for i in range(10)}
    store.close()


def test_a_big_batchs_answers_are_written_a_group_at_a_time() -> None:
    store = CountingStore()
    emu = Emulator(store=store, seed=4)
    upload = emu.create_file(make_input_file(1_000), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    done = emu.retrieve_batch(batch.id)
    assert done.status is bf.BatchStatus.COMPLETED
    sizes = [_answers(t) for t in store.transactions if _answers(t)]
    assert sum(sizes) == 1_000
    assert max(sizes) <= REQUESTS_PER_WRITE
    # The groups stored before the end, then the last one, filed by the end
    # itself: every line once, in order.
    assert done.output_file_id is not None
    lines = emu.file_content(done.output_file_id).splitlines()
    assert [json.loads(line)["custom_id"] for line in lines] == [
        f"request-{i}" for i in range(1_000)
    ]
    store.close()


def test_big_answers_held_for_a_pass_are_bounded_in_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Answers of about 1.5 MB each, from several batches due at once: what
    # is held for one transaction stays under the bound (and one answer),
    # however long they take to make (the bound in time is set aside).
    monkeypatch.setattr(_worker, "SECONDS_PER_WRITE", 3_600.0)
    store = CountingStore()
    emu = Emulator(store=store, seed=8)
    body = {"model": "text-embedding-3-small", "input": ["a"] * 100, "dimensions": 1536}
    content = b"".join(
        json.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings",
             "body": body}
        ).encode() + b"\n"
        for i in range(3)
    )  # fmt: skip
    upload = emu.create_file(content, "in.jsonl", "batch")
    made = [
        emu.create_batch(input_file_id=upload.id, endpoint="/v1/embeddings")
        for _ in range(4)
    ]
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    for batch in made:
        assert emu.retrieve_batch(batch.id).status is bf.BatchStatus.COMPLETED
    for writes in store.transactions:
        sizes = [len(line) for w in writes for line in (*w.output, *w.errors)]
        if sizes:
            assert sum(sizes) - max(sizes) < RESULT_BYTES_PER_WRITE, sizes
    store.close()


def _upload_lines(server: Server, data: bytes) -> str:
    answer = server.http.post(
        "/files",
        files={"file": ("in.jsonl", data, "application/jsonl")},
        data={"purpose": "batch"},
    )
    assert answer.status_code == 200, answer.text
    file_id: str = answer.json()["id"]
    return file_id


def _settled(upstream: FaultUpstream) -> list[str]:
    """The upstream's log once the requests a killed gateway had sent are in.

    Bytes a dead process wrote to its sockets are still read by the upstream
    after its death: the log is read once it stops growing.
    """
    seen = -1
    while seen != len(upstream.log):
        seen = len(upstream.log)
        time.sleep(0.3)
    return [content for content, _ in upstream.log]


def test_after_kill_9_a_gateway_sends_again_only_the_requests_in_flight(
    servers: Callable[..., Server],  # noqa: F811 - the fixture
    db: str,  # noqa: F811 - the fixture
) -> None:
    # serve --upstream (the async handler), 16 requests at a time, each
    # answered in 20 ms, every tenth in 300 ms and the 38th in 6 s (so
    # answers come out of order, and those past a slower one are written
    # before it): killed mid-batch, restarted, the upstream's own log shows
    # what was sent twice.
    requests, concurrency = 1_200, 16
    ids = [f"slower-{i}" if i % 10 == 0 else f"slow-{i}" for i in range(requests)]
    ids[37] = "slowest-37"
    with fault_upstream() as upstream:

        def start() -> Server:
            return servers(
                db, "--upstream", upstream.base,
                "--upstream-concurrency", str(concurrency),
            )  # fmt: skip

        first = start()
        created = _create(first, _upload_lines(first, chat_lines(ids)))
        trace: list[dict[str, Any]] = [created]
        _wait(lambda: len(upstream.log) >= 200, first)
        first.kill()
        sent = set(_settled(upstream))
        written = _written(db, created["id"])
        in_flight = sent - written
        assert written <= sent and len(written) >= 100, (len(written), len(sent))
        # In flight: those dispatched, and the group of answers being made.
        assert len(in_flight) <= concurrency + REQUESTS_PER_WRITE, len(in_flight)
        again = start()
        done = _poll(again, created["id"], trace, _ended)
        assert done["status"] == "completed", again.output()
        times = Counter(content for content, _ in upstream.log)
    assert set(times) == set(ids)
    # Sent twice: exactly the requests in flight at the kill; none three times.
    assert {custom_id for custom_id, n in times.items() if n > 1} == in_flight
    assert max(times.values()) <= 2
    _judge_ids(again, done, ids, trace)


def _judge_ids(
    server: Server, batch: dict[str, Any], ids: list[str], trace: list[dict[str, Any]]
) -> None:
    """Every custom_id exactly once in the result files; the trace legal."""
    assert bf.check_trace(trace) == [], trace
    counts = batch["request_counts"]
    assert counts["total"] == counts["completed"] + counts["failed"] == len(ids)
    seen: list[str] = []
    for key in ("output_file_id", "error_file_id"):
        if batch[key] is not None:
            content = server.http.get(f"/files/{batch[key]}/content")
            assert content.status_code == 200
            seen += [
                json.loads(line)["custom_id"] for line in content.text.splitlines()
            ]
    assert sorted(seen) == sorted(ids)
