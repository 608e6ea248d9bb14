"""Store conformance: every store implementation keeps the same contract.

Each test takes the ``stores`` fixture, parametrized over :data:`STORES`; a new
store (SQLite, PostgreSQL) joins by adding a factory to that list.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm.emulator import (
    BatchStore,
    FileObject,
    FileStore,
    IdSource,
    MemoryBatchStore,
    MemoryIds,
    PostgresStore,
    SQLiteStore,
    SQLStore,
    Work,
)
from batchfsm.emulator._stores import (
    RANDOM_BYTES_PER_DRAW,
    ResultLines,
    _CreationIndex,
    _Pieces,
)

from .postgres import drop_databases, new_database

S = bf.BatchStatus


class Stores(NamedTuple):
    """Fresh, empty stores of one kind.

    ``ids(seed)`` makes an id source as a new deployment would (for a SQL
    store: over a new, empty database), so two made alike with a seed repeat.
    That a restart over the same database does not repeat is each persistent
    store's own test.
    """

    batches: BatchStore
    files: FileStore
    ids: Callable[[int | None], IdSource]


def _memory() -> Iterator[Stores]:
    store = MemoryBatchStore()
    yield Stores(store, store.files, MemoryIds)


def _sql(open_empty: Callable[[], SQLStore]) -> Iterator[Stores]:
    # A new id source is one on a new database: on the same one, a seeded
    # source goes on counting (a restart must not repeat an id).
    opened = [open_empty()]

    def ids(seed: int | None) -> IdSource:
        opened.append(open_empty())
        return opened[-1].ids(seed)

    try:
        yield Stores(opened[0], opened[0].files, ids)
    finally:
        for store in opened:
            store.close()


def _sqlite() -> Iterator[Stores]:
    with tempfile.TemporaryDirectory() as folder:
        paths = (Path(folder) / f"{n}.sqlite" for n in itertools.count())
        yield from _sql(lambda: SQLiteStore(next(paths)))


#: The PostgreSQL cluster's URL, once the session started it.
_POSTGRES: list[str] = []


def _postgres() -> Iterator[Stores]:
    # Dropped here, not when the test ends: a property test makes some per example.
    made: list[str] = []

    def open_empty() -> SQLStore:
        made.append(new_database(_POSTGRES[0]))
        return PostgresStore(made[-1])

    try:
        yield from _sql(open_empty)
    finally:
        drop_databases(made)


#: name -> a generator yielding fresh, empty stores (and cleaning up after).
STORES: dict[str, Callable[[], Iterator[Stores]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@contextlib.contextmanager
def fresh(name: str) -> Iterator[Stores]:
    factory = contextlib.contextmanager(STORES[name])
    with factory() as stores:
        yield stores


@pytest.fixture(scope="session", params=sorted(STORES))
def store_name(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not _POSTGRES:
        _POSTGRES.append(request.getfixturevalue("postgres_server"))
    return str(request.param)


@pytest.fixture
def stores(store_name: str) -> Iterator[Stores]:
    with fresh(store_name) as made:
        yield made


def batch(i: int, created_at: int = 1_700_000_000) -> bf.Batch:
    return bf.new_batch(
        id=f"batch_{i:04d}",
        input_file_id="file-in",
        endpoint="/v1/embeddings",
        created_at=created_at,
    )


def file(i: int, size: int = 0) -> FileObject:
    return FileObject(
        id=f"file-{i:04d}",
        bytes=size,
        created_at=1_700_000_000 + i,
        filename=f"f{i}.jsonl",
        purpose="batch",
    )


# -- batches -------------------------------------------------------------------------


def test_a_batch_and_its_work_come_back_as_values(stores: Stores) -> None:
    b, w = batch(1), Work(due_at=5, output_expires_after=3_600)
    stores.batches.insert(b, w)
    assert stores.batches.get(b.id) == b
    assert stores.batches.work(b.id) == w
    assert stores.batches.get("batch_none") is None
    assert stores.batches.work("batch_none") is None
    with pytest.raises(KeyError):
        stores.batches.insert(b, w)
    assert stores.batches.get(b.id) == b


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 40), st.integers(1, 12))
def test_pages_are_newest_first_and_visit_each_once(
    store_name: str, n: int, limit: int
) -> None:
    with fresh(store_name) as stores:
        for i in range(n):
            stores.batches.insert(batch(i), Work(due_at=i))
        seen: list[str] = []
        after = None
        while True:
            page, more = stores.batches.page(after, limit)
            seen += [b.id for b in page]
            assert len(page) <= limit
            if not more:
                break
            assert len(page) == limit
            after = page[-1].id
        assert seen == [batch(i).id for i in reversed(range(n))]


def test_a_write_happens_only_on_the_status_and_epoch_read(stores: Stores) -> None:
    b = batch(1)
    store = stores.batches
    store.insert(b, Work(due_at=1, epoch=3))
    started = bf.advance(b, "start", at=1_700_000_001)
    moved = Work(due_at=9, epoch=3, done=1)
    assert not store.write(started, moved, status=S.IN_PROGRESS, epoch=3)
    assert not store.write(started, moved, status=S.VALIDATING, epoch=2)
    assert not store.write(batch(2), moved, status=S.VALIDATING, epoch=3)
    assert store.get(b.id) == b and store.work(b.id) == Work(due_at=1, epoch=3)
    assert store.due(1, 10) == [b.id]
    assert store.write(started, moved, status=S.VALIDATING, epoch=3, output=["o1"])
    # Stored with the epoch moved on: the epoch handed in is not kept.
    assert store.get(b.id) == started and store.work(b.id) == Work(9, 4, done=1)
    # The loser of a race read the old status: refused, nothing changes.
    assert not store.write(started, moved, status=S.VALIDATING, epoch=3, output=["x"])
    assert store.results(b.id, "output") == b"o1\n"


def test_every_write_moves_the_epoch_on_fencing_off_every_earlier_read(
    stores: Stores,
) -> None:
    b = batch(1)
    store = stores.batches
    store.insert(b, Work(due_at=1))
    started = bf.advance(b, "start", at=1_700_000_001)
    assert store.write(started, Work(due_at=2), status=S.VALIDATING, epoch=0)
    progress = attrs.evolve(started, metadata={"n": "1"})  # a write to the same status
    for epoch in (1, 2, 3):
        assert store.work(b.id) == Work(due_at=2, epoch=epoch)
        assert not store.write(progress, Work(due_at=2), status=S.IN_PROGRESS,
                               epoch=epoch - 1)  # fmt: skip
        assert store.write(progress, Work(due_at=2, epoch=99), status=S.IN_PROGRESS,
                           epoch=epoch)  # fmt: skip
    ended = bf.advance(progress, "finalize", at=1_700_000_002)
    assert not store.write(ended, None, status=S.IN_PROGRESS, epoch=3)
    assert store.write(ended, None, status=S.IN_PROGRESS, epoch=4)
    assert store.work(b.id) is None and store.get(b.id) == ended


def _epoch(store: BatchStore, batch_id: str) -> int:
    work = store.work(batch_id)
    assert work is not None
    return work.epoch


def test_result_lines_append_in_order_and_go_with_the_work(stores: Stores) -> None:
    b = batch(1)
    store = stores.batches
    store.insert(b, Work(due_at=1))
    started = bf.advance(b, "start", at=1_700_000_001)
    assert store.write(started, Work(due_at=2), status=S.VALIDATING, epoch=0)
    assert store.results(b.id, "output") == b"" == store.results(b.id, "errors")
    for n in range(3):
        assert store.write(
            started,
            Work(due_at=3 + n),
            status=S.IN_PROGRESS,
            epoch=_epoch(store, b.id),
            output=[f"o{n}a", f"o{n}b"],
            errors=[f"e{n}"] if n else [],
        )
    assert store.results(b.id, "output") == b"o0a\no0b\no1a\no1b\no2a\no2b\n"
    assert store.results(b.id, "errors") == b"e1\ne2\n"
    done = bf.advance(
        bf.advance(started, "finalize", at=1_700_000_009), "complete", at=1_700_000_010
    )
    finalizing = bf.advance(started, "finalize", at=1_700_000_009)
    assert store.write(finalizing, Work(due_at=10), status=S.IN_PROGRESS, epoch=4)
    assert store.write(done, None, status=S.FINALIZING, epoch=5)
    assert store.get(b.id) == done
    assert store.work(b.id) is None
    assert store.results(b.id, "output") == b""
    assert store.due(2**62, 10) == []
    # An ended batch takes no write at all.
    for epoch in range(8):
        assert not store.write(done, Work(due_at=1), status=S.COMPLETED, epoch=epoch)


def test_results_past_a_mebibyte_come_back_whole(stores: Stores) -> None:
    # Past a MiB the memory store moves its results into a reservation of
    # their own, and a SQL store reads them back through the same spool.
    b = batch(1)
    store = stores.batches
    store.insert(b, Work(due_at=1))
    started = bf.advance(b, "start", at=1_700_000_001)
    assert store.write(started, Work(due_at=2), status=S.VALIDATING, epoch=0)
    written = []
    for n in range(4):
        lines = [f"{n}:{k:06d}:" + "x" * 120 for k in range(2_500)]
        assert store.write(
            started, Work(due_at=3 + n), status=S.IN_PROGRESS,
            epoch=_epoch(store, b.id), output=lines,
        )  # fmt: skip
        written += lines
    expected = "".join(f"{line}\n" for line in written).encode()
    assert len(expected) > 2**20
    assert store.results(b.id, "output") == expected
    assert store.results(b.id, "errors") == b""


def test_the_write_that_ends_a_batch_moves_its_result_lines_into_its_files(
    stores: Stores,
) -> None:
    store = stores.batches
    finalizing = _finalizing(store, epoch=1)
    out_lines = [f"o{n}:" + "y" * 1_000 for n in range(300)]
    for start in range(0, 300, 100):  # three writes: three rows in SQL
        assert store.write(
            finalizing, Work(due_at=3), status=S.FINALIZING,
            epoch=_epoch(store, finalizing.id), output=out_lines[start : start + 100],
            errors=["e"] if start == 0 else (),
        )  # fmt: skip
    expected = "".join(f"{line}\n" for line in out_lines).encode()
    assert store.result_size(finalizing.id, "output") == len(expected)
    assert store.result_size(finalizing.id, "errors") == 2
    out, err = file(7, len(expected)), file(8, 2 + 5)
    done = bf.advance(
        finalizing, "complete", at=1_700_000_003, output_file_id=out.id,
        error_file_id=err.id,
    )  # fmt: skip
    made = [
        (out, ResultLines(finalizing.id, "output")),
        (err, ResultLines(finalizing.id, "errors", b"late\n")),
    ]
    assert store.write(
        done, None, status=S.FINALIZING, epoch=_epoch(store, finalizing.id),
        files=made,
    )  # fmt: skip
    assert store.files.content(out.id) == expected
    assert store.files.content(err.id) == b"e\nlate\n"
    assert store.result_size(finalizing.id, "output") == 0  # gone with the work


def test_result_lines_of_another_size_than_their_file_add_nothing(
    stores: Stores,
) -> None:
    store = stores.batches
    finalizing = _finalizing(store, epoch=1)
    assert store.write(
        finalizing, Work(due_at=3), status=S.FINALIZING, epoch=1, output=["abc"]
    )
    out = file(7, 3)  # the lines are 4 bytes with their newline
    done = bf.advance(finalizing, "complete", at=1_700_000_003, output_file_id=out.id)
    with pytest.raises(ValueError, match="its content is"):
        store.write(
            done, None, status=S.FINALIZING, epoch=2,
            files=[(out, ResultLines(finalizing.id, "output"))],
        )  # fmt: skip
    assert store.files.get(out.id) is None
    assert store.get(finalizing.id) == finalizing
    assert store.results(finalizing.id, "output") == b"abc\n"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 30), st.booleans()),
        max_size=40,
    ),
    st.integers(0, 30),
    st.integers(1, 12),
)
def test_due_answers_the_earliest_due_first(
    store_name: str, moves: list[tuple[int, int, bool]], at: int, limit: int
) -> None:
    # A model of the index: batch i -> its due time, or gone once it ended.
    model: dict[int, int | None] = {}
    with fresh(store_name) as stores:
        store = stores.batches
        for i, due, end in moves:
            if i not in model:
                store.insert(batch(i), Work(due_at=due))
                model[i] = due
            elif model[i] is not None:
                b = store.get(batch(i).id)
                assert b is not None
                work = None if end else Work(due_at=due)
                epoch = _epoch(store, b.id)
                assert store.write(b, work, status=b.status, epoch=epoch)
                model[i] = None if end else due
        order = sorted(
            (due, list(model).index(i), batch(i).id)
            for i, due in model.items()
            if due is not None and due <= at
        )
        assert store.due(at, limit) == [bid for _, _, bid in order][:limit]
        # Reading the index changes nothing.
        assert store.due(at, limit) == [bid for _, _, bid in order][:limit]
        # The earliest due time of them all, due by ``at`` or not.
        dues = [due for due in model.values() if due is not None]
        assert store.earliest_due() == (min(dues) if dues else None)


#: What a writer does with what it read: record progress, or cancel.
_WRITERS = st.lists(st.sampled_from(("progress", "cancel")), min_size=2, max_size=3)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_of_writers_that_read_alike_only_the_first_to_write_wins(
    store_name: str, data: st.DataObject
) -> None:
    # Each writer reads the work, then the batch, then writes what it decided
    # from them; any interleaving of those steps. A write must win exactly
    # when no other write won since its read of the work: a cancel that read
    # before a progress write (same status) is stale, and so is a second
    # worker's progress.
    kinds = data.draw(_WRITERS, label="writers")
    order = data.draw(
        st.permutations([k for k in range(len(kinds)) for _ in range(3)]),
        label="interleaving",
    )
    counts = bf.BatchRequestCounts(total=20, completed=0, failed=0)
    start = bf.advance(batch(1), "start", at=1_700_000_001, request_counts=counts)
    with fresh(store_name) as stores:
        store = stores.batches
        store.insert(start, Work(due_at=1_700_000_002))
        wins = 0  # the writes that won so far
        read_at: dict[int, int] = {}
        works: dict[int, Work] = {}
        batches: dict[int, bf.Batch] = {}
        phase = dict.fromkeys(range(len(kinds)), 0)
        trace = [start]
        for k in order:
            phase[k] += 1
            if phase[k] == 1:
                work = store.work(start.id)
                assert work is not None
                read_at[k], works[k] = wins, work
                continue
            if phase[k] == 2:
                read = store.get(start.id)
                assert read is not None
                batches[k] = read
                continue
            read, work = batches[k], works[k]
            if kinds[k] == "cancel":
                if read.status is not S.IN_PROGRESS:
                    continue  # nothing to do: the cancel is answered as it is
                after = bf.advance(read, "cancel", at=1_700_000_005)
                moved, lines = attrs.evolve(work, due_at=1_700_000_010), list[str]()
            else:
                if read.status is not S.IN_PROGRESS:
                    continue  # cancelled meanwhile: no more requests
                moved = attrs.evolve(work, done=work.done + 2, completed=work.done + 2)
                try:
                    after = bf.progress(
                        read,
                        request_counts=attrs.evolve(counts, completed=moved.completed),
                    )
                except bf.InvalidProgress:
                    # Its batch is newer than its work: another write came
                    # between its two reads, so it is stale and writes nothing
                    # (the engine reads both again, see Emulator._read).
                    assert read_at[k] != wins, (kinds, order, k)
                    continue
                lines = [f"w{k}r{n}" for n in (work.done, work.done + 1)]
            won = store.write(
                after, moved, status=read.status, epoch=work.epoch, output=lines
            )
            assert won == (read_at[k] == wins), (kinds, order, k)
            if won:
                wins += 1
                trace.append(after)
        end = store.get(start.id)
        assert end == trace[-1]
        assert bf.check_trace(trace) == []
        output = store.results(start.id, "output").splitlines()
        assert end.request_counts is not None
        assert end.request_counts.completed == len(output) == len(set(output))
        work = store.work(start.id)
        assert work is not None and work.epoch == wins
        assert work.completed == len(output)


def _finalizing(store: BatchStore, epoch: int) -> bf.Batch:
    """A finalizing batch whose work has epoch ``epoch`` (> 0: one write made it)."""
    b = batch(1)
    store.insert(b, Work(due_at=1, epoch=epoch - 1))
    counts = bf.BatchRequestCounts(total=1, completed=1, failed=0)
    started = bf.advance(b, "start", at=1_700_000_001, request_counts=counts)
    finalizing = bf.advance(started, "finalize", at=1_700_000_002)
    assert store.write(finalizing, Work(due_at=3), status=S.VALIDATING,
                       epoch=epoch - 1)  # fmt: skip
    assert store.work(b.id) == Work(due_at=3, epoch=epoch)
    return finalizing


def test_result_files_are_added_only_by_the_write_that_ends_the_batch(
    stores: Stores,
) -> None:
    store, files = stores.batches, stores.files
    assert store.files is files
    finalizing = _finalizing(store, epoch=1)
    out, err = file(7, 3), file(8, 2)
    done = bf.advance(
        finalizing, "complete", at=1_700_000_003, output_file_id=out.id,
        error_file_id=err.id,
    )  # fmt: skip
    made = [(out, b"o1\n"), (err, b"e\n")]
    # A stale epoch, a status that moved on: refused, and no file added.
    assert not store.write(done, None, status=S.FINALIZING, epoch=0, files=made)
    assert not store.write(done, None, status=S.IN_PROGRESS, epoch=1, files=made)
    assert files.list() == [] and files.get(out.id) is None
    assert store.write(done, None, status=S.FINALIZING, epoch=1, files=made)
    assert files.content(out.id) == b"o1\n" and files.content(err.id) == b"e\n"
    assert [f.id for f in files.list()] == [err.id, out.id]
    # An ended batch takes no write: the loser of a race adds no file either.
    late = [(file(9, 1), b"x")]
    assert not store.write(done, None, status=S.FINALIZING, epoch=1, files=late)
    assert files.get(file(9).id) is None


def test_a_write_that_goes_on_adds_its_files_too(stores: Stores) -> None:
    store, files = stores.batches, stores.files
    finalizing = _finalizing(store, epoch=1)
    extra = [(file(7, 2), b"ok")]
    assert not store.write(finalizing, Work(due_at=4), status=S.FINALIZING, epoch=0,
                           files=extra)  # fmt: skip
    assert files.get(file(7).id) is None
    assert store.write(finalizing, Work(due_at=4), status=S.FINALIZING, epoch=1,
                       files=extra)  # fmt: skip
    assert files.content(file(7).id) == b"ok"


def test_a_failure_inside_the_write_leaves_neither_the_batch_nor_its_files(
    stores: Stores,
) -> None:
    store, files = stores.batches, stores.files
    finalizing = _finalizing(store, epoch=1)
    files.add(file(8, 5), b"taken")
    out = file(7, 3)
    done = bf.advance(finalizing, "complete", at=1_700_000_003, output_file_id=out.id)
    with pytest.raises(KeyError):
        # The second file's id exists: the failure comes after the batch's
        # change and the first file, inside the same write.
        store.write(
            done, None, status=S.FINALIZING, epoch=1,
            files=[(out, b"o1\n"), (file(8), b"again")],
        )  # fmt: skip
    assert store.get(finalizing.id) == finalizing
    assert store.work(finalizing.id) == Work(due_at=3, epoch=1)
    assert files.get(out.id) is None and files.content(file(8).id) == b"taken"
    assert store.due(3, 10) == [finalizing.id]


# -- files ---------------------------------------------------------------------------


def test_a_key_no_store_holds_is_absent_never_an_error(stores: Stores) -> None:
    # An id from a URL may hold a NUL, which PostgreSQL's text cannot: such a
    # lookup answered 500 (and a batch naming such an input file never ended).
    store, files = stores.batches, stores.files
    store.insert(batch(1), Work(due_at=1))
    files.add(file(1, 3), b"abc")
    for batch_id in ("batch_\x00", "batch_0001\x00"):
        assert store.get(batch_id) is None
        assert store.work(batch_id) is None
    for file_id in ("file-\x00", "file-0001\x00"):
        assert files.get(file_id) is None
        assert files.content(file_id) is None
        assert files.read(file_id, 0, 3) is None
        assert files.delete(file_id) is False
    assert files.page(None, 10, purpose="batch\x00") == ([], False)
    assert store.get(batch(1).id) is not None and files.content("file-0001") == b"abc"


def test_a_files_id_is_taken_once_whatever_its_content(stores: Stores) -> None:
    # PostgreSQL adds a file of one chunk in one statement, another in
    # several: a taken id is refused either way, and nothing of it written.
    files = stores.files
    big = bytes(range(256)) * 300  # more than a chunk
    files.add(file(3, 5), b"first")
    files.add(file(4, len(big)), big)
    for taken in (file(3, 5), file(4, 5)):
        with pytest.raises(KeyError):
            files.add(taken, b"other")
        with pytest.raises(KeyError):
            files.add(attrs.evolve(taken, bytes=len(big)), big)
    assert files.content("file-0003") == b"first"
    assert files.content("file-0004") == big


def test_files_keep_metadata_and_bytes_and_read_in_slices(stores: Stores) -> None:
    files = stores.files
    content = bytes(range(256)) * 3
    files.add(file(1, len(content)), content)
    files.add(file(2), b"")
    assert files.get("file-0001") == file(1, len(content))
    assert files.content("file-0001") == content
    assert files.read("file-0001", 0, 10) == content[:10]
    assert files.read("file-0001", 700, 100) == content[700:]
    assert files.read("file-0001", 900, 10) == b""
    assert files.content("file-0002") == b""
    assert [f.id for f in files.list()] == ["file-0002", "file-0001"]
    with pytest.raises(KeyError):
        files.add(file(1), b"other")
    assert files.content("file-0001") == content
    assert files.delete("file-0001") and not files.delete("file-0001")
    assert files.get("file-0001") is None
    assert files.content("file-0001") is None
    assert files.read("file-0001", 0, 1) is None
    assert [f.id for f in files.list()] == ["file-0002"]


#: Sizes around the SQL stores' chunk boundaries (64 KiB), and slices of them.
_SIZES = st.sampled_from([0, 1, 65_535, 65_536, 65_537, 3 * 65_536 + 5])


@settings(max_examples=40, deadline=None)
@given(
    size=_SIZES,
    slices=st.lists(
        st.tuples(st.integers(0, 4 * 65_536), st.integers(1, 3 * 65_536)), max_size=6
    ),
)
def test_any_slice_reads_what_the_content_holds_there(
    store_name: str, size: int, slices: list[tuple[int, int]]
) -> None:
    content = bytes(range(251)) * (size // 251) + bytes(range(size % 251))
    with fresh(store_name) as stores:
        stores.files.add(file(1, size), content)
        for offset, length in [(0, 65_536), (65_530, 12), *slices]:
            assert (
                stores.files.read(file(1).id, offset, length)
                == (content[offset : offset + length])
            )
        assert stores.files.content(file(1).id) == content


#: A listing's moves: add a file (purpose, expiry), delete the k-th added, or
#: purge (at most ``limit`` files expired at ``now``).
_file_moves = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from(["batch", "user_data", "batch_output"]),
            st.one_of(st.none(), st.integers(1, 3)),
        ),
        st.tuples(st.just("delete"), st.integers(0, 30), st.none()),
        st.tuples(st.just("purge"), st.integers(1, 3), st.integers(0, 3)),
    ),
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(
    moves=_file_moves,
    queries=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 16)),  # after: the k-th added
            st.integers(1, 8),
            st.sampled_from(["asc", "desc"]),
            st.sampled_from([None, "batch", "user_data", "vision"]),
            st.one_of(st.none(), st.integers(1, 3)),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_file_pages_match_a_model_of_the_listing(
    store_name: str,
    moves: list[tuple[str, Any, int | None]],
    queries: list[tuple[int | None, int, Any, str | None, int | None]],
) -> None:
    # The model: files in creation order; a page filters, then slices after;
    # a purge takes the expired ones by expiry, then creation.
    added: list[FileObject] = []
    gone: set[str] = set()
    with fresh(store_name) as stores:
        files = stores.files
        for move, purpose, expiry in moves:
            if move == "add":
                made = attrs.evolve(
                    file(len(added), 1), purpose=purpose, expires_at=expiry
                )
                files.add(made, b"x")
                added.append(made)
            elif move == "purge":
                limit, now = purpose, expiry
                assert now is not None
                due = sorted(
                    (f.expires_at, n, f.id)
                    for n, f in enumerate(added)
                    if f.id not in gone
                    and f.expires_at is not None
                    and f.expires_at <= now
                )[:limit]
                assert files.purge(now, limit) == len(due)
                gone.update(file_id for _, _, file_id in due)
                assert all(files.get(file_id) is None for _, _, file_id in due)
            elif added:
                victim = added[purpose % len(added)].id
                assert files.delete(victim) == (victim not in gone)
                gone.add(victim)
        for k, limit, order, purpose, now in queries:
            after = None if k is None else f"file-{k:04d}"
            stored = [f for f in added if f.id not in gone]
            listed = [
                (n, f)
                for n, f in enumerate(added)
                if f.id not in gone
                and (purpose is None or f.purpose == purpose)
                and (now is None or f.expires_at is None or now < f.expires_at)
            ]
            if order == "desc":
                listed.reverse()
            if after is not None and after not in {f.id for f in stored}:
                want: tuple[list[FileObject], bool] = ([], False)
            else:
                if after is not None:
                    n_after = int(after[5:])
                    listed = [
                        (n, f)
                        for n, f in listed
                        if (n > n_after if order == "asc" else n < n_after)
                    ]
                want = ([f for _, f in listed[:limit]], len(listed) > limit)
            got = files.page(after, limit, order=order, purpose=purpose, now=now)
            assert got == want, (after, limit, order, purpose, now)


@settings(max_examples=200)
@given(
    block=st.integers(1, 4),
    moves=st.lists(st.one_of(st.none(), st.integers(0, 60)), max_size=60),
    starts=st.lists(st.one_of(st.none(), st.integers(-1, 62)), min_size=1),
)
def test_the_memory_stores_creation_index_in_blocks_matches_a_list(
    block: int, moves: list[int | None], starts: list[int | None]
) -> None:
    # Small blocks, so that files leave from and list across many of them.
    class Small(_CreationIndex):
        BLOCK = block

    index, model, numbers = Small(), list[int](), itertools.count(1, 2)
    for move in moves:
        if move is None or not model:  # the next file
            model.append(next(numbers))  # with gaps between
            index.append(model[-1], f"file-{model[-1]}")
        else:  # one leaves
            index.remove(model.pop(move % len(model)))
        for start in starts:
            assert list(index.ascending(start)) == [
                f"file-{n}" for n in model if start is None or n > start
            ]
            assert list(index.descending(start)) == [
                f"file-{n}" for n in reversed(model) if start is None or n < start
            ]


def test_a_file_is_listed_until_the_second_it_expires(stores: Stores) -> None:
    for i, expiry in enumerate([None, 5, 6]):
        stores.files.add(attrs.evolve(file(i), expires_at=expiry), b"")
    listed = {
        now: [f.id for f in stores.files.page(None, 9, now=now)[0]] for now in (4, 5)
    }
    assert listed == {
        4: ["file-0002", "file-0001", "file-0000"],
        5: ["file-0002", "file-0000"],
    }
    # Without a time, nothing is hidden; after an expired file still works.
    assert len(stores.files.page(None, 9)[0]) == 3
    page, more = stores.files.page("file-0001", 9, order="asc", now=5)
    assert ([f.id for f in page], more) == (["file-0002"], False)


def chunk_rows(stores: Stores) -> int | None:
    """The chunks an SQL store holds, whatever file they belong to (None: memory)."""
    if not isinstance(stores.batches, SQLStore):
        return None
    with stores.batches._db.transaction(write=False) as tx:
        count: int = tx.one("SELECT count(*) FROM batchfsm_file_chunks")[0]
    return count


def test_expired_files_are_purged_earliest_first_a_bounded_number_at_a_time(
    stores: Stores,
) -> None:
    files = stores.files
    big = bytes(range(256)) * 600  # three chunks in SQL
    for i, expiry in enumerate([5, 3, None, 4, 9, 3]):
        files.add(attrs.evolve(file(i, len(big)), expires_at=expiry), big)
    assert files.delete(file(3).id)  # deleted before it expired: not purged again
    assert files.purge(2, 10) == 0
    assert files.purge(5, 2) == 2  # the two that expired at 3
    assert {f.id for f in files.list()} == {file(i).id for i in (0, 2, 4)}
    assert (files.purge(5, 2), files.purge(5, 2)) == (1, 0)
    for i in (0, 1, 5):
        gone = file(i).id
        assert files.get(gone) is None and files.content(gone) is None
        assert files.read(gone, 0, 10) is None
    # Gone from the listing's index too: a listing without a time skips nothing.
    assert [f.id for f in files.page(None, 9)[0]] == [file(4).id, file(2).id]
    assert files.content(file(4).id) == big
    assert chunk_rows(stores) in (None, 2 * 3)
    assert files.purge(10**12, 10) == 1 and chunk_rows(stores) in (None, 3)


def test_content_in_pieces_is_written_as_it_comes(stores: Stores) -> None:
    files = stores.files
    content = bytes(range(256)) * 1_000
    handed: list[int] = []

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(content), 70_000):
            handed.append(start)
            yield content[start : start + 70_000]

    files.add(file(1, len(content)), pieces())
    assert files.content(file(1).id) == content and len(handed) == 4
    assert files.read(file(1).id, 69_998, 4) == content[69_998:70_002]
    files.add(file(2, 3), [b"a", bytearray(b"b"), memoryview(b"c")])  # any buffer
    assert files.content(file(2).id) == b"abc"


def _cut_off() -> Iterator[bytes]:
    yield b"x" * 200_000  # several chunks written in SQL before the cut
    raise ConnectionError("the client went away")


def _endless() -> Iterator[bytes]:
    # Refused as soon as it passes its size: never read on (a growing file).
    yield b"x" * 200_000
    yield b"x" * 200_000
    raise AssertionError("read on past the declared size")


@pytest.mark.parametrize(
    ("content", "declared", "error"),
    [
        (_cut_off, 300_000, ConnectionError),
        (lambda: iter([b"x" * 200_000]), 300_000, ValueError),  # short
        (lambda: iter([b"x" * 200_000] * 2), 300_000, ValueError),  # long
        (_endless, 300_000, ValueError),
        (lambda: b"x" * 3, 2, ValueError),
        (lambda: iter([b"x" * 200_000, "text"]), 200_004, TypeError),
    ],
    ids=["cut-off", "short", "long", "endless", "bytes-long", "text"],
)
def test_content_cut_off_or_of_another_size_leaves_nothing_behind(
    stores: Stores, content: Callable[[], Any], declared: int, error: type[Exception]
) -> None:
    files = stores.files
    files.add(file(1, 1), b"k")  # a file before: untouched
    made = file(2, declared)
    with pytest.raises(error):
        files.add(made, content())
    assert files.get(made.id) is None and files.read(made.id, 0, 1) is None
    assert [f.id for f in files.list()] == [file(1).id]
    assert chunk_rows(stores) in (None, 1)
    # Nothing left to stand in the way: the same file goes in whole.
    files.add(file(2, 4), b"fine")
    assert files.content(file(2).id) == b"fine"


def test_following_file_pages_visits_each_listed_file_once(stores: Stores) -> None:
    for i in range(7):
        stores.files.add(file(i), b"")
    for order in ("asc", "desc"):
        seen: list[str] = []
        after = None
        while True:
            page, more = stores.files.page(after, 3, order=order)
            seen += [f.id for f in page]
            if not more:
                break
            after = page[-1].id
        ids = [file(i).id for i in range(7)]
        assert seen == (ids if order == "asc" else ids[::-1])


# -- ids -----------------------------------------------------------------------------


def test_ids_never_repeat_and_have_their_shape(stores: Stores) -> None:
    ids = stores.ids(None)
    drawn = [ids.new_id("file-", 22) for _ in range(2_000)]
    assert len(set(drawn)) == len(drawn)
    assert all(
        i.startswith("file-") and len(i) == 27 and int(i[5:], 16) >= 0 for i in drawn
    )


def test_unseeded_id_sources_differ_and_seeded_ones_repeat(stores: Stores) -> None:
    assert stores.ids(None).new_id("batch_", 32) != stores.ids(None).new_id(
        "batch_", 32
    )
    first, second = stores.ids(7), stores.ids(7)
    assert [first.new_id("x", 12) for _ in range(5)] == [
        second.new_id("x", 12) for _ in range(5)
    ]


def test_random_ids_are_drawn_a_block_at_a_time_and_never_repeat(
    os_draws: list[int],
) -> None:
    # One os.urandom call (a GIL hand-back) per block, not per id: ids of
    # every length, across many blocks, all different, all of their shape.
    ids = MemoryIds()
    drawn = [ids.new_id("x", 1 + i % 64) for i in range(4_000)]
    used = sum((1 + i % 64 + 1) // 2 for i in range(4_000))
    assert len(os_draws) <= used // RANDOM_BYTES_PER_DRAW + 2
    assert all(len(i) == 2 + i_ % 64 for i_, i in enumerate(drawn))
    assert all(re.fullmatch("x[0-9a-f]+", i) for i in drawn)
    long_ones = [i for i in drawn if len(i) > 17]
    assert len(set(long_ones)) == len(long_ones)


_FORKED = """
import os
from batchfsm.emulator import MemoryIds

