"""The worker: each step of a batch's due work, one conditional write each.

Each unfinished batch has its next due time in the batch store's index, and
running due work (validation, one request per ``request_seconds``,
finalizing, the cancel grace, expiry) costs only what is due, never the
number of batches in flight.

Batches move only through :func:`batchfsm.advance`, each move (and each write
of progress) one conditional write on status and epoch, and each write moves
the epoch on, so a cancel racing the worker has exactly one winner: the loser
reads again (a cancel) or leaves it to the next run (the worker). One request's
failure (handler, serialization, recursion, memory) is that request's error
line (see :mod:`._results`); one batch's failure is logged and never reaches
another batch or call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from .. import _json
from .._lifecycle import advance, progress
from .._model import Batch, BatchError, BatchErrors, BatchRequestCounts, BatchStatus
from .._table import Event
from ._clock import Clock
from ._content import Content
from ._dispatch import Replies
from ._enqueued import limit_for, token_limit_error
from ._files import is_live
from ._handlers import (
    AsyncHandler,
    Handler,
    Reply,
    RequestLine,
    is_async,
    prompt_tokens,
)
from ._migrations import NEVER, RESUME
from ._results import (
    UNFINISHED,
    answer,
    counts,
    parse,
    result_file,
    result_line,
    server_error,
    total,
    usage,
    written,
)
from ._store_errors import StoreUnavailable
from ._stores import (
    BatchStore,
    FileObject,
    FileStore,
    HeldWrite,
    IdSource,
    NewFile,
    ResultKind,
    ResultLines,
    Work,
)
from ._validate import (
    MAX_BYTES,
    file_too_large_error,
    is_blank,
    iter_lines,
    missing_file_error,
    scan_input,
)

__all__ = [
    "CLAIM_FRESH_SECONDS",
    "PASS_SECONDS",
    "REQUESTS_PER_STEP",
    "REQUESTS_PER_WRITE",
    "RESULT_BYTES_PER_WRITE",
    "SECONDS_PER_WRITE",
    "Service",
    "due",
    "run_due",
    "snapshot",
]

S = BatchStatus
#: Bytes read from a stored file at a time.
READ_BYTES = 1 << 16
#: The most bytes of small input files a pass keeps (see ``_Held.read``).
CONTENT_HELD_BYTES = 1 << 20
#: At most this many requests of a batch run in one step (then other batches').
REQUESTS_PER_STEP = 256
#: A pass over due work (:func:`run_due`) ends once it ran this long (real
#: seconds), its progress written: then the clock is read again (work that
#: became due meanwhile, a batch created during a big one's run, is due
#: too) and a stop is heard. One step may overrun it (its requests, up to
#: :data:`REQUESTS_PER_STEP`, or an async run's).
PASS_SECONDS = 1.0
#: Answered requests are written in groups (one transaction each): a group
#: is written once it holds this many answers, ...
REQUESTS_PER_WRITE = 64
#: ... or its result lines reach this many bytes, ...
RESULT_BYTES_PER_WRITE = 2 << 20
#: ... or its first answer is this many seconds old (real time): a slow
#: handler's answers are not held back for long.
SECONDS_PER_WRITE = 0.05
#: A run of requests starts from the batch as the pass's claim read it only
#: while that read is at most as old as a group's first answer may be
#: (real seconds); later, the batch is read again first (a cancel since is
#: seen: see ``_Held.still_as_read``).
CLAIM_FRESH_SECONDS = SECONDS_PER_WRITE
#: An async run takes the answers that came at most this often (real
#: seconds): the handlers' loop, the gateway's busiest thread, then hands
#: the worker's thread the GIL once for several answers, not for each.
GATHER_SECONDS = 0.005

log = logging.getLogger("batchfsm.emulator")


class Service(Protocol):
    """What the worker reads of the emulator: read at each step, never kept.

    So a handler replaced between two runs answers the next request.
    """

    batches: BatchStore
    files: FileStore
    ids: IdSource
    handler: Handler | AsyncHandler
    concurrency: int
    models: dict[str, frozenset[str]]
    any_model: bool
    enqueued_token_limits: dict[str, int]
    validation_seconds: int
    request_seconds: int
    finalizing_seconds: int
    cancel_grace_seconds: int
    max_output_bytes: int | None
    clock: Clock

    @property
    def input_grace_seconds(self) -> int:
        """How long past its expiry a batch's input file is still read."""
        ...


class _InputGoneError(Exception):
    """The input file was deleted, or expired, while its batch still needed it."""


def _gone_at(emu: Service, file_id: str) -> int:
    """When the input file is gone to the worker: its expiry and the grace.

    ``NEVER`` if it has none or is gone already (reads say so). Its requests
    due from then on cannot run, whether or not it was purged yet: so the
    outcome depends on the emulated time alone, not on when the purge came
    round.
    """
    held = _held_writes()
    file = held.inputs.get(file_id) if held is not None else None
    if file is None:
        file = emu.files.get(file_id)
    if file is None or file.expires_at is None:
        return NEVER
    return file.expires_at + emu.input_grace_seconds


def snapshot(
    batches: BatchStore, batch_id: str, project: str | None = None
) -> tuple[Batch | None, Work | None]:
    """The batch and its work as one snapshot, for a write naming the epoch.

    With ``project``, a batch of another project is read as none.

    The work first: every write moves the epoch on, so a batch that
    changed after this read of the epoch makes that write stale (refused),
    never a write moved from an older batch than the epoch says. The work
    is read again after the batch: an epoch that moved in between means
    the two reads straddle another writer's write (another process's
    worker, say), and a move decided from them would mix its counts with
    older ones, so they are read again. A store with ``batch_and_work``
    (the SQL stores) reads both in one statement instead.
    """
    together = getattr(batches, "batch_and_work", None)
    if together is not None:  # a store that reads both in one statement
        found: tuple[Batch | None, Work | None] = together(batch_id, project=project)
        return found
    while True:
        work = batches.work(batch_id)
        batch = batches.get(batch_id, project=project)
        if work is None or batch is None:
            return batch, work
        again = batches.work(batch_id)
        if again is not None and again.epoch == work.epoch:
            return batch, work


