"""One big batch sent by several ``serve --upstream`` processes on one PostgreSQL.

Real processes and a real database: two gateways in front of the tests' own
upstream (:mod:`tests.fault_upstream`), which tells which process sent each
request by the connection it came on (the socket's owner, read from
``/proc``). The batch's lines are claimed in chunks by both; after a
``kill -9`` of either, the other finishes the batch, and only the lines the
dead one had in flight (sent, their answers not written) are sent again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

import batchfsm as bf
from batchfsm.emulator import (
    Emulator,
    PostgresStore,
    Reply,
    RequestLine,
    Work,
    _worker,
    fake_handler,
)
from batchfsm.emulator._chunks import LINES_PER_CHUNK, hold, run_chunk
from batchfsm.emulator._sql_chunks import LineChunk, Merge
from batchfsm.emulator._worker import REQUESTS_PER_WRITE

from .fault_upstream import FaultUpstream, fault_upstream
from .test_durable import PATIENCE, Server, _create, _ended, _holder, _pid, servers
from .test_gateway import CHAT, chat_lines
from .test_progress import _judge_ids, _settled, _upload_lines, _written

pytestmark = pytest.mark.postgres

__all__ = ["servers"]  # the fixture, used by name

#: Requests each gateway has in flight at once.
CONCURRENCY = 16


def _socket_owner(peer: Any, upstream_port: int, pids: set[int]) -> int | None:
    """Which of ``pids`` holds the loopback connection from ``peer`` to the upstream."""
    port = int(peer[1])
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        here, there = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if here == port and there == upstream_port:
            inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def _gateways(
    servers: Callable[..., Server], db: str, upstream: FaultUpstream, n: int = 2
) -> list[Server]:
    """``n`` gateways on ``db``; the upstream told which one sends each request."""
    options = ("--upstream", upstream.base, "--upstream-concurrency", str(CONCURRENCY))
    gateways = [servers(db, *options) for _ in range(n)]
    pids = {g.process.pid for g in gateways}
    port = int(upstream.base.rsplit(":", 1)[1])
    upstream.who = lambda peer: _socket_owner(peer, port, pids)
    return gateways


def _until_ended(
    server: Server, batch_id: str, trace: list[dict[str, Any]]
) -> dict[str, Any]:
    deadline = time.monotonic() + 4 * PATIENCE  # a hang guard, not a speed check
    while True:
        answer = server.http.get(f"/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        trace.append(answer.json())
        if _ended(trace[-1]):
            return trace[-1]
        assert time.monotonic() < deadline, f"stuck at {trace[-1]}\n{server.output()}"
        time.sleep(0.2)


def test_two_gateways_share_one_10000_line_batch(
    servers: Callable[..., Server], postgres_url: str
) -> None:
    ids = [f"r{i}" for i in range(10_000)]
    assert len(ids) > 4 * LINES_PER_CHUNK  # chunks enough for both
    with fault_upstream() as upstream:
        first, second = _gateways(servers, postgres_url, upstream)
        created = _create(first, _upload_lines(first, chat_lines(ids)))
        trace: list[dict[str, Any]] = [created]
        done = _until_ended(second, created["id"], trace)
        assert done["status"] == "completed", first.output() + second.output()
        sent = Counter(upstream.senders)
        times = Counter(content for content, _ in upstream.log)
    # Each process sent part; together every request exactly once.
    assert set(sent) == {first.process.pid, second.process.pid}, sent
    assert min(sent.values()) >= LINES_PER_CHUNK, sent
    assert sum(sent.values()) == len(ids)
    assert set(times) == set(ids) and set(times.values()) == {1}
    _judge_ids(second, done, ids, trace)


@pytest.mark.parametrize("victim", ["holder", "helper"])
def test_after_kill_9_of_one_gateway_the_other_finishes_the_batch(
    servers: Callable[..., Server], postgres_url: str, victim: str
) -> None:
    # Answers take 20 ms, so the batch is caught mid-run; the lease holder
    # (which alone moves the batch) or the other one is killed.
    ids = [f"slow-{i}" for i in range(4_000)]
    with fault_upstream() as upstream:
        gateways = _gateways(servers, postgres_url, upstream)
        created = _create(gateways[0], _upload_lines(gateways[0], chat_lines(ids)))
        trace: list[dict[str, Any]] = [created]
        deadline = time.monotonic() + PATIENCE  # a readiness wait
        while len(set(upstream.senders) - {None}) < 2 or len(upstream.log) < 800:
            assert time.monotonic() < deadline, upstream.senders[-5:]
            time.sleep(0.01)
        owner = _holder(postgres_url, created["id"])
        assert owner is not None
        by_pid = {g.process.pid: g for g in gateways}
        holder = by_pid[_pid(owner)]
        dead = (
            holder
            if victim == "holder"
            else next(g for g in gateways if g is not holder)
        )
        alive = next(g for g in gateways if g is not dead)
        # The survivor paused while the victim dies, so that what the
        # database holds at the kill is read before anyone sends again.
        alive.process.send_signal(signal.SIGSTOP)
        try:
            dead.kill()
            _settled(upstream)  # bytes the dead one wrote still arrive
            written = _written(postgres_url, created["id"])
            log = list(zip(upstream.log, upstream.senders, strict=True))
        finally:
            alive.process.send_signal(signal.SIGCONT)
        sent_by_dead = {content for (content, _), pid in log if pid == dead.process.pid}
        in_flight = sent_by_dead - written
        assert sent_by_dead and len(in_flight) <= CONCURRENCY + REQUESTS_PER_WRITE
        done = _until_ended(alive, created["id"], trace)
        assert done["status"] == "completed", alive.output()
        times = Counter(content for content, _ in upstream.log)
    assert set(times) == set(ids)
    # Sent twice: exactly the dead one's requests in flight; none three times.
    assert {content for content, n in times.items() if n > 1} == in_flight
    assert max(times.values()) <= 2
    _judge_ids(alive, done, ids, trace)


# -- the store's side, in-process on a real PostgreSQL ----------------------------


def _running(store: PostgresStore, lines: int = 20) -> tuple[bf.Batch, Work]:
    """A running batch of ``lines`` requests in ``store``, split in two chunks."""
    batch = bf.new_batch(
        id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=1
    )
    store.insert(batch, Work(due_at=2))
    counts = bf.BatchRequestCounts(total=lines, completed=0, failed=0)
    running = bf.advance(batch, "start", at=2, request_counts=counts)
    split = Work(due_at=running.expires_at or 0, chunks=2)
    half = lines // 2
    assert store.split(
        running, split, status=bf.BatchStatus.VALIDATING, epoch=0,
        chunks=[(0, 100, half), (100, 200, lines - half)],
    )  # fmt: skip
    return running, split


def test_a_split_batch_is_never_run_in_order_by_a_holder_unlike_its_splitter(
    postgres_url: str,
) -> None:
    # The holder of a batch another process split, with an output bound (so
    # it runs no chunks itself), waits for the chunks: a run in order would
    # send again the lines the chunks sent.
    store = PostgresStore(postgres_url)
    try:
        batch, work = _running(store)
        unlike = Emulator(store=store, max_output_bytes=1 << 20)
        assert hold(unlike, batch, work)  # held: due again at its expiry only
        again = store.work(batch.id)
        assert again is not None and again.due_at == batch.expires_at
        assert (again.chunks, again.done, again.offset) == (2, 0, 0)
    finally:
        store.close()


def _answered(n: int) -> Merge:
    def merge(batch: bf.Batch, work: Work) -> tuple[bf.Batch, Work]:
        grown = attrs.evolve(work, done=work.done + n, completed=work.completed + n)
        assert batch.request_counts is not None
        counts = attrs.evolve(batch.request_counts, completed=grown.completed)
        return bf.progress(batch, request_counts=counts), grown

    return merge


def test_a_chunk_is_claimed_by_one_store_and_a_dead_claim_is_fenced(
    postgres_url: str,
) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        _running(first)
        mine, theirs = first.claim_chunk(), second.claim_chunk()
        assert mine is not None and theirs is not None
        assert {mine.start, theirs.start} == {0, 100}
        # The first's chunk is held by a live store: the second gets its own
        # again (a run of it that stopped), never the other.
        again = second.claim_chunk()
        assert again is not None and again.start == theirs.start
        assert again.claim == theirs.claim + 1
        # The first store's heartbeat goes (its process died): its chunk is free.
        with first._db.transaction() as tx:
            tx.run("DELETE FROM batchfsm_owners WHERE owner = ?", (first.owner,))
        with second._db.transaction() as tx:  # the second's own is done
            tx.run("UPDATE batchfsm_line_chunks SET done = lines WHERE start = 100")
        taken = second.claim_chunk()
        assert taken is not None and taken.start == mine.start
        assert taken.claim == mine.claim + 1
        # The dead claim's late write is refused; the live one's is not.
        late = attrs.evolve(mine, done=3, pos=30)
        assert not first.write_chunk(late, _answered(3), ["late\n"])
        assert second.write_chunk(attrs.evolve(taken, done=4), _answered(4), ["x"])
        work = second.work("batch_1")
        assert work is not None and work.done == 4
        assert second.results("batch_1", "output") == b"x\n"
        assert [c.done for c in second.line_chunks("batch_1")] == [4, 10]
    finally:
        first.close()
        second.close()


def test_no_chunk_is_claimed_or_written_once_its_batch_stops_running(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    try:
        running, split = _running(store)
        chunk = store.claim_chunk()
        assert chunk is not None
        # Its input is kept while its chunks' requests are due.
        assert store.earliest_due() == running.in_progress_at
        cancelling = bf.advance(running, "cancel", at=3)
        assert store.write(
            cancelling, split, status=bf.BatchStatus.IN_PROGRESS, epoch=split.epoch + 1
        )
        assert not store.write_chunk(attrs.evolve(chunk, done=1), _answered(1))
        store._idle_until = 0.0
        assert store.claim_chunk() is None
        assert store.earliest_due() == split.due_at
        # The write that ends the batch takes its chunks with it.
        ended = bf.advance(cancelling, "mark_cancelled", at=4)
        assert store.write(
            ended, None, status=bf.BatchStatus.CANCELLING, epoch=split.epoch + 2
        )
        assert store.line_chunks("batch_1") == []
    finally:
        store.close()


def test_the_docs_say_the_chunks_size() -> None:
    page = (Path(__file__).parents[1] / "docs" / "gateway.rst").read_text()
    assert f"more than {LINES_PER_CHUNK} request lines" in page
    assert f"chunks** of {LINES_PER_CHUNK} lines" in page


@pytest.mark.parametrize("ending", ["cancel", "expiry"])
def test_a_cancel_or_the_expiry_stops_both_gateways_sending(
    servers: Callable[..., Server], postgres_url: str, ending: str
) -> None:
    # 16 at once each, 300 ms an answer: a 4,000-line batch takes half a
    # minute; the window (24 h at 5,000x: 17 s) ends first, or a cancel.
    ids = [f"slower-{i}" for i in range(4_000)]
    speed = ("--speed", "5000") if ending == "expiry" else ()
    with fault_upstream() as upstream:
        options = ("--upstream", upstream.base, "--upstream-concurrency", "16")
        gateways = [servers(postgres_url, *options, *speed) for _ in range(2)]
        first, second = gateways
        pids = {g.process.pid for g in gateways}
        port = int(upstream.base.rsplit(":", 1)[1])
        upstream.who = lambda peer: _socket_owner(peer, port, pids)
        created = _create(first, _upload_lines(first, chat_lines(ids)))
        trace: list[dict[str, Any]] = [created]
        deadline = time.monotonic() + PATIENCE  # a readiness wait
        while len(set(upstream.senders) - {None}) < 2:
            assert time.monotonic() < deadline, upstream.senders[-5:]
            time.sleep(0.01)
        if ending == "cancel":
            answer = second.http.post(f"/batches/{created['id']}/cancel")
            assert answer.status_code == 200, answer.text
            trace.append(answer.json())
        done = _until_ended(first, created["id"], trace)
        sent = len(_settled(upstream))
        time.sleep(1)  # no process sends anything more
        assert len(upstream.log) == sent
    assert done["status"] == {"cancel": "cancelled", "expiry": "expired"}[ending]
    assert 0 < sent < len(ids)
    assert set(Counter(c for c, _ in upstream.log).values()) == {1}
    # Every line once: answered, or never sent (batch_cancelled/expired).
    _judge_ids(first, done, ids, trace)
    code = {"cancel": "batch_cancelled", "expiry": "batch_expired"}[ending]
    errors = first.http.get(f"/files/{done['error_file_id']}/content").text
    unsent = [json.loads(line) for line in errors.splitlines()]
    assert {e["error"]["code"] for e in unsent} == {code}
    assert len(unsent) == len(ids) - done["request_counts"]["completed"]


def test_a_claim_taken_over_keeps_the_lines_run_ahead_of_its_first(
    postgres_url: str,
) -> None:
    # In-process, on a real PostgreSQL: a chunk whose first line hangs, so
    # the others are written ahead of it. Its claim is taken over mid-run
    # (its counter moved on, as another process's claim does); the next
    # claim sends none of the lines written ahead, keeps them so in its own
    # writes, and the batch ends with every line once.
    store = PostgresStore(postgres_url)
    sent: list[str] = []
    release = threading.Event()

    async def handler(request: RequestLine) -> Reply:
        sent.append(request.custom_id)
        if request.custom_id == "r0":
            while not release.is_set():
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(0.02)
        return Reply(200, {"object": "chat.completion"}, 1, 1)

    emu = Emulator(
        store=store, handler=handler, concurrency=4, request_seconds=0,
        validation_seconds=0, finalizing_seconds=0,
    )  # fmt: skip
    ids = [f"r{i}" for i in range(LINES_PER_CHUNK + 10)]
    threads: list[threading.Thread] = []
    try:
        data = chat_lines(ids)
        upload = emu.create_file(data, "in.jsonl", "batch")
        batch = emu.create_batch(input_file_id=upload.id, endpoint=CHAT)
        while not store.line_chunks(batch.id):  # validated, then split
            _worker.run_due(emu, int(emu.clock.now()))

        def first_chunk() -> LineChunk:
            return store.line_chunks(batch.id)[0]

        def claim() -> threading.Thread:
            thread = threading.Thread(target=run_chunk, args=(emu, emu.clock.now()))
            thread.start()
            threads.append(thread)
            return thread

        def until(ok: Callable[[], bool]) -> None:
            deadline = time.monotonic() + PATIENCE  # a hang guard
            while not ok():
                assert time.monotonic() < deadline
                time.sleep(0.005)

        one = claim()
        until(lambda: bool(first_chunk().ahead))
        with store._db.transaction() as tx:  # taken over
            tx.run("UPDATE batchfsm_line_chunks SET claim = claim + 1, owner = NULL")
        one.join()  # its next write refused: it stopped
        before = first_chunk()
        assert before.pos == before.start and before.done < before.lines
        two = claim()
        until(lambda: first_chunk().done > before.done)
        assert set(before.ahead) <= set(first_chunk().ahead)
        release.set()
        two.join()
        while emu.retrieve_batch(batch.id).status is not bf.BatchStatus.COMPLETED:
            emu.run()
        done = emu.retrieve_batch(batch.id)
        assert done.output_file_id is not None
        output = emu.file_content(done.output_file_id).decode().splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in output) == sorted(ids)
        # The lines written ahead at the takeover were sent once, never again.
        ends = itertools.accumulate(len(line) + 1 for line in data.split(b"\n"))
        ahead = {ids[i] for i, end in enumerate(ends) if end in before.ahead}
        assert len(ahead) == len(before.ahead)
        assert all(Counter(sent)[custom_id] == 1 for custom_id in ahead)
    finally:
        release.set()
        for thread in threads:
            thread.join()
        store.close()


def test_the_fast_lane_finishes_a_batch_in_chunks_at_its_first_retrieve(
    postgres_url: str,
) -> None:
    # One process runs every chunk of a run: a run does all the work due.
    store = PostgresStore(postgres_url)
    try:
        emu = Emulator(store=store, handler=fake_handler, finish_on_retrieve=True)
        ids = [f"r{i}" for i in range(2 * LINES_PER_CHUNK + 1)]
        upload = emu.create_file(chat_lines(ids), "in.jsonl", "batch")
        batch = emu.create_batch(input_file_id=upload.id, endpoint=CHAT)
        done = emu.retrieve_batch(batch.id)
        assert done.status is bf.BatchStatus.COMPLETED
        assert done.request_counts == bf.BatchRequestCounts(
            total=len(ids), completed=len(ids), failed=0
        )
    finally:
        store.close()