ids = MemoryIds()
ids.new_id("x", 32)  # a block is drawn: the rest of it waits in memory
read, write = os.pipe()
child = os.fork()
if child == 0:
    os.write(write, ids.new_id("x", 32).encode())
    os._exit(0)
os.close(write)
os.waitpid(child, 0)
print(os.read(read, 100).decode(), ids.new_id("x", 32))
"""


def test_a_forked_child_never_hands_out_its_parent_s_ids() -> None:
    # In a process of its own: a fork there has no other thread to copy.
    shown = subprocess.run(
        [sys.executable, "-c", _FORKED], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(shown) == 2
    assert all(re.fullmatch("x[0-9a-f]{32}", i) for i in shown)
    assert shown[0] != shown[1]


# -- the memory store's lock ---------------------------------------------------------


class _PausingDict(dict[str, Any]):
    """A dict whose reads wait at a barrier: a pause inside the critical section."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier
        self.pausing = False

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        if self.pausing:
            with contextlib.suppress(threading.BrokenBarrierError):
                # Both writers read before either writes, unless a lock keeps
                # the second out: then the wait ends and the first goes on.
                self.barrier.wait(timeout=0.5)
        return value


def _race(store: MemoryBatchStore) -> list[bool]:
    """Two cancels-like writes from the same read of the status; who won."""
    b = batch(1)
    store.insert(b, Work(due_at=1))
    started = bf.advance(b, "start", at=1_700_000_001)
    cancelling = bf.advance(b, "cancel", at=1_700_000_001)
    # The work is the last thing a write reads before it compares.
    pausing = _PausingDict(threading.Barrier(2))
    pausing.update(store._work)
    store._work = pausing
    pausing.pausing = True
    won: list[bool] = [False, False]

    def write(k: int, after: bf.Batch) -> None:
        won[k] = store.write(after, Work(due_at=2), status=S.VALIDATING, epoch=0)

    threads = [
        threading.Thread(target=write, args=(0, started)),
        threading.Thread(target=write, args=(1, cancelling)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_a_racing_conditional_write_has_exactly_one_winner() -> None:
    assert sorted(_race(MemoryBatchStore())) == [False, True]


def test_the_race_test_bites_when_the_lock_is_lost() -> None:
    store = MemoryBatchStore()
    store._lock = contextlib.nullcontext()  # type: ignore[assignment]
    assert _race(store) == [True, True]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=20), max_size=12),
    st.integers(0, 260),
    st.integers(0, 260),
)
def test_result_pieces_read_any_slice_as_the_joined_bytes(
    parts: list[bytes], offset: int, size: int
) -> None:
    held = _Pieces(parts)
    whole = b"".join(parts)
    assert held.join() == whole and len(held) == len(whole)
    assert held.slice(offset, size) == whole[offset : offset + size]


def test_a_memory_batchs_results_become_its_file_uncopied() -> None:
    store = MemoryBatchStore()
    finalizing = _finalizing(store, epoch=1)
    store.write(
        finalizing, Work(due_at=3), status=S.FINALIZING, epoch=1,
        output=["y" * 1_000] * 3_000,
    )  # fmt: skip
    written = store._results[finalizing.id, "output"]  # in pieces of 1 MiB
    assert len(written) == 3
    out = file(7, sum(map(len, written)))
    done = bf.advance(finalizing, "complete", at=1_700_000_003, output_file_id=out.id)
    made = [(out, ResultLines(finalizing.id, "output"))]
    assert store.write(done, None, status=S.FINALIZING, epoch=2, files=made)
    kept = list(store.files._files[out.id][1])  # type: ignore[attr-defined]
    assert len(kept) == len(written)
    assert all(a is b for a, b in zip(kept, written, strict=True))  # held once
    assert store.files.read(out.id, 999, 3) == b"y\ny"