def due(emu: Service, batch: Batch, done: int) -> int:
    """When the next piece of work of ``batch`` is due, ``done`` requests run."""
    assert batch.expires_at is not None
    if batch.status is S.CANCELLING:
        assert batch.cancelling_at is not None
        return batch.cancelling_at + emu.cancel_grace_seconds
    if batch.status is S.VALIDATING:
        at = batch.created_at + emu.validation_seconds
    elif batch.status is S.IN_PROGRESS:
        assert batch.in_progress_at is not None
        at = batch.in_progress_at + (done + 1) * emu.request_seconds
    else:
        assert batch.finalizing_at is not None
        at = batch.finalizing_at + emu.finalizing_seconds
    return min(at, batch.expires_at)


def run_due(emu: Service, now: int, deadline: float | None = None) -> bool:
    """Run the work due by ``now``, batch by batch; whether some may be left.

    On a store that takes several writes in one transaction
    (``write_many``), the writes of the due batches' steps are held and
    committed together (:class:`_Held`): at the end of each pass over the
    due batches, and sooner once the answers they hold make up a group.

    With ``deadline`` (a :func:`time.monotonic` time), it stops once that
    passed, after a pass over the due batches with what it held committed,
    and says True: work may be due still (see :data:`PASS_SECONDS`).
    """
    writer = getattr(emu.batches, "write_many", None)
    while True:
        held = None if writer is None else _Held(emu.batches)
        due_now = _due(emu.batches, now, held)
        if not due_now:
            return False
        if held is not None:
            held.claimed_at = time.monotonic()
        _held.writes, _held.deadline = held, deadline
        try:
            for batch_id, state in due_now:
                _step_safely(emu, batch_id, now, state)
                if held is not None:
                    _chain(emu, held, batch_id, now)
        finally:
            _held.writes = _held.deadline = None
        if held is not None:
            held.flush()
        if deadline is not None and time.monotonic() >= deadline:
            return True


def _due(
    batches: BatchStore, now: int, held: _Held | None
) -> list[tuple[str, tuple[Batch, Work] | None]]:
    """Up to 64 batches due by ``now``, each with its state if the claim read it.

    And its project, kept in ``held`` (see :func:`_input_of`).
    """
    claim = getattr(batches, "_due_states", None)  # one statement (SQL)
    if claim is None:
        return [(batch_id, None) for batch_id in batches.due(now, 64)]
    due_now: list[tuple[str, tuple[Batch, Work] | None]] = []
    for batch_id, (batch, work), project in claim(now, 64):
        due_now.append((batch_id, None if work is None else (batch, work)))
        if held is not None:
            held.projects[batch_id] = project
    return due_now


def _as_stored(
    batches: BatchStore, ids: list[str]
) -> dict[str, tuple[BatchStatus, int]]:
    """The stored status and epoch of each of ``ids`` that has work left."""
    read = getattr(batches, "_as_stored", None)  # one statement (SQL)
    if read is not None:
        found: dict[str, tuple[BatchStatus, int]] = read(ids)
        return found
    stored = {}
    for batch_id in ids:
        batch, work = snapshot(batches, batch_id)
        if batch is not None and work is not None:
            stored[batch_id] = (batch.status, work.epoch)
    return stored


def _chain(emu: Service, held: _Held, batch_id: str, now: int) -> None:
    """Step the batch on while its next work is due by ``now``: its moves held too.

    Each step starts from the batch and work its last held write left (no
    read: nobody else has seen them yet), and is a conditional write of its
    own on the epoch that write moved on to; so every status and stamp is
    written in its turn, in one transaction with the others (a write refused
    refuses the ones after it). A run of at most :data:`REQUESTS_PER_STEP`
    requests in all, as one step's: then the other due batches have theirs.
    """
    first = held.latest.get(batch_id)
    while (state := held.latest.get(batch_id)) is not None:
        work = state[1]
        ran = 0 if first is None else work.done - first[1].done
        if work.due_at > now or ran >= REQUESTS_PER_STEP or _drain()():
            return  # (past the pass's deadline: the next pass goes on)
        if is_async(emu.handler) and held.writes:
            # An async run asks the store whether its batch still runs (a
            # cancel stops it): what is held is committed first, else a
            # start not yet stored reads as a stop, and the requests already
            # dispatched would be sent again.
            held.flush()
            if held.latest.get(batch_id) is not state:
                return
        _step_safely(emu, batch_id, now, state)
        if held.latest.get(batch_id) is state:  # nothing held: no further step
            return


