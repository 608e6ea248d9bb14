"""Line chunks: one big batch's requests sent by every process on the store.

A batch is held by one process at a time (its lease, :mod:`._leases`), and
that process alone moves it through the lifecycle. Its requests, though,
may be sent by all the processes sharing a PostgreSQL store, so that one
big batch goes faster with more gateways. How:

- **Which batches.** Those whose requests an async handler answers at its
  own pace (``request_seconds`` 0: ``serve --upstream``), with no bound on
  the results' bytes, holding more than :data:`LINES_PER_CHUNK` requests,
  on a store that keeps chunks (:class:`._sql_chunks.ChunkedSQLStore`:
  PostgreSQL). Others run in order in the holder's process, as before;
  SQLite and memory stores keep one process per batch.
- **The split.** At the holder's first step of the batch's running status
  (:data:`._sql_chunks.RUNNING`, the one ``finalize`` leaves), before any
  request ran, it reads the input once and splits it into chunks of
  :data:`LINES_PER_CHUNK` request lines (byte ranges), in the write that
  also makes the batch due at its expiry: until then the holder has
  nothing to do for it but end it.
- **The claims.** Each process's worker, after its due batches, claims one
  open chunk (the oldest batch's first) that no live process holds, and
  sends its lines as the async run sends a batch's (at most
  ``concurrency`` at once). A claim is fenced by the chunk's counter, which
  each claim moves on, and lasts as long as its holder's heartbeat (the
  leases' own, in ``batchfsm_owners``).
- **Progress.** Each group of answers is one write: the chunk's progress
  (its first line not run, the lines past it that ran) and the batch's
  counts, usage and result lines, under the batch's row lock; refused if
  the batch left the running status or the claim moved on. The write moves
  the batch's epoch on, so the holder's moves and a cancel decided from an
  older read are refused and decided again.
- **The end.** The write whose answers bring the batch's done requests to
  its total makes the batch due now: its holder finalizes it, and writes
  its files when it completes, as it would a batch run in order. A cancel
  or the expiry stops every process's sending (each run watches the
  batch's status and the clock, and its writes are refused); the holder
  then ends the batch with the lines of every chunk not run as
  ``batch_cancelled`` (``batch_expired``) lines.
- **Crashes.** A dead process's claims are free once its heartbeat goes
  (at once on its own machine, else ``lease_seconds`` after its last); the
  next claimer sends again only the lines whose answers were not written
  (at least once), and a dead holder's batch is taken over as any batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from .._lifecycle import progress
from .._model import Batch
from ._handlers import is_async
from ._results import counts, total, usage
from ._sql_chunks import RUNNING, ChunkedSQLStore, LineChunk
from ._stores import HeldWrite, Work
from ._validate import is_blank
from ._worker import (
    Service,
    _drain,
    _gone_at,
    _InputGoneError,
    _lines,
    _request,
    _Run,
    _stopper,
    _stream,
    _Streamed,
    _Taken,
    _write,
    due,
)

__all__ = ["LINES_PER_CHUNK", "hold", "run_chunk", "unrun"]

#: The request lines of a chunk (the last one of a batch may hold fewer):
#: enough for a process's lanes to stay busy, few enough that processes
#: share a batch of some thousands of lines.
LINES_PER_CHUNK = 512


def _store(emu: Service) -> ChunkedSQLStore | None:
    """The store, if the batches of ``emu`` run in chunks at all."""
    store = emu.batches
    if (
        not isinstance(store, ChunkedSQLStore)
        or not is_async(emu.handler)
        or emu.request_seconds != 0
        or emu.max_output_bytes is not None
    ):
        return None
    return store


def hold(emu: Service, batch: Batch, work: Work) -> bool:
    """The holder's step of a running batch that runs in chunks; False if it does not.

    Splits it into chunks if none ran yet; a batch split already is due
    again only at its expiry (the write that ends its requests makes it due).
    """
    assert batch.expires_at is not None
    if work.chunks:  # split already: its chunks run it, never a run in order
        # (a holder that runs no chunks itself, its settings unlike the
        # splitter's, waits too: all processes on one database run alike).
        again = attrs.evolve(work, due_at=batch.expires_at)
        _write(emu.batches, HeldWrite(batch, again, batch.status, work.epoch))
        return True
    store = _store(emu)
    if store is None:
        return False
    if total(batch) <= LINES_PER_CHUNK or work.done or work.offset or work.ahead:
        return False
    try:
        ranges = _ranges(emu, batch)
    except _InputGoneError:
        return False  # the run in order tells what is gone
    moved = attrs.evolve(work, chunks=len(ranges), due_at=batch.expires_at)
    store.split(batch, moved, status=batch.status, epoch=work.epoch, chunks=ranges)
    return True


def _ranges(emu: Service, batch: Batch) -> list[tuple[int, int, int]]:
    """The chunks of the batch's input: ``(start, stop, request lines)`` each."""
    ranges: list[tuple[int, int, int]] = []
    start = end = lines = 0
    for end, raw in _lines(emu.files, batch.input_file_id, 0):
        if is_blank(raw):
            continue
        lines += 1
        if lines == LINES_PER_CHUNK:
            ranges.append((start, end, lines))
            start, lines = end, 0
    if lines:
        ranges.append((start, end, lines))
    return ranges


