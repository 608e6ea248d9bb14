"""A cancel racing the worker's progress write, shown deterministically.

``Emulator.cancel_batch`` reads the batch's work and the batch, then writes the
``cancelling`` batch conditionally on status and epoch. The worker's progress
writes (requests run, batch still ``in_progress``) keep the status, so only
the epoch, moved on by every write, tells the cancel that what it read is
stale: it must be refused, read again and cancel the batch as it now is, or
the counts go back and the requests the progress recorded are later also
written as ``batch_cancelled``. Under ``serve`` the worker is a thread of its
own and the cancel runs in a request's thread, so nothing orders the two; here
the worker runs at exactly one point (an injected pause, as STYLE asks): after
either of the cancel's two reads, on each store.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import batchfsm as bf
from batchfsm.emulator import (
    Emulator,
    MemoryBatchStore,
    PostgresStore,
    SQLiteStore,
    VirtualClock,
    Work,
    _worker,
    default_handler,
)

REQUESTS = 20


def _racing(base: type[Any]) -> type[Any]:
    class Racing(base):  # type: ignore[misc]
        """The store, with a hook run once, after its first read of ``pause_after``."""

        hook: Callable[[], None] | None = None
        pause_after = "work"

        def _paused(self, read: str) -> None:
            if read == self.pause_after:
                hook, self.hook = self.hook, None
                if hook is not None:
                    hook()

        def work(self, batch_id: str) -> Work | None:
            work: Work | None = super().work(batch_id)
            self._paused("work")
            return work

        def get(self, batch_id: str, **where: Any) -> bf.Batch | None:
            batch: bf.Batch | None = super().get(batch_id, **where)
            self._paused("get")
            return batch

        if hasattr(base, "batch_and_work"):  # both reads in one statement

            def batch_and_work(self, batch_id: str, **where: Any) -> Any:
                found = super().batch_and_work(batch_id, **where)
                self._paused("work")
                self._paused("get")
                return found

    return Racing


#: name -> how to open the racing store (in a test's folder, or on PostgreSQL).
STORES: dict[str, Callable[[Path, str], Any]] = {
    "memory": lambda _, __: _racing(MemoryBatchStore)(),
    "sqlite": lambda folder, _: _racing(SQLiteStore)(folder / "race.sqlite"),
    "postgres": lambda _, url: _racing(PostgresStore)(url),
}


def _lines(prefix: str, n: int) -> bytes:
    return "\n".join(
        json.dumps(
            {
                "custom_id": f"{prefix}{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": "hi"},
            }
        )
        for i in range(n)
    ).encode()


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    made = STORES[request.param](tmp_path, url)
    yield made
    if hasattr(made, "close"):
        made.close()


@pytest.mark.parametrize("pause_after", ["work", "get"])
def test_a_cancel_racing_a_progress_write_loses_nothing(
    store: Any, pause_after: str
) -> None:
    files = getattr(store, "files", None)
    ids = store.ids() if hasattr(store, "ids") else None
    clock = VirtualClock()
    emu = Emulator(clock=clock, store=store, files=files, ids=ids)
    upload = emu.create_file(_lines("r", REQUESTS), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/embeddings")
    clock.advance(5)
    snapshots = [emu.retrieve_batch(batch.id)]
    assert snapshots[0].status is bf.BatchStatus.IN_PROGRESS

    def worker_moves_on() -> None:  # after one of the cancel's reads
        clock.advance(5)
        emu.run()
        snapshots.append(store.get(batch.id))

    store.pause_after = pause_after
    store.hook = worker_moves_on
    snapshots.append(emu.cancel_batch(batch.id))
    snapshots.append(emu.retrieve_batch(batch.id))
    clock.advance(100)
    end = emu.retrieve_batch(batch.id)
    snapshots.append(end)

    assert bf.check_trace(snapshots) == []
    written: Counter[str] = Counter()
    for file_id in (end.output_file_id, end.error_file_id):
        if file_id is not None:
            for line in emu.file_content(file_id).splitlines():
                written[json.loads(line)["custom_id"]] += 1
    assert written == Counter(f"r{i}" for i in range(REQUESTS))
    assert end.request_counts is not None
    output = emu.file_content(end.output_file_id) if end.output_file_id else b""
    assert end.request_counts.completed == len(output.splitlines())


@pytest.mark.parametrize("validated", [True, False], ids=["running", "validating"])
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_batch_cancelled_after_the_claim_sends_no_request(
    kind: str,
    validated: bool,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One pass claims both batches; the first one's first request cancels
    # the second, whose run must then send nothing: the claim's read of it
    # is older than a run may start from (set to 0 here), so it is read
    # again first. The second batch is running at the claim, or validating
    # (then validated in the pass, its run chained on).
    monkeypatch.setattr(_worker, "CLAIM_FRESH_SECONDS", 0.0)
    sent: list[str] = []

    def handler(endpoint: str, body: Any, custom_id: str, at: int) -> Any:
        sent.append(custom_id)
        if custom_id == "a0":
            emu.cancel_batch(second.id)
        return default_handler(endpoint, body, custom_id, at)

    store = (
        SQLiteStore(tmp_path / "race.sqlite")
        if kind == "sqlite"
        else PostgresStore(request.getfixturevalue("postgres_url"))
    )
    request.addfinalizer(store.close)
    clock = VirtualClock()
    emu = Emulator(clock=clock, store=store, seed=1, handler=handler)
    batches = [
        emu.create_batch(
            input_file_id=emu.create_file(_lines(p, 8), f"{p}.jsonl", "batch").id,
            endpoint="/v1/embeddings",
        )
        for p in ("a", "b")
    ]
    second = batches[1]
    if validated:
        clock.advance(emu.validation_seconds)  # both validated, no request due
        assert emu.retrieve_batch(second.id).status is bf.BatchStatus.IN_PROGRESS
    clock.advance(3_600)
    emu.run()
    assert [s for s in sent if s.startswith("b")] == []
    clock.advance(emu.cancel_grace_seconds)
    ended = emu.retrieve_batch(second.id)
    assert ended.status is bf.BatchStatus.CANCELLED
    assert ended.request_counts is not None
    # Its requests unsent: each failed (batch_cancelled); or, cancelled while
    # validating, never counted.
    counts = ended.request_counts
    assert (counts.total, counts.completed, counts.failed) == (
        (8, 0, 8) if validated else (0, 0, 0)
    )