class _Held:
    """Conditional writes of the worker held for one transaction, and flushed.

    What is held is in flight: a crash loses it, and the requests whose
    answers it holds run again. So it is flushed once it holds
    :data:`REQUESTS_PER_WRITE` answers or its first write is
    :data:`SECONDS_PER_WRITE` old, and at the end of each pass.
    """

    def __init__(self, batches: BatchStore) -> None:
        self.batches = batches
        self.writes: list[HeldWrite] = []
        self.answers = 0
        self.size = 0  # bytes of the result lines held
        self.began = 0.0
        #: Each batch's state after its last write held (or made) in the
        #: pass, while the batch goes on: where a chained step starts.
        self.latest: dict[str, tuple[Batch, Work]] = {}
        #: Input files read in the pass (their expiry never changes; a
        #: deleted one is told by reading its content).
        self.inputs: dict[str, FileObject] = {}
        #: The content of small input files read whole in the pass (a
        #: batch validated, then run in the same pass, reads it once), at
        #: most :data:`CONTENT_HELD_BYTES` in all.
        self.contents: dict[str, bytes] = {}
        self.content_size = 0
        #: The project of each batch claimed for the pass, and the input
        #: files looked up of each project: batches of one input look once.
        self.projects: dict[str, str] = {}
        self.input_files: dict[tuple[str, str], FileObject | None] = {}
        #: When the claim read the batches of the pass, or they were read
        #: again (see :meth:`still_as_read`), and what that read found.
        self.claimed_at = time.monotonic()
        self.stored: dict[str, tuple[BatchStatus, int]] | None = None
        #: Each batch's last held write: its place in :attr:`writes`.
        self.place: dict[str, int] = {}
        #: The batches none of whose result lines are stored: they left
        #: validation in what is held (lines are written by runs alone).
        self.unstored: set[str] = set()

    def read(self, files: FileStore, file_id: str, at: int) -> bytes | None:
        """``files.read(file_id, at, READ_BYTES)``; a small file once a pass."""
        whole = self.contents.get(file_id)
        if whole is not None:
            return whole[at : at + READ_BYTES]
        data = files.read(file_id, at, READ_BYTES)
        if data is None or at or len(data) >= READ_BYTES:
            return data
        if self.content_size + len(data) <= CONTENT_HELD_BYTES:
            self.contents[file_id] = data  # the whole file: it ends within
            self.content_size += len(data)
        return data

    def hold(self, write: HeldWrite, answers: int, filed: bool = False) -> None:
        """Hold ``write``; merged into the batch's held write it steps on from.

        A step from the state the batch's last held write left (its epoch
        that write's, moved on) is merged into that write: one statement,
        its epoch moved on by both's steps, the lines of both; what commits
        is what the two would have committed, in one round trip. ``filed``:
        ``write`` ends the batch and its files hold the lines of the write
        it merges into (:meth:`lines_to_file`), which are stored no more.
        """
        if not self.writes:
            self.began = time.monotonic()
        place = self._merges(write.batch.id, write.status, write.epoch)
        if place is not None:
            last = self.writes[place]
            kept = () if filed else last.output, () if filed else last.errors
            self.writes[place] = HeldWrite(
                write.batch, write.work, last.status, last.epoch,
                output=(*kept[0], *write.output), errors=(*kept[1], *write.errors),
                files=(*last.files, *write.files), steps=last.steps + write.steps,
            )  # fmt: skip
        else:
            assert not filed, "filed lines of a write it does not merge into"
            self.place[write.batch.id] = len(self.writes)
            self.writes.append(write)
        if write.status is S.VALIDATING:
            self.unstored.add(write.batch.id)
        self.answers += answers
        self.size += sum(map(len, write.output)) + sum(map(len, write.errors))
        if write.work is None:
            self.latest.pop(write.batch.id, None)
        else:  # every write that happens moves the epoch on
            moved = attrs.evolve(write.work, epoch=write.epoch + 1)
            self.latest[write.batch.id] = (write.batch, moved)

    def _merges(self, batch_id: str, status: BatchStatus, epoch: int) -> int | None:
        """The place of the held write a write from ``status``/``epoch`` merges into."""
        place = self.place.get(batch_id)
        if place is None:
            return None
        last = self.writes[place]
        steps_on = last.work is not None and status is last.batch.status
        return place if steps_on and epoch == last.epoch + last.steps else None

    def still_as_read(self, batch: Batch, work: Work) -> bool:
        """Whether ``batch`` is stored as this pass's steps of it read it.

        True without a read while the claim is at most
        :data:`CLAIM_FRESH_SECONDS` old; after that, the stored status and
        epoch of every batch of the claim are read again (one statement, as
        old as the claim may be, again). They are compared with those the
        batch's held write is conditional on or (none held) those of
        ``work``. Before a run of requests: a cancel (or another process's
        write) since the claim read it is seen before a request is sent.
        """
        if time.monotonic() - self.claimed_at > CLAIM_FRESH_SECONDS:
            self.stored = _as_stored(self.batches, list(self.projects))
            self.claimed_at = time.monotonic()
        if self.stored is None or batch.id not in self.projects:
            return True  # as the claim read it, a moment ago
        place = self.place.get(batch.id)
        held = None if place is None else self.writes[place]
        status, epoch = (batch.status, work.epoch) if held is None else (
            held.status, held.epoch
        )  # fmt: skip
        return self.stored.get(batch.id) == (status, epoch)

    def lines_to_file(
        self, batch_id: str, status: BatchStatus, epoch: int
    ) -> tuple[bytes, bytes] | None:
        """The lines (output, errors) an end from ``status``/``epoch`` files itself.

        Those of the held write it merges into (see :meth:`hold`): held
        with them, it puts them in its result files after those stored.
        None if it merges into none (then what is held is stored first).
        """
        place = self._merges(batch_id, status, epoch)
        if place is None:
            return None
        last = self.writes[place]
        return _text(last.output), _text(last.errors)

    def result_size(self, batch_id: str, kind: str) -> int:
        """Bytes of ``batch_id``'s result lines of ``kind`` held, not stored yet."""
        return sum(
            len(line.encode()) + 1
            for w in self.writes
            if w.batch.id == batch_id
            for line in (w.output if kind == "output" else w.errors)
        )

    def full(self) -> bool:
        """Whether what is held makes up a group: then it is flushed."""
        return (
            self.answers >= REQUESTS_PER_WRITE
            or self.size >= RESULT_BYTES_PER_WRITE
            or time.monotonic() - self.began >= SECONDS_PER_WRITE
        )

    def flush(self) -> dict[str, bool]:
        """Commit what is held; whether each batch's last held write happened."""
        writes, self.writes, self.answers, self.size = self.writes, [], 0, 0
        self.place.clear()
        self.unstored.clear()  # their lines are stored now
        self.stored = None  # and their status and epoch moved on
        if not writes:
            return {}
        try:
            done = self.batches.write_many(writes)  # type: ignore[attr-defined]
        except StoreUnavailable:
            raise  # lost: their work is due still, and runs again
        except Exception:  # noqa: BLE001 - one write's failure: each on its own
            log.warning("writing %d steps at once failed; one by one", len(writes))
            done = [_write_alone(self.batches, w) for w in writes]
            for w in writes:
                if w.steps > 1:  # alone, its epoch moved on once: read it again
                    self.latest.pop(w.batch.id, None)
        for w, ok in zip(writes, done, strict=True):
            if not ok:  # the batch moved on meanwhile: no step starts from it
                self.latest.pop(w.batch.id, None)
        return {w.batch.id: ok for w, ok in zip(writes, done, strict=True)}