def _unrun_chunk(emu: Service, file_id: str, chunk: LineChunk) -> Iterator[bytes]:
    """The request lines of ``chunk`` not run yet."""
    ahead = frozenset(chunk.ahead)
    for end, raw in _lines(emu.files, file_id, chunk.pos):
        if end > chunk.stop:
            return
        if end not in ahead and not is_blank(raw):
            yield raw


def unrun(emu: Service, batch: Batch) -> Iterator[bytes]:
    """The request lines of a batch split into chunks that did not run yet."""
    store = emu.batches
    if not isinstance(store, ChunkedSQLStore):  # pragma: no cover - split by one
        return
    for chunk in store.line_chunks(batch.id):
        if chunk.done < chunk.lines:
            yield from _unrun_chunk(emu, batch.input_file_id, chunk)


def _take(emu: Service, batch: Batch, chunk: LineChunk) -> _Taken:
    """The chunk's lines not run yet, each ``(at, raw, end)``."""
    assert batch.in_progress_at is not None
    at = batch.in_progress_at  # a request takes no emulated time here
    if at >= _gone_at(emu, batch.input_file_id):
        return _Taken([], chunk.pos, True)
    ahead = frozenset(chunk.ahead)
    lines: list[tuple[int, bytes, int]] = []
    try:
        for end, raw in _lines(emu.files, batch.input_file_id, chunk.pos):
            if end > chunk.stop:
                break
            if end not in ahead and not is_blank(raw):
                lines.append((at, raw, end))
    except _InputGoneError:
        return _Taken(lines, chunk.stop, True)
    return _Taken(lines, chunk.stop, False)


def _counted() -> _Run:
    """What a group of a chunk's answers adds to its batch's work: from nothing."""
    return _Run(Work(due_at=0), None)


@attrs.define
class _ChunkRun(_Streamed):
    """A chunk's answers as they come, written in groups (see :class:`_Streamed`)."""

    store: ChunkedSQLStore | None = None
    chunk: LineChunk | None = None

    def write(self, last: bool) -> bool:
        """Write the group: whether it was (False: the batch or the claim moved on)."""
        assert self.store is not None
        assert self.chunk is not None
        chunk, added = self.chunk, self.run.work
        pos, ahead = self.marks()
        if last:
            pos, ahead = chunk.stop, ()
            if self.taken.gone:  # what the input no longer holds cannot run
                missing = chunk.lines - chunk.done - added.done
                added = attrs.evolve(
                    added, done=added.done + missing, failed=added.failed + missing
                )
        kept = tuple(a for a in sorted({*chunk.ahead, *ahead}) if a > pos)
        moved = attrs.evolve(chunk, done=chunk.done + added.done, pos=pos, ahead=kept)
        emu = self.emu

        def merge(batch: Batch, work: Work) -> tuple[Batch, Work]:
            grown = attrs.evolve(
                work,
                done=work.done + added.done,
                completed=work.completed + added.completed,
                failed=work.failed + added.failed,
                input_tokens=work.input_tokens + added.input_tokens,
                output_tokens=work.output_tokens + added.output_tokens,
                result_bytes=work.result_bytes + added.result_bytes,
            )
            after = progress(
                batch, request_counts=counts(batch, grown), usage=usage(grown)
            )
            if grown.done >= total(after):  # the last answers: its holder ends it
                grown = attrs.evolve(grown, due_at=due(emu, after, grown.done))
            return after, grown

        if not self.store.write_chunk(moved, merge, self.run.output, self.run.errors):
            return False
        self.chunk, self.run = moved, _counted()
        return True


def run_chunk(emu: Service, now: int, deadline: float | None = None) -> bool:
    """Claim one open chunk of a running batch and send its lines; whether it did.

    As the async run of a batch (:func:`._worker._run_async`): at most
    ``emu.concurrency`` requests at once, answers written in groups as they
    come; a cancel, the expiry or a refused write (the claim taken over)
    stops the sending, and the answers not written are dropped. Past
    ``deadline`` (the pass's, a :func:`time.monotonic` time) it stops
    sending too, the answers in flight written: the chunk stays this
    process's, and its next pass claims it again.
    """
    store = _store(emu)
    chunk = None if store is None else store.claim_chunk()
    if chunk is None:
        return False
    batch = emu.batches.get(chunk.batch_id)
    if batch is None or batch.status is not RUNNING:
        return False  # it moved on since the claim
    assert batch.expires_at is not None
    if emu.clock.now() >= batch.expires_at:
        return False  # its window ended: its holder ends it, and nothing is sent
    taken = _take(emu, batch, chunk)
    requests = [_request(batch.endpoint, raw, at) for at, raw, _ in taken.lines]
    refused = [False]
    stop = _stopper(emu, batch, now, refused)
    run = _ChunkRun(
        emu, batch, Work(due_at=0, offset=chunk.pos), taken, _counted(),
        [False] * len(requests), store=store, chunk=chunk,
    )  # fmt: skip
    _stream(emu, requests, run, stop, refused, _drain(deadline))  # as a batch's
    return True
