"""The engine: scheduling by due time, work off the request path, failure
isolation, bounded answers and unique ids."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._nesting import MAX_DEPTH
from batchfsm.emulator import (
    ApiError,
    Emulator,
    MemoryBatchStore,
    MemoryFileStore,
    Reply,
    RequestLine,
    SQLiteStore,
    VirtualClock,
    _engine,
    make_input_file,
)
from batchfsm.emulator._chunks import LINES_PER_CHUNK
from batchfsm.emulator._handlers import _embeddings, default_handler
from batchfsm.emulator._pieces import SPLIT, dumps, pieces
from batchfsm.emulator._stores import RANDOM_BYTES_PER_DRAW, ResultKind
from batchfsm.emulator._validate import MAX_ERRORS
from batchfsm.emulator._worker import RESULT_BYTES_PER_WRITE

CHAT = "/v1/chat/completions"
S = bf.BatchStatus


def run(emu: Emulator, content: bytes, endpoint: str = CHAT) -> bf.Batch:
    upload = emu.create_file(content, "in.jsonl", "batch")
    return emu.create_batch(input_file_id=upload.id, endpoint=endpoint)


def finish(emu: Emulator, batch_id: str) -> bf.Batch:
    emu.clock.advance(86_400)  # type: ignore[attr-defined]
    done = emu.retrieve_batch(batch_id)
    assert done.status in bf.TERMINAL_STATUSES
    return done


def lines(emu: Emulator, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in emu.file_content(file_id).splitlines()]


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# -- the scheduler -------------------------------------------------------------------


class CountingStore(MemoryBatchStore):
    """The memory store, counting how often a batch's work is read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def work(self, batch_id: str) -> Any:
        self.reads += 1
        return super().work(batch_id)