def _write_alone(batches: BatchStore, w: HeldWrite) -> bool:
    try:
        return batches.write(
            w.batch, w.work, status=w.status, epoch=w.epoch,
            output=w.output, errors=w.errors, files=w.files,
        )  # fmt: skip
    except StoreUnavailable:
        raise
    except Exception:  # one batch's failure stays its own
        log.exception("batch %s: its work failed; it waits for expiry", w.batch.id)
        _set_aside(batches, w.batch.id)
        return False


#: The writes the worker holds on this thread (a pass of :func:`run_due`).
_held = threading.local()


def _write(
    batches: BatchStore, write: HeldWrite, answers: int = 0, filed: bool = False
) -> bool | None:
    """A worker's conditional write: made now, or held (None) for a pass's commit.

    ``filed``: see :meth:`_Held.hold`.
    """
    held = _held_writes()
    if held is None or held.batches is not batches:
        return _write_alone_raising(batches, write)
    held.hold(write, answers, filed)
    if held.full():
        return held.flush().get(write.batch.id)
    return None


def _write_alone_raising(batches: BatchStore, w: HeldWrite) -> bool:
    return batches.write(
        w.batch, w.work, status=w.status, epoch=w.epoch,
        output=w.output, errors=w.errors, files=w.files,
    )  # fmt: skip


def _held_writes() -> _Held | None:
    """The writes held by this thread's pass over due work, if one runs."""
    held: _Held | None = getattr(_held, "writes", None)
    return held


def _flush_old() -> dict[str, bool]:
    """Commit the writes held on this thread if the first is a group's age."""
    held = _held_writes()
    if held is None or not held.writes:
        return {}
    if time.monotonic() - held.began < SECONDS_PER_WRITE:
        return {}
    return held.flush()


def _drain(deadline: float | None = None) -> Callable[[], bool]:
    """Whether an async run stops sending: the pass's deadline passed.

    Those in flight are answered and written; the rest run at the next
    step, in the next pass (see :data:`PASS_SECONDS`). The deadline is
    ``deadline``, else that of the pass :func:`run_due` is making.
    """
    if deadline is None:
        deadline = getattr(_held, "deadline", None)
    if deadline is None:
        return lambda: False
    return lambda: time.monotonic() >= deadline


def _pending() -> tuple[int, int, float | None]:
    """The answers held on this thread, their bytes, and when the first was held."""
    held = _held_writes()
    if held is None or not held.writes:
        return 0, 0, None
    return held.answers, held.size, held.began


def _step_safely(
    emu: Service,
    batch_id: str,
    now: int,
    state: tuple[Batch, Work] | None = None,
) -> None:
    try:
        _step(emu, batch_id, now, state)
    except StoreUnavailable:
        raise  # no fault of the batch: it stays due, and is run when the store is back
    except Exception:  # one batch's failure stays its own
        log.exception("batch %s: its work failed; it waits for expiry", batch_id)
        try:
            held = _held_writes()
            if held is not None:  # set aside as stored, its held steps with it
                held.flush()
                held.latest.pop(batch_id, None)
            _set_aside(emu.batches, batch_id)
        except StoreUnavailable:
            raise  # set aside when the store is back, if it fails again
        except Exception:  # pragma: no cover - the store itself fails
            log.exception("batch %s: could not be set aside", batch_id)


def _set_aside(batches: BatchStore, batch_id: str) -> None:
    # A batch whose work failed waits for its expiry, then for nothing: its
    # due time moves on, so the worker never loops on it.
    batch, work = snapshot(batches, batch_id)
    if batch is None or work is None:
        return
    assert batch.expires_at is not None
    at = batch.expires_at if work.due_at < batch.expires_at else NEVER
    batches.write(
        batch, attrs.evolve(work, due_at=at), status=batch.status, epoch=work.epoch
    )


def _step(
    emu: Service, batch_id: str, now: int, state: tuple[Batch, Work] | None = None
) -> None:
    """Do the work of a batch due by ``now`` (one move, or a run of requests).

    ``state``: the batch and work to start from (see :func:`_chain`); else
    they are read.
    """
    batch, work = state or snapshot(emu.batches, batch_id)
    if batch is None or work is None or work.due_at > now:
        return  # it moved since the index was read
    if work.due_at == RESUME:  # set aside by an older batchfsm: due again
        again = attrs.evolve(work, due_at=due(emu, batch, work.done))
        _write(emu.batches, HeldWrite(batch, again, batch.status, work.epoch))
        return
    at, status = work.due_at, batch.status
    assert batch.expires_at is not None
    # Requests that take no emulated time (a gateway's: the upstream sets
    # the pace) are never due past the expiry: the clock says when it came.
    late = emu.request_seconds == 0 and emu.clock.now() >= batch.expires_at
    if status is S.CANCELLING:
        _end(emu, batch, work, Event.MARK_CANCELLED, at, "batch_cancelled")
    elif at >= batch.expires_at or late:
        at = max(at, batch.expires_at)
        _end(emu, batch, work, Event.EXPIRE, at, "batch_expired")
    elif status is S.VALIDATING:
        _validate(emu, batch, work, at)
    elif status is S.IN_PROGRESS and work.done < total(batch):
        _run_requests(emu, batch, work, now)
    elif status is S.IN_PROGRESS:
        after = advance(batch, Event.FINALIZE, at=at)
        moved = attrs.evolve(work, due_at=due(emu, after, work.done))
        _write(emu.batches, HeldWrite(after, moved, status, work.epoch))
    else:
        _end(emu, batch, work, Event.COMPLETE, at, None)


def _lines(
    files: FileStore, file_id: str, offset: int, size: int | None = None
) -> Iterator[tuple[int, bytes]]:
    # ``size``: the file's (its File object's), read up to it: no read to
    # find the end.
    def chunks() -> Iterator[bytes]:
        at = offset
        while size is None or at < size:
            held = _held_writes()
            if held is None:
                data = files.read(file_id, at, READ_BYTES)
            else:
                data = held.read(files, file_id, at)
            if data is None:
                raise _InputGoneError(file_id)
            if not data:
                return
            at += len(data)
            yield data

    return iter_lines(chunks(), offset)


def _validate(emu: Service, batch: Batch, work: Work, at: int) -> None:
    # Less the grace that keeps a client's own round trips (its upload, then
    # its create) from expiring the file before it is read at extreme speeds.
    # Only a file of the batch's own project: another's is as good as missing.
    file = _input_of(emu, batch)
    _remember_input(file)
    if file is not None and not is_live(file, at - emu.input_grace_seconds):
        file = None  # expired before validation: as good as missing
    errors: list[BatchError] = []
    if file is not None and file.bytes > MAX_BYTES:
        errors = [file_too_large_error()]
    elif file is not None:
        try:
            outcome = scan_input(
                _lines(emu.files, file.id, 0, file.bytes),
                batch.endpoint,
                None if emu.any_model else emu.models,
                count=prompt_tokens if emu.enqueued_token_limits else None,
            )
        except _InputGoneError:
            file = None
        else:
            errors = outcome.errors
    if file is None:
        errors = [missing_file_error(batch.input_file_id)]
    if errors:
        failed = advance(
            batch, Event.FAIL, at=at, errors=BatchErrors(data=tuple(errors))
        )
        _write(emu.batches, HeldWrite(failed, None, batch.status, work.epoch))
        return
    started = advance(
        batch,
        Event.START,
        at=at,
        model=outcome.model,
        request_counts=BatchRequestCounts(total=outcome.total, completed=0, failed=0),
    )
    moved = attrs.evolve(work, due_at=due(emu, started, 0))
    limit = limit_for(emu.enqueued_token_limits, outcome.model)
    if limit is None:
        _write(emu.batches, HeldWrite(started, moved, batch.status, work.epoch))
        return
    # The check and the hold in one write: the model's enqueued batches never
    # hold more than its limit, whoever else is starting batches meanwhile.
    enqueued = emu.batches.enqueue(
        started,
        moved,
        status=batch.status,
        epoch=work.epoch,
        tokens=outcome.tokens,
        limit=limit,
    )
    if enqueued == "full":
        error = token_limit_error(outcome.model, limit)
        failed = advance(batch, Event.FAIL, at=at, errors=BatchErrors(data=(error,)))
        _write(emu.batches, HeldWrite(failed, None, batch.status, work.epoch))


def _input_of(emu: Service, batch: Batch) -> FileObject | None:
    """The batch's input file if it is of the batch's own project, else None.

    Looked up once a pass for the batches of one project and one input.
    """
    held = _held_writes()
    project = None if held is None else held.projects.get(batch.id)
    if held is not None and project is not None:
        key = (batch.input_file_id, project)
        if key not in held.input_files:
            held.input_files[key] = emu.files.get(key[0], project=project)
        return held.input_files[key]
    of_batch = getattr(emu.files, "of_batch", None)
    if of_batch is not None and emu.files is getattr(emu.batches, "files", None):
        found: FileObject | None = of_batch(batch.input_file_id, batch.id)
        return found  # one statement: files and batches in one database
    project = emu.batches.project(batch.id)
    if project is None:
        return None
    return emu.files.get(batch.input_file_id, project=project)


def _remember_input(file: FileObject | None) -> None:
    """Keep the input's File object for the pass (see :func:`_gone_at`)."""
    held = _held_writes()
    if file is not None and held is not None:
        held.inputs[file.id] = file


def _custom_id(raw: bytes) -> str | None:
    try:
        custom_id = _json.decode(raw)["custom_id"]
    except Exception:  # noqa: BLE001 - nested too deep to read back
        return None
    return custom_id if isinstance(custom_id, str) else None


def output_limit_line(ids: IdSource, raw: bytes, limit: int) -> str:
    """The error line of a request past its batch's output bound (not stored)."""
    message = (
        f"The batch's results reached this server's limit of {limit} bytes; "
        "this request's answer was not stored."
    )
    return result_line(
        ids, _custom_id(raw), None, ("batch_output_limit_exceeded", message)
    )


@attrs.define
class _Run:
    """What one run of a batch's requests did so far: the work's counts, moving."""

    work: Work
    limit: int | None
    output: list[str] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    size: int = 0  # bytes of this run's result lines

    def record(
        self,
        emu: Service,
        endpoint: str,
        raw: bytes,
        at: int,
        answered: tuple[str, Reply] | None = None,
    ) -> None:
        """Run one request (unless past the output bound) and record its line.

        ``answered``: its line and reply, when an async handler ran it already.
        """
        work, limit = self.work, self.limit
        full = work.output_full
        if not full:
            if answered is None:
                handler: Handler = emu.handler  # type: ignore[assignment]
                answered = answer(handler, emu.ids, endpoint, raw, at)
            line, reply = answered
            full = limit is not None and work.result_bytes + len(line) + 1 > limit
        if full:  # past the bound: not run, or its answer not kept
            assert limit is not None
            line = output_limit_line(emu.ids, raw, limit)
            self.errors.append(line)
            # Stored too (the error file): counted as every result line is,
            # though the bound never holds them back.
            self.work = attrs.evolve(
                work,
                done=work.done + 1,
                failed=work.failed + 1,
                output_full=True,
                result_bytes=work.result_bytes + len(line) + 1,
            )
        else:
            ok = 200 <= reply.status_code < 300
            (self.output if ok else self.errors).append(line)
            self.work = attrs.evolve(
                work,
                done=work.done + 1,
                completed=work.completed + ok,
                failed=work.failed + (not ok),
                input_tokens=work.input_tokens + reply.input_tokens,
                output_tokens=work.output_tokens + reply.output_tokens,
                result_bytes=work.result_bytes + len(line) + 1,  # ASCII: json escapes
            )
        self.size += len(line)