def test_a_call_pays_only_for_work_that_is_due() -> None:
    store = CountingStore()
    emu = Emulator(store=store, validation_seconds=10)
    content = make_input_file(1)
    batches = [run(emu, content) for _ in range(300)]
    store.reads = 0
    emu.retrieve_batch(batches[0].id)
    emu.list_batches(limit=100)
    assert store.reads == 0  # 300 in flight, none due: nothing looked at
    emu.clock.advance(10)  # type: ignore[attr-defined]
    emu.retrieve_batch(batches[0].id)
    assert store.reads == 2 * 300  # each validation once (a snapshot: two reads)
    store.reads = 0
    emu.retrieve_batch(batches[0].id)
    assert store.reads == 0


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 7),
    st.lists(st.integers(0, 40), min_size=1, max_size=6),
)
def test_advancing_the_clock_runs_exactly_the_work_that_became_due(
    n: int, seconds: int, steps: list[int]
) -> None:
    emu = Emulator(seed=1, request_seconds=seconds, finalizing_seconds=1)
    batch = run(emu, make_input_file(n))
    elapsed = 0
    for step in steps:
        emu.clock.advance(step)  # type: ignore[attr-defined]
        elapsed += step
        now = emu.retrieve_batch(batch.id)
        # Validation is due after 1 s; request k after 1 + k * seconds.
        ran = 0 if elapsed < 1 else min(n, (elapsed - 1) // seconds)
        counts = now.request_counts
        assert (counts.completed if counts else 0) == ran
        if ran == n:
            # Finalizing is due one request's time after the last request.
            finalize = 1 + (n + 1) * seconds
            expected = (
                S.IN_PROGRESS
                if elapsed < finalize
                else S.FINALIZING
                if elapsed < finalize + 1
                else S.COMPLETED
            )
            assert now.status is expected


def test_the_same_calls_with_a_seed_are_byte_identical_across_batches() -> None:
    def session() -> list[bytes]:
        emu = Emulator(seed=3, request_seconds=2)
        ids = [run(emu, make_input_file(k + 1)).id for k in range(5)]
        emu.clock.advance(3)  # type: ignore[attr-defined]
        ids.append(emu.cancel_batch(ids[4]).id)
        done = [finish(emu, i) for i in ids]
        return [bf.dumps(b).encode() for b in done] + [
            emu.file_content(f)
            for b in done
            for f in (b.output_file_id, b.error_file_id)
            if f
        ]

    assert session() == session()


# -- work off the request path -------------------------------------------------------


class DueCountingStore(MemoryBatchStore):
    """The memory store, counting how often anyone asks what is due."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def due(self, at: int, limit: int) -> list[str]:
        self.looks += 1
        return super().due(at, limit)


def _until(done: Any) -> None:
    deadline = time.monotonic() + 60  # a hang guard, never a speed assertion
    while not done():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_with_a_background_worker_reads_leave_it_asleep() -> None:
    # A read does not wait for the worker, so waking it would make no answer
    # fresher; under serve it cost a thread switch per retrieve.
    store = DueCountingStore()
    emu = Emulator(store=store)
    emu.start(poll_seconds=3_600)
    try:
        _until(lambda: store.looks == 1)  # its first look, then it sleeps
        for _ in range(100):
            with pytest.raises(ApiError):
                emu.retrieve_batch("batch_missing")
            with pytest.raises(ApiError):
                emu.cancel_batch("batch_missing")
            emu.list_batches()
        time.sleep(0.1)  # room for a woken worker to look
        assert store.looks == 1
        run(emu, make_input_file(1))  # a write that adds work wakes it
        _until(lambda: store.looks > 1)
    finally:
        emu.stop()


def test_with_a_background_worker_calls_never_wait_for_a_batch() -> None:
    inside, release = threading.Event(), threading.Event()
    waited_out: list[bool] = []

    def slow(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
        inside.set()
        # Released by the test's own calls below; the timeout only keeps a
        # broken engine from hanging the suite.
        waited_out.append(not release.wait(timeout=60))
        return Reply(200, {"ok": True})

    emu = Emulator(handler=slow, seed=5)
    slow_batch = run(emu, make_input_file(1))
    emu.start()
    try:
        emu.clock.advance(2)  # type: ignore[attr-defined]
        assert inside.wait(timeout=60)
        # The worker is stuck inside the handler: every call still answers.
        assert emu.retrieve_batch(slow_batch.id).status is S.IN_PROGRESS
        other = run(emu, make_input_file(1))
        assert emu.retrieve_batch(other.id).status is S.VALIDATING
        assert emu.cancel_batch(other.id).status is S.CANCELLING
        assert emu.list_batches()["data"][0]["id"] == other.id
        release.set()
    finally:
        release.set()
        emu.stop()
    assert waited_out == [False]
    emu.run()
    assert finish(emu, slow_batch.id).status is S.COMPLETED


LINES = 10_000
#: Real seconds a request takes: the whole batch, ten seconds or more.
PACE = 0.002


def _paced(answered: list[str], pace: list[float]) -> Any:
    def paced(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
        time.sleep(pace[0])
        answered.append(custom_id)
        return Reply(200, {"ok": True})

    async def paced_async(request: RequestLine) -> Reply:
        await asyncio.sleep(pace[0])
        answered.append(request.custom_id)
        return Reply(200, {"ok": True})

    return paced, paced_async


@pytest.mark.parametrize(
    ("kind", "requests", "pace", "concurrency", "store"),
    [
        ("sync", LINES, PACE, 4, "memory"),
        ("async", LINES, PACE, 4, "memory"),
        ("sync", LINES, PACE, 4, "sqlite"),  # its steps chained in a pass
        # One async step (256 requests) alone takes ten seconds: the pass
        # stops sending at its deadline, and writes what was in flight; on
        # SQLite its steps chained, on PostgreSQL its lines in chunks (512).
        ("async", 1024, 0.3, 8, "memory"),
        ("async", 1024, 0.3, 8, "sqlite"),
        ("async", 1024, 0.3, 8, "postgres"),
    ],
)
def test_stop_returns_mid_batch_and_the_rest_runs_after(
    kind: str,
    requests: int,
    pace: float,
    concurrency: int,
    store: str,
    request: pytest.FixtureRequest,
) -> None:
    # A pass over due work is bounded (PASS_SECONDS): stop() waits for the
    # pass under way, not for the rest of a big batch.
    answered: list[str] = []
    paces = [pace]
    paced, paced_async = _paced(answered, paces)
    handler = paced if kind == "sync" else paced_async
    made = _store(store, request)
    emu = Emulator(
        handler=handler,
        request_seconds=0,
        concurrency=concurrency,
        seed=3,
        store=made,
    )
    try:
        big = run(emu, make_input_file(requests))
        emu.start()
        try:
            emu.clock.advance(2)  # type: ignore[attr-defined]
            _until(lambda: len(answered) >= 8)
        finally:
            emu.stop()
        assert len(answered) < requests // 4  # far from done when stop returned
        stored = emu.batches.get(big.id)
        assert stored is not None and stored.status is S.IN_PROGRESS
        paces[0] = 0
        emu.run()  # in-process: the rest
        done = emu.retrieve_batch(big.id)
        ids = [line["custom_id"] for line in lines(emu, done.output_file_id)]
    finally:
        if made is not None:
            made.close()
    assert done.status is S.COMPLETED
    assert done.request_counts == bf.BatchRequestCounts(
        total=requests, completed=requests, failed=0
    )
    assert len(set(ids)) == len(ids) == requests
    assert len(answered) == requests  # none sent twice, none left out


def _store(name: str, request: pytest.FixtureRequest) -> Any:
    if name == "sqlite":
        return SQLiteStore(":memory:")
    if name == "postgres":  # its big batch's lines in chunks (async handler)
        from batchfsm.emulator import PostgresStore

        return PostgresStore(request.getfixturevalue("postgres_url"))
    return None


@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_small_batch_runs_while_a_big_one_does(
    kind: str, store: str, request: pytest.FixtureRequest
) -> None:
    # Each pass reads the clock again: a batch that became due during a big
    # batch's run ends before the big one does, not after it. (SQLite: the
    # pass's writes held and committed together, its steps chained.)
    answered: list[str] = []
    paced, paced_async = _paced(answered, [PACE])
    handler = paced if kind == "sync" else paced_async
    emu = Emulator(
        handler=handler,
        request_seconds=0,
        concurrency=4,
        seed=4,
        store=(made := _store(store, request)),
    )
    big = run(emu, make_input_file(LINES))
    emu.start()
    try:
        emu.clock.advance(2)  # type: ignore[attr-defined]
        _until(lambda: len(answered) >= 100)
        small = run(emu, make_input_file(2))
        emu.clock.advance(2)  # type: ignore[attr-defined]  # its validation is due
        _until(lambda: emu.retrieve_batch(small.id).status in bf.TERMINAL_STATUSES)
        running = emu.batches.get(big.id)
        ended = emu.retrieve_batch(small.id)
    finally:
        emu.stop()
        if made is not None:
            made.close()
    assert ended.status is S.COMPLETED
    assert running is not None and running.status is S.IN_PROGRESS
    assert running.request_counts is not None
    assert running.request_counts.completed < LINES


def _completed(emu: Emulator, batch_id: str) -> int:
    counts = emu.retrieve_batch(batch_id).request_counts
    return 0 if counts is None else counts.completed


def test_a_big_batch_in_chunks_goes_on_while_other_work_fills_every_pass(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL a big batch's lines run in chunks after a pass's due
    # work: every pass gives them a turn, though the due work fills it (here
    # a batch run in order, 6.4 s of requests at least, over passes of
    # 0.1 s), not only once that work ran out.
    monkeypatch.setattr(_engine, "PASS_SECONDS", 0.1)
    paces = [0.05]
    _, paced_async = _paced([], paces)
    made = _store("postgres", request)
    emu = Emulator(
        handler=paced_async, request_seconds=0, concurrency=4, seed=6, store=made
    )
    try:
        big = run(emu, make_input_file(2 * LINES_PER_CHUNK))  # run in chunks
        other = run(emu, make_input_file(LINES_PER_CHUNK))  # run in order
        emu.start()
        try:
            emu.clock.advance(2)  # type: ignore[attr-defined]
            _until(
                lambda: (
                    _completed(emu, big.id) > 0
                    or _completed(emu, other.id) == LINES_PER_CHUNK
                )
            )
            big_ran = _completed(emu, big.id)
            other_ran = _completed(emu, other.id)  # read after: counts only grow
            split = made.line_chunks(big.id)
            paces[0] = 0
        finally:
            emu.stop()
    finally:
        made.close()
    assert len(split) == 2  # its answers came from its chunks
    assert big_ran > 0
    assert other_ran < LINES_PER_CHUNK  # the other work was due still


@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
def test_a_batch_draws_its_ids_from_the_os_a_block_at_a_time(
    store: str, request: pytest.FixtureRequest, os_draws: list[int]
) -> None:
    # Each draw from the OS hands the GIL back, and a worker that hands it
    # back and takes it again thousands of times a second starves the
    # server's event loop (a retrieve waited up to 100s of ms behind a big
    # batch). Two ids a request, 16 random bytes each: a block of
    # RANDOM_BYTES_PER_DRAW bytes serves 128 requests.
    requests = 1_000
    emu = Emulator(request_seconds=1, store=(made := _store(store, request)))
    try:
        done = finish(emu, run(emu, make_input_file(requests)).id)
        answered = lines(emu, done.output_file_id)
    finally:
        if made is not None:
            made.close()
    assert done.status is S.COMPLETED and len(answered) == requests
    assert len({a["id"] for a in answered}) == requests
    # (and a few draws of their own: a lease's owner, a store's names)
    assert len(os_draws) <= 4 + requests * 32 // RANDOM_BYTES_PER_DRAW


# -- failure isolation ---------------------------------------------------------------

DEEP = 960
#: Each endpoint's body, with the field it reads most nested 960 deep.
DEEP_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "DEEP"}],
    },
    "/v1/responses": {"model": "gpt-4o", "input": "DEEP"},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "DEEP"},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "DEEP"},
    "/v1/moderations": {"model": "omni-moderation-latest", "input": "DEEP"},
    "/v1/images/generations": {"model": "gpt-image-1", "prompt": "DEEP"},
    "/v1/images/edits": {"model": "gpt-image-1", "prompt": "DEEP"},
    "/v1/videos": {"model": "sora-2", "prompt": "DEEP"},
}


def deep_file(endpoint: str) -> bytes:
    """Two requests: "plain" (the field a string) and "deep" (nested 960 deep)."""
    text = {
        custom_id: json.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": endpoint,
                "body": DEEP_BODIES[endpoint],
            }
        )
        for custom_id in ("plain", "deep")
    }
    # Written as text: json.dumps itself would refuse to go this deep.
    deep = text["deep"].replace('"DEEP"', "[" * DEEP + '"x"' + "]" * DEEP)
    return (text["plain"].replace('"DEEP"', '"hello"') + "\n" + deep).encode()


#: The line nested 960 deep is read (within the JSON engine's depth) and run:
#: the default handler answers a body nested deeper than MAX_DEPTH with a 400,
#: on every Python.
DEEP_OUTCOMES = dict.fromkeys(DEEP_BODIES, 400)


@pytest.mark.parametrize("endpoint", sorted(DEEP_BODIES))
def test_a_line_nested_960_deep_fails_alone_at_every_endpoint(endpoint: str) -> None:
    emu = Emulator(seed=9)
    bystander = run(emu, make_input_file(3))
    batch = run(emu, deep_file(endpoint), endpoint)
    done = finish(emu, batch.id)
    assert done.status is S.COMPLETED
    assert done.request_counts is not None
    assert done.request_counts.total == 2
    # Read with a pattern: the deep answer may be too deep to parse here.
    outcome = {
        found[1]: int(found[2])
        for file_id in (done.output_file_id, done.error_file_id)
        if file_id
        for line in emu.file_content(file_id).splitlines()
        if (found := re.search(rb'"custom_id":"(\w+)".*?"status_code":(\d+)', line))
    }
    assert outcome == {b"plain": 200, b"deep": DEEP_OUTCOMES[endpoint]}
    # Nothing else noticed.
    assert finish(emu, bystander.id).request_counts == bf.BatchRequestCounts(
        total=3, completed=3, failed=0
    )
    assert run(emu, make_input_file(1)).status is S.VALIDATING


def _echo_deep(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
    return Reply(200, {"echo": nested(sys.getrecursionlimit() * 2)})


def _echo_past_the_limit(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
    # One level more than MAX_DEPTH: Python 3.11 and 3.13 could both write it.
    return Reply(200, {"echo": nested(MAX_DEPTH)})


def _raises(exc: BaseException) -> Any:
    def handler(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
        raise exc

    return handler


BROKEN_HANDLERS = {
    "answer too deep to write": _echo_deep,
    "answer deeper than the limit": _echo_past_the_limit,
    "recursion": _raises(RecursionError("maximum recursion depth exceeded")),
    "memory": _raises(MemoryError()),
    "not a reply": lambda *_: {"status_code": 200},
    "unserializable body": lambda *_: Reply(200, {"x": object()}),
    "not a number": lambda *_: Reply(200, {"x": float("nan")}),
    "odd tokens": lambda *_: Reply(200, {}, input_tokens=-1),
}


@pytest.mark.parametrize("name", sorted(BROKEN_HANDLERS))
def test_whatever_goes_wrong_with_one_request_is_its_500_line(name: str) -> None:
    broken = BROKEN_HANDLERS[name]

    def handler(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
        if custom_id == "request-1":
            return broken(endpoint, body, custom_id, now)  # type: ignore[no-any-return]
        return Reply(200, {"ok": custom_id})

    emu = Emulator(handler=handler, seed=2)
    done = finish(emu, run(emu, make_input_file(3)).id)
    assert done.status is S.COMPLETED
    assert done.request_counts == bf.BatchRequestCounts(total=3, completed=2, failed=1)
    [failed] = lines(emu, done.error_file_id)
    assert failed["custom_id"] == "request-1"
    assert failed["response"]["status_code"] == 500
    assert failed["response"]["body"]["error"]["type"] == "server_error"
    assert [x["custom_id"] for x in lines(emu, done.output_file_id)] == [
        "request-0",
        "request-2",
    ]


@pytest.mark.parametrize("endpoint", sorted(DEEP_BODIES))
def test_the_default_handler_s_depth_limit_is_explicit(endpoint: str) -> None:
    def body(depth: int) -> Any:  # the body, nested `depth` deep in all
        text = json.dumps(DEEP_BODIES[endpoint])
        before = text[: text.index('"DEEP"')]
        k = depth - sum(map(before.count, "[{")) + sum(map(before.count, "]}"))
        return orjson.loads(text.replace('"DEEP"', "[" * k + '"x"' + "]" * k))

    deep = default_handler(endpoint, body(MAX_DEPTH + 1), "r", 0)
    assert deep.status_code == 400
    assert deep.body["error"]["message"] == (
        f"The request body is nested deeper than {MAX_DEPTH} levels."
    )
    within = default_handler(endpoint, body(MAX_DEPTH), "r", 0)
    assert "nested deeper" not in str(within.body)


def test_an_answer_as_deep_as_the_limit_is_written_on_every_python() -> None:
    def handler(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
        return Reply(200, {"echo": nested(MAX_DEPTH - 1)})  # the body: MAX_DEPTH

    emu = Emulator(handler=handler, seed=2)
    done = finish(emu, run(emu, make_input_file(1)).id)
    assert done.request_counts == bf.BatchRequestCounts(total=1, completed=1, failed=0)
    [line] = emu.file_content(done.output_file_id or "").splitlines()
    assert line.count(b"[") == MAX_DEPTH - 1


class FaultyStore(MemoryBatchStore):
    """The memory store, failing to read one batch's results (a broken disk)."""

    broken: str | None = None

    def result_size(self, batch_id: str, kind: ResultKind) -> int:
        if batch_id == self.broken:
            raise OSError("the results of this batch cannot be read")
        return super().result_size(batch_id, kind)


def test_a_batch_whose_work_fails_waits_alone_and_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FaultyStore()
    emu = Emulator(store=store, seed=4)
    broken = run(emu, make_input_file(2))
    store.broken = broken.id
    others = [run(emu, make_input_file(2)) for _ in range(3)]
    for other in others:
        assert finish(emu, other.id).status is S.COMPLETED
    stuck = emu.retrieve_batch(broken.id)
    assert stuck.status is S.FINALIZING  # it never completed, nor broke anything
    assert bf.check(stuck) == []
    emu.clock.advance(10 * 86_400)  # type: ignore[attr-defined]
    assert emu.retrieve_batch(broken.id).status is S.FINALIZING
    assert emu.list_batches()["object"] == "list"
    failures = [r for r in caplog.records if "its work failed" in r.getMessage()]
    assert len(failures) == 2  # once when due, once when it was due to expire


class InterruptedStore(MemoryBatchStore):
    """The memory store, letting another worker write between a work and a batch read.

    As another process's worker would: its progress write lands after the
    engine read the work and before it reads the batch.
    """

    interrupt: Any = None

    def get(self, batch_id: str, *, project: str | None = None) -> bf.Batch | None:
        interrupt, self.interrupt = self.interrupt, None
        if interrupt is not None:
            interrupt()
        return super().get(batch_id, project=project)


def test_a_write_between_the_two_reads_of_a_step_is_read_again() -> None:
    store = InterruptedStore()
    emu = Emulator(store=store, seed=5, request_seconds=1)
    batch = run(emu, make_input_file(6))
    emu.clock.advance(2)  # type: ignore[attr-defined]
    batch = emu.retrieve_batch(batch.id)
    assert batch.status is S.IN_PROGRESS

    def other_worker() -> None:
        # Two more requests done elsewhere: counts and work move on together.
        work, read = store.work(batch.id), store.get(batch.id)
        assert work is not None and read is not None and read.request_counts
        done = attrs.evolve(work, done=work.done + 2, completed=work.completed + 2)
        counts = attrs.evolve(read.request_counts, completed=done.completed)
        after = bf.progress(read, request_counts=counts)
        assert store.write(
            after, done, status=read.status, epoch=work.epoch, output=["x", "y"]
        )

    store.interrupt = other_worker
    emu.clock.advance(1)  # type: ignore[attr-defined]
    # Without the second read, the step mixes the older work with the newer
    # batch: its counts go back, bf.progress refuses, and the batch is set
    # aside until it expires.
    moved = emu.retrieve_batch(batch.id)
    assert moved.status is S.IN_PROGRESS
    assert moved.request_counts is not None and moved.request_counts.completed > 2
    assert finish(emu, batch.id).status is S.COMPLETED


class DyingStore(MemoryBatchStore):
    """The memory store, dying at the write that ends a batch (as a kill -9 may)."""

    def write(self, batch: bf.Batch, work: Any, **changes: Any) -> bool:
        if work is None:
            raise OSError("the process died here")
        return super().write(batch, work, **changes)


class DyingSQLiteStore(SQLiteStore):
    """The SQLite store, dying at the write that ends a batch (alone or held)."""

    def write(self, batch: bf.Batch, work: Any, **changes: Any) -> bool:
        if work is None:
            raise OSError("the process died here")
        return super().write(batch, work, **changes)

    def write_many(self, writes: Any) -> list[bool]:
        if any(w.work is None for w in writes):
            raise OSError("the process died here")
        return super().write_many(writes)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_batch_whose_end_is_never_written_leaves_no_result_file(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = DyingStore() if kind == "memory" else DyingSQLiteStore(":memory:")
    if isinstance(store, DyingSQLiteStore):
        request.addfinalizer(store.close)
    emu = Emulator(store=store, seed=5)
    upload = emu.create_file(make_input_file(3), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint=CHAT)
    emu.clock.advance(60)  # type: ignore[attr-defined]
    # Never completed (on SQLite its steps were merged into the write that
    # died: it is as it was; in memory it got as far as finalizing).
    after = emu.retrieve_batch(batch.id)
    assert after.status is (S.FINALIZING if kind == "memory" else S.VALIDATING)
    assert after.output_file_id is None
    # Its result files were never written apart from the batch's end.
    assert [f.id for f in emu.files.list()] == [upload.id]


def test_the_files_of_an_emulator_are_its_batch_stores() -> None:
    store = MemoryBatchStore()
    assert Emulator(store=store).files is store.files
    files = MemoryFileStore()
    assert Emulator(files=files).batches.files is files
    with pytest.raises(ValueError, match=r"store\.files"):
        Emulator(store=store, files=MemoryFileStore())


def test_an_input_deleted_mid_run_fails_the_requests_left() -> None:
    emu = Emulator(seed=6, request_seconds=10)
    batch = run(emu, make_input_file(5))
    emu.clock.advance(21)  # type: ignore[attr-defined]
    assert emu.retrieve_batch(batch.id).request_counts == bf.BatchRequestCounts(
        total=5, completed=2, failed=0
    )
    emu.delete_file(batch.input_file_id)
    done = finish(emu, batch.id)
    assert done.status is S.COMPLETED
    assert done.request_counts == bf.BatchRequestCounts(total=5, completed=2, failed=3)
    assert bf.check(done) == []


# -- bounded answers -----------------------------------------------------------------


def test_a_megabyte_of_empty_objects_answers_a_small_batch() -> None:
    emu = Emulator(seed=8)
    batch = run(emu, b"{}\n" * 350_000)
    done = finish(emu, batch.id)
    assert done.status is S.FAILED
    assert done.errors is not None and done.errors.data is not None
    assert len(done.errors.data) == MAX_ERRORS
    assert done.errors.data[-1].code == "too_many_errors"
    assert all(e.line is not None for e in done.errors.data[:-1])
    assert len(bf.dumps(done)) < 32_000
    assert len(json.dumps(emu.list_batches(limit=1))) < 32_000


def test_an_embeddings_line_cannot_ask_for_unbounded_output() -> None:
    emu = Emulator(seed=8)
    asks = {
        "many": {"model": "text-embedding-3-large", "input": ["a"] * 8_000},
        "wide": {
            "model": "text-embedding-3-small",
            "input": "a",
            "dimensions": 3_072,
        },
        "ada": {"model": "text-embedding-ada-002", "input": "a", "dimensions": 8},
        "fine": {"model": "text-embedding-3-large", "input": "a", "dimensions": 3_072},
    }
    answers = {}
    for custom_id, body in asks.items():  # one model per file: a batch each
        line = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings"}
        content = json.dumps({**line, "body": body}).encode()
        done = finish(emu, run(emu, content, "/v1/embeddings").id)
        [answers[custom_id]] = lines(emu, done.error_file_id or done.output_file_id)
    statuses = {k: a["response"]["status_code"] for k, a in answers.items()}
    assert statuses == {"many": 400, "wide": 400, "ada": 400, "fine": 200}
    params = {
        k: a["response"]["body"].get("error", {}).get("param")
        for k, a in answers.items()
    }
    assert params == {
        "many": "input",
        "wide": "dimensions",
        "ada": None,
        "fine": None,
    }
    assert len(answers["fine"]["response"]["body"]["data"][0]["embedding"]) == 3_072
    assert len(json.dumps(answers["many"])) < 2_000


class WriteSizes(MemoryBatchStore):
    """The memory store, recording the sizes of the result lines of each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[int]] = []

    def write(self, batch: Any, work: Any, **kw: Any) -> bool:
        self.writes.append(
            [len(x) for x in (*kw.get("output", ()), *kw.get("errors", ()))]
        )
        return super().write(batch, work, **kw)


def test_big_answers_are_written_as_they_come_not_held_by_the_hundred() -> None:
    # Each answer is about 1.5 MB: holding 256 of them before a write, then
    # joining them, multiplied a batch's peak memory.
    store = WriteSizes()
    emu = Emulator(seed=8, store=store)
    body = {"model": "text-embedding-3-small", "input": ["a"] * 100, "dimensions": 1536}
    content = b"".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": body,
            }
        ).encode()
        + b"\n"
        for i in range(12)
    )
    done = finish(emu, run(emu, content, "/v1/embeddings").id)
    assert done.request_counts is not None and done.request_counts.completed == 12
    written = [sizes for sizes in store.writes if sizes]
    assert sum(len(sizes) for sizes in written) == 12
    assert all(sum(sizes[:-1]) < RESULT_BYTES_PER_WRITE for sizes in written)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(
    value=JSON,
    long=st.lists(JSON, min_size=1, max_size=3),
    length=st.sampled_from([SPLIT, SPLIT + 1, 3 * SPLIT + 7]),
)
@settings(max_examples=50, deadline=None)
def test_a_result_line_in_pieces_is_the_same_json(
    value: Any, long: list[Any], length: int
) -> None:
    body = {
        "data": (long * length)[:length],
        "value": value,
        "deep": {"x": [value] * length},
    }
    for whole in (value, body, {"response": {"body": body}}):
        assert dumps(whole) == json.dumps(whole, separators=(",", ":"), allow_nan=False)


def test_a_huge_answer_is_written_in_small_pieces() -> None:
    # One C call per piece: no piece may be the whole answer, or writing it
    # holds the GIL (and every other call) for seconds.
    reply = _embeddings(
        {"model": "text-embedding-3-large", "input": ["a"] * 2048, "dimensions": 3072},
        "r",
        0,
    )
    line = {"id": "batch_req_1", "response": {"status_code": 200, "body": reply.body}}
    assert max(len(piece) for piece in pieces(line)) < 40_000
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"response": {"body": {"data": [1.0] * SPLIT + [float("nan")]}}})


# -- ids -----------------------------------------------------------------------------


def test_ids_differ_across_two_emulators_started_alike_without_a_seed() -> None:
    def ids() -> list[str]:
        emu = Emulator(clock=VirtualClock(1_700_000_000))
        batch = run(emu, make_input_file(1))
        done = finish(emu, batch.id)
        assert done.output_file_id is not None
        return [batch.input_file_id, batch.id, done.output_file_id]

    first, second = ids(), ids()
    assert not set(first) & set(second)


def test_a_seed_makes_ids_reproducible() -> None:
    def ids() -> list[str]:
        emu = Emulator(seed=11)
        batch = run(emu, make_input_file(1))
        return [batch.input_file_id, batch.id]

    assert ids() == ids()


@pytest.mark.parametrize("speed", [float("inf"), float("nan"), 0, -1, 1e10])
def test_a_system_clock_refuses_a_speed_it_cannot_keep(speed: float) -> None:
    from batchfsm.emulator import SystemClock

    with pytest.raises(ValueError, match="speed must be a number in"):
        SystemClock(speed)


def test_a_handler_may_call_the_emulator() -> None:
    emu = Emulator(seed=12)
    seen: list[str] = []

    def handler(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
        seen.append(emu.list_batches()["data"][0]["status"])  # no deadlock
        return Reply(200, {"ok": True})

    emu.handler = handler
    done = finish(emu, run(emu, make_input_file(2)).id)
    assert done.status is S.COMPLETED
    assert seen == ["in_progress", "in_progress"]