def _group_full(run: _Run, began: float) -> bool:
    """Whether the answered requests not yet written make up a whole group.

    With those held for the pass's commit (see :func:`run_due`): together
    they are the requests in flight.
    """
    answers, size, first = _pending()
    if first is not None:
        began = min(began, first)
    return (
        len(run.output) + len(run.errors) + answers >= REQUESTS_PER_WRITE
        or run.size + size >= RESULT_BYTES_PER_WRITE
        or time.monotonic() - began >= SECONDS_PER_WRITE
    )


def _run_requests(emu: Service, batch: Batch, work: Work, now: int) -> None:
    """One step of a batch's requests: those due by ``now``, in groups.

    The step runs at most :data:`REQUESTS_PER_STEP` requests (then the other
    due batches have theirs: the order in which due work runs depends on
    the emulated time alone). Its answers are written in groups, each one
    conditional write (the results and the work's counts and offset
    together): a group is written once it holds :data:`REQUESTS_PER_WRITE`
    answers, :data:`RESULT_BYTES_PER_WRITE` bytes of result lines, or its
    first answer is :data:`SECONDS_PER_WRITE` old, and at the step's end.
    So a crash loses at most the answers of one group not yet written (the
    requests in flight): those are run again, none before them.
    """
    held = _held_writes()
    if held is not None and not held.still_as_read(batch, work):
        return  # it moved on since the claim (a cancel): the next pass reads it
    if is_async(emu.handler):
        # Imported here: the chunks' module builds on this one.
        from ._chunks import hold

        if not hold(emu, batch, work):
            _run_async(emu, batch, work, now)
    else:
        _run_sync(emu, batch, work, now)


def _run_sync(emu: Service, batch: Batch, work: Work, now: int) -> None:
    """A synchronous handler's run: one request after another."""
    assert batch.in_progress_at is not None
    assert batch.expires_at is not None
    requests = total(batch)
    run = _Run(work, emu.max_output_bytes)
    gone_at = _gone_at(emu, batch.input_file_id)
    ran, began, offset = 0, time.monotonic(), work.offset
    try:
        for offset, raw in _unrun(emu.files, batch.input_file_id, work):
            if is_blank(raw):
                continue
            at = batch.in_progress_at + (run.work.done + 1) * emu.request_seconds
            if at >= gone_at:
                raise _InputGoneError(batch.input_file_id)
            if not (run.output or run.errors):
                began = time.monotonic()  # the group's first answer
            run.record(emu, batch.endpoint, raw, at)
            ran += 1
            following = at + emu.request_seconds
            if (
                run.work.done >= requests
                or ran >= REQUESTS_PER_STEP
                or following > now
                or following >= batch.expires_at
            ):
                break
            if _group_full(run, began):
                written = _write_run(emu, batch, work, run, offset)
                if written is None:
                    return  # the batch moved on (a cancel, a takeover): stop
                batch, work = written
                run = _Run(work, emu.max_output_bytes)
    except _InputGoneError:
        # The input was deleted or expired mid-run: what it held can no
        # longer run.
        _input_gone(run, requests)
    _write_run(emu, batch, work, run, offset)


def _input_gone(run: _Run, requests: int) -> None:
    w = run.work
    run.work = attrs.evolve(w, done=requests, failed=w.failed + requests - w.done)


def _unrun(files: FileStore, file_id: str, work: Work) -> Iterator[tuple[int, bytes]]:
    """The lines not run yet: from ``work.offset``, less those run ahead of it."""
    ahead = frozenset(work.ahead)
    for end, raw in _lines(files, file_id, work.offset):
        if end not in ahead:
            yield end, raw


def _unrun_lines(emu: Service, batch: Batch, work: Work) -> Iterator[bytes]:
    """The batch's lines not run yet: after its offset, or in its chunks."""
    if work.chunks:
        from ._chunks import unrun  # here: the chunks' module builds on this one

        yield from unrun(emu, batch)
        return
    for _, raw in _unrun(emu.files, batch.input_file_id, work):
        yield raw


def _write_run(
    emu: Service,
    batch: Batch,
    work: Work,
    run: _Run,
    offset: int,
    ahead: tuple[int, ...] = (),
) -> tuple[Batch, Work] | None:
    """Write a group of answers: the batch and work after it, or None if refused.

    ``offset``: every line before it has run; ``ahead``: the ends of the
    lines after it that ran too (an async run's answers come in any order).
    """
    kept = tuple(sorted({*run.work.ahead, *ahead}))
    moved = attrs.evolve(
        run.work, offset=offset, ahead=tuple(a for a in kept if a > offset)
    )
    # Work in progress is not a move: counts and usage grow, nothing else.
    after = progress(batch, request_counts=counts(batch, moved), usage=usage(moved))
    moved = attrs.evolve(moved, due_at=due(emu, after, moved.done))
    write = HeldWrite(after, moved, batch.status, work.epoch, run.output, run.errors)
    if _write(emu.batches, write, len(run.output) + len(run.errors)) is False:
        return None
    # Every write that happens moves the epoch on: the next group names it.
    return after, attrs.evolve(moved, epoch=work.epoch + 1)


@attrs.frozen
class _Taken:
    """The run of request lines due now: each ``(at, raw, end)``, and its end."""

    lines: list[tuple[int, bytes, int]]
    offset: int
    gone: bool  # the input went away before the run's end


def _take(emu: Service, batch: Batch, work: Work, now: int, most: int) -> _Taken:
    """The lines due by ``now``, at most ``most``, as the sync run would take them."""
    assert batch.in_progress_at is not None
    assert batch.expires_at is not None
    requests, done, offset = total(batch), work.done, work.offset
    gone_at = _gone_at(emu, batch.input_file_id)
    lines: list[tuple[int, bytes, int]] = []
    try:
        for offset, raw in _unrun(emu.files, batch.input_file_id, work):
            if is_blank(raw):
                continue
            at = batch.in_progress_at + (done + 1) * emu.request_seconds
            if at >= gone_at:
                return _Taken(lines, offset, True)
            lines.append((at, raw, offset))
            done += 1
            following = at + emu.request_seconds
            if (
                done >= requests
                or len(lines) >= most
                or following > now
                or following >= batch.expires_at
            ):
                break
    except _InputGoneError:
        return _Taken(lines, offset, True)
    return _Taken(lines, offset, False)


def _request(endpoint: str, raw: bytes, at: int) -> RequestLine | None:
    custom_id, body = parse(raw)
    if not isinstance(custom_id, str) or not isinstance(body, dict):
        return None
    return RequestLine(custom_id, "POST", endpoint, body, at)


def _stopper(
    emu: Service, batch: Batch, now: int, refused: list[bool]
) -> Callable[[], bool]:
    """Whether to stop a run: a cancel came, the window ended, or a write was refused.

    The window's end stops a run only while its requests take no emulated
    time (``request_seconds`` 0, as under ``--upstream``).
    Requests that take emulated time (``request_seconds``) meet the expiry
    by their own times (:func:`_take`), as the synchronous run does, so a
    virtual clock gives the same batches; a clock that was past the expiry
    when the run began never stops it (the run's requests are all due).
    A write of the run's answers refused (a cancel, a takeover moved the
    epoch on): the batch is not this run's any more (``refused``).
    """
    assert batch.expires_at is not None
    expires_at = batch.expires_at
    timed_by_clock = emu.request_seconds == 0 and now < expires_at

    def stop() -> bool:
        if refused[0] or (timed_by_clock and emu.clock.now() >= expires_at):
            return True
        stored = emu.batches.get(batch.id)
        return stored is None or stored.status is not S.IN_PROGRESS

    return stop


@attrs.define
class _Streamed:
    """An async run's answers as they come, written in groups as they fill."""

    emu: Service
    batch: Batch
    work: Work
    taken: _Taken
    run: _Run
    answered: list[bool]  # by index in the run's lines
    began: float = 0.0  # when the group's first answer came
    prefix: int = 0  # the run's leading lines all answered (and written)
    unwritten: list[int] = attrs.Factory(list)  # indexes answered, not yet written

    def record(
        self, index: int, request: RequestLine | None, reply: Reply | None
    ) -> None:
        """Record one answer in the group being made."""
        at, raw, _ = self.taken.lines[index]
        if reply is None:
            reply = server_error(ValueError("the request line cannot be read"))
        custom_id = None if request is None else request.custom_id
        if not self.unwritten:
            self.began = time.monotonic()
        line = written(self.emu.ids, custom_id, reply)
        self.run.record(self.emu, self.batch.endpoint, raw, at, line)
        self.unwritten.append(index)

    def marks(self) -> tuple[int, tuple[int, ...]]:
        """Mark the group's lines answered; where the run stands now.

        The offset before which every line was answered, and the ends of
        the lines past it that were.
        """
        for index in self.unwritten:
            self.answered[index] = True
        self.unwritten = []
        lines, answered = self.taken.lines, self.answered
        while self.prefix < len(lines) and answered[self.prefix]:
            self.prefix += 1
        offset = lines[self.prefix - 1][2] if self.prefix else self.work.offset
        ahead = tuple(
            lines[i][2] for i in range(self.prefix, len(lines)) if answered[i]
        )
        return offset, ahead

    def write(self, last: bool) -> bool:
        """Write the group: whether it was (False: the batch moved on)."""
        offset, ahead = self.marks()
        if last:
            if self.taken.gone:
                _input_gone(self.run, total(self.batch))
            offset = self.taken.offset
        written = _write_run(self.emu, self.batch, self.work, self.run, offset, ahead)
        if written is None:
            return False
        self.batch, self.work = written
        self.run = _Run(self.work, self.emu.max_output_bytes)
        return True


def _run_async(emu: Service, batch: Batch, work: Work, now: int) -> None:
    """An async handler's run: up to ``emu.concurrency`` requests at a time.

    Answers are written in groups as they come (in whatever order they
    finish), like the synchronous run's: a crash re-sends only the requests
    whose answers were not written yet. A cancel (or the expiry) stops the
    dispatching at once: the answers not written yet are dropped (the
    requests in flight with them), and the next step ends the batch.
    """
    most = max(REQUESTS_PER_STEP, 16 * emu.concurrency)
    taken = _take(emu, batch, work, now, most)
    requests = [_request(batch.endpoint, raw, at) for at, raw, _ in taken.lines]
    if work.output_full:  # past the output bound: none of them runs
        requests = [None] * len(requests)
    refused = [False]
    stop = _stopper(emu, batch, now, refused)
    run = _Streamed(
        emu,
        batch,
        work,
        taken,
        _Run(work, emu.max_output_bytes),
        [False] * len(requests),
    )
    _stream(emu, requests, run, stop, refused, _drain())


def _stream(
    emu: Service,
    requests: list[RequestLine | None],
    run: _Streamed,
    stop: Callable[[], bool],
    refused: list[bool],
    drain: Callable[[], bool] = lambda: False,
) -> None:
    """Send ``requests`` to the async handler; ``run`` writes the answers in groups.

    A group is written once full, and what the pass holds once a while
    passes without answers; a write refused (the batch moved on) or
    ``stop`` ends the sending, the answers not written dropped. ``drain``
    ends it too, the answers of the requests in flight written: the lines
    not sent are left for the next step.
    """
    replies = Replies(emu.handler, requests, emu.concurrency, stop, drain)  # type: ignore[arg-type]
    got = 0
    try:
        while (came := replies.take(SECONDS_PER_WRITE)) is not None:
            got += len(came)
            for index, reply in came:
                run.record(index, requests[index], reply)
            if run.unwritten and _group_full(run.run, run.began):
                refused[0] = not run.write(last=False)
            elif not came:  # a while without answers: what is held goes now
                refused[0] = _flush_old().get(run.batch.id) is False
            if refused[0]:
                return
            if came:  # let some answers gather: a wake per answer costs the loop
                time.sleep(GATHER_SECONDS)
    finally:
        replies.close()
    if not stop():
        run.write(last=got == len(requests))  # else drained: the rest not sent


def _end(
    emu: Service,
    batch: Batch,
    work: Work,
    event: Event,
    at: int,
    unfinished: str | None,
) -> bool | None:
    """End the batch by ``event``; whether it was written (None: held)."""
    if batch.status is S.VALIDATING:
        after = advance(batch, event, at=at)
        return _write(emu.batches, HeldWrite(after, None, batch.status, work.epoch))
    late: list[bytes] = []
    done, failed = work.done, work.failed
    if unfinished is not None and done < total(batch):
        error = (unfinished, UNFINISHED[unfinished])
        try:
            if at >= _gone_at(emu, batch.input_file_id):
                raise _InputGoneError(batch.input_file_id)
            for raw in _unrun_lines(emu, batch, work):
                if is_blank(raw):
                    continue
                line = result_line(emu.ids, _custom_id(raw), None, error)
                late.append(line.encode() + b"\n")
                done, failed = done + 1, failed + 1
        except _InputGoneError:
            pass
        failed += total(batch) - done
        done = total(batch)
    ended = attrs.evolve(work, done=done, failed=failed)
    changes: dict[str, Any] = {
        "request_counts": counts(batch, ended),
        "usage": usage(ended),
    }
    files: list[NewFile] = []
    results, filed = _results(emu.batches, batch, work, b"".join(late))
    kinds: tuple[tuple[ResultKind, str], ...] = (
        ("output", "output_file_id"), ("errors", "error_file_id"),
    )  # fmt: skip
    for kind, named in kinds:
        size, content = results[kind]
        if size:
            file, _ = result_file(emu.ids, batch, work, size, kind, at)
            files.append((file, content))
            changes[named] = file.id
    after = advance(batch, event, at=at, **changes)
    # The files go in the same conditional write: a lost race or a crash
    # never leaves a result file that no batch names.
    held = HeldWrite(after, None, batch.status, work.epoch, files=files)
    return _write(emu.batches, held, filed=filed)


def _results(
    batches: BatchStore, batch: Batch, work: Work, late: bytes
) -> tuple[dict[ResultKind, tuple[int, Content | ResultLines]], bool]:
    """Each kind's result lines as the write that ends ``batch`` files them.

    Their bytes and content: those stored (the store moves them, a piece at
    a time: never held whole; the epoch fences what is counted here), then
    those held, then ``late`` (error lines). And whether the end files the
    held lines itself (see :meth:`_Held.hold`): it merges into the held
    write that holds them. A batch none of whose lines are stored (it left
    validation in what is held) has them filed as they are: they never go
    through the store's rows of result lines, nor is the store asked.
    """
    held = _held_writes()
    if held is not None and held.batches is not batches:
        held = None
    lines = None
    if held is not None:
        lines = held.lines_to_file(batch.id, batch.status, work.epoch)
    output, errors = lines or (b"", b"")
    errors += late
    if held is not None and lines is not None and batch.id in held.unstored:
        return {"output": (len(output), output), "errors": (len(errors), errors)}, True
    both = getattr(batches, "_result_sizes", None)  # one statement (SQL)
    sizes: dict[ResultKind, int] = (
        both(batch.id)
        if both is not None
        else {k: batches.result_size(batch.id, k) for k in ("output", "errors")}
    )
    if held is not None and lines is None:  # stored before the end: counted
        for kind in sizes:
            sizes[kind] += held.result_size(batch.id, kind)
    return {
        "output": (
            sizes["output"] + len(output),
            ResultLines(batch.id, "output", output),
        ),
        "errors": (
            sizes["errors"] + len(errors),
            ResultLines(batch.id, "errors", errors),
        ),
    }, lines is not None


def _text(lines: Sequence[str]) -> bytes:
    """Result lines as a result file holds them: each ending in a newline."""
    return "".join(f"{line}\n" for line in lines).encode()


def end_now(
    emu: Service, batch_id: str, event: Event, errors: BatchErrors | None, now: int
) -> bool:
    """End ``batch_id`` at ``now`` by ``event`` (``fail`` or ``expire``).

    Whether it was written: False if the batch moved meanwhile (read it again
    and decide again). An expiry is stamped no earlier than ``expires_at``.

    Raises:
        InvalidTransition: ``event`` does not leave the batch's status.
    """
    batch, work = snapshot(emu.batches, batch_id)
    if batch is None:
        return True  # deleted meanwhile: nothing left to end
    assert batch.expires_at is not None
    if event is Event.EXPIRE:
        now = max(now, batch.expires_at)
    if work is None or event is Event.FAIL or batch.status is S.CANCELLING:
        changes = {} if errors is None else {"errors": errors}
        after = advance(batch, event, at=now, **changes)  # refuses what cannot move
        if work is None:  # pragma: no cover - advance refused a batch that ended
            return True
        return emu.batches.write(after, None, status=batch.status, epoch=work.epoch)
    # Written now, whatever a pass of the worker on this thread holds.
    held, _held.writes = _held_writes(), None
    try:
        return bool(_end(emu, batch, work, event, now, "batch_expired"))
    finally:
        _held.writes = held
