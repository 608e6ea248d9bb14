"""Where the emulator keeps its state: three store interfaces, in memory.

The emulator holds nothing of its own between calls: everything lives behind
these interfaces, so a SQL store (SQLite, PostgreSQL) can replace the memory
one and a restarted server carries on.

- :class:`BatchStore`: batches, each unfinished batch's work in progress
  (:class:`Work`: how far it got, counts, usage, its next due time) and the
  result lines written so far. Every change is **one conditional write**
  (:meth:`BatchStore.write`): it happens only if the stored batch still has the
  status the writer read and its work still has the epoch the writer read, and
  every write that happens moves the epoch on. So of two writers that read the
  same batch — a cancel racing the worker's progress, or a stalled worker whose
  lease was taken over — only the first to write wins; the other is refused,
  reads again and decides again. The store also answers "which batches are due
  at or before T" (:meth:`BatchStore.due`) without looking at the others: a
  heap in memory, an indexed column in SQL. A batch ends with its result files
  in the same write (``files=``), added to the store's own :class:`FileStore`
  (``store.files``): a crash or a refused write never leaves a result file that
  no batch names. A batch's start may also hold its prompt tokens against its
  model's enqueued token limit (:meth:`BatchStore.enqueue`): the check and the
  hold are that same conditional write, and the write that ends the batch
  frees them.
- :class:`FileStore`: File objects and their bytes, taken in pieces as they
  arrive (:meth:`FileStore.add`) and readable in slices so that nothing needs
  a whole file in memory at once (the memory store holds each file once),
  listed a page at a time in creation order (:meth:`FileStore.page`), costing
  the page, not the number of files, and purged once expired
  (:meth:`FileStore.purge`), found through an index of expiry times.
- :class:`IdSource`: where ids come from; random unless seeded, never reused.

Every method takes and returns values (frozen objects, bytes, strings, ids),
never a live reference into the store, so each maps onto SQL statements.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import io
import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol

import attrs

from .._errors import BatchFSMError
from .._model import Batch, BatchStatus
from ._content import Content, exactly
from ._events import event_for
from ._outbox import MemoryOutbox
from ._pieces import rows
from ._projects import DEFAULT_PROJECT

__all__ = [
    "BatchStore",
    "Enqueued",
    "FileObject",
    "FileStore",
    "HeldWrite",
    "IdSource",
    "MemoryBatchStore",
    "MemoryFileStore",
    "MemoryIds",
    "ResultKind",
    "ResultLines",
    "StorageFull",
    "Work",
]

#: Which result lines: the output file's (2xx answers) or the error file's.
ResultKind = Literal["output", "errors"]
#: What :meth:`BatchStore.enqueue` did: wrote and held, refused (stale), or
#: found no room under the limit (nothing written).
Enqueued = Literal["enqueued", "stale", "full"]
#: A file to add with a conditional write: its File object and its content
#: (bytes or pieces, or the batch's own result lines).
NewFile = tuple["FileObject", "Content | ResultLines"]
#: A listing's order by creation: oldest first or newest first.
Order = Literal["asc", "desc"]


def _ints(values: Iterable[int]) -> tuple[int, ...]:
    """A tuple of ``values`` (a JSON list read back, say)."""
    return tuple(values)


@attrs.frozen
class Work:
    """The work in progress of one unfinished batch: plain values, no references.

    Attributes:
        due_at: when the batch's next piece of work is due (Unix seconds); the
            store indexes it.
        epoch: the batch's version, and the fencing token. A conditional
            write names the epoch it read; every write that happens moves it
            on (the epoch of the work handed to a write is not stored), and so
            does whoever takes a batch over (a lease in a multi-process store).
            So a write made from anything but the latest read is refused: a
            cancel that read the batch before the worker's progress write, or
            a late write of a stalled holder. Read the work (its epoch) before
            the batch: then a batch newer than the epoch fails the comparison
            rather than being moved from a stale copy.
        done: requests run so far.
        offset: byte offset in the input file of the first line not yet run.
        completed: requests answered 2xx so far.
        failed: requests that failed so far.
        input_tokens: tokens of the requests run so far.
        output_tokens: tokens of their answers.
        output_expires_after: seconds from each result file's own creation to
            its expiry, or None.
        result_bytes: bytes of the result lines of the requests run so far
            (what a bound on a batch's output counts), the error lines of
            those past the bound included.
        output_full: the batch's results reached that bound: its requests
            from then on are not stored.
        ahead: the ends (byte offsets) of the lines after ``offset`` that ran
            already (an async run's answers are written as they come, in
            any order): they are not run again.
        chunks: how many line chunks the batch's requests were split into,
            each claimed and run by any process sharing the store (see
            :mod:`._chunks`); 0: the holder of the batch runs them in order
            (``offset`` and ``ahead`` say how far).
    """

    due_at: int
    epoch: int = 0
    done: int = 0
    offset: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_expires_after: int | None = None
    result_bytes: int = 0
    output_full: bool = False
    ahead: tuple[int, ...] = attrs.field(default=(), converter=_ints)
    chunks: int = 0


@attrs.frozen
class HeldWrite:
    """One conditional write held for a store's ``write_many``: its arguments.

    ``batch``, ``work``, ``status``, ``epoch``, ``output``, ``errors`` and
    ``files`` are :meth:`BatchStore.write`'s. ``steps``: how many writes of
    the batch, one after another, this one stands for (the worker merges a
    batch's consecutive steps held for one transaction into one write): the
    epoch moves on by that many, as if each had been written.

    Example:
        >>> HeldWrite(None, None, status="validating", epoch=0).steps
        1
    """

    batch: Batch
    work: Work | None
    status: BatchStatus
    epoch: int
    output: Sequence[str] = ()
    errors: Sequence[str] = ()
    files: Sequence[NewFile] = ()
    steps: int = 1


@attrs.frozen
class ResultLines:
    """A result file's content as the write that ends a batch names it.

    The batch's own result lines of ``kind`` (:meth:`BatchStore.write`'s
    ``output`` or ``errors`` so far), then ``tail``: the store moves them into
    the new file itself, in the same write, a piece at a time, so a batch's
    results are never held whole on their way to their file. Its size is
    :meth:`BatchStore.result_size` plus ``len(tail)``.

    Example:
        >>> ResultLines("batch_1", "errors", b"late").kind
        'errors'
    """

    batch_id: str
    kind: ResultKind
    tail: bytes = b""


class BatchStore(Protocol):
    """Batches, their work in progress, their result lines, and the due index."""

    @property
    def files(self) -> FileStore:
        """The file store a conditional write adds its ``files`` to."""

    def insert(
        self, batch: Batch, work: Work, *, project: str = DEFAULT_PROJECT
    ) -> None:
        """Add a new batch of ``project`` and its work (a new id: else ``KeyError``)."""

    def get(self, batch_id: str, *, project: str | None = None) -> Batch | None:
        """The batch, or None; None too if it is not ``project``'s (if given)."""

    def project(self, batch_id: str) -> str | None:
        """The project the batch belongs to, or None if there is no such batch."""

    def work(self, batch_id: str) -> Work | None:
        """The batch's work in progress; None if there is no such batch or it ended."""

    def page(
        self, after: str | None, limit: int, *, project: str | None = None
    ) -> tuple[list[Batch], bool]:
        """Up to ``limit`` batches created before ``after``, newest first.

        Also says whether more follow. ``after`` must be a stored batch's id
        (of ``project``, if given). With ``project``, only its batches, at
        the cost of the page, not of the other projects' batches.
        """

    def write(
        self,
        batch: Batch,
        work: Work | None,
        *,
        status: BatchStatus,
        epoch: int,
        output: Sequence[str] = (),
        errors: Sequence[str] = (),
        files: Sequence[NewFile] = (),
    ) -> bool:
        """One conditional write; whether it happened.

        If the stored batch ``batch.id`` has status ``status`` and its work has epoch
        ``epoch``, then atomically: store ``batch``, store ``work`` with the epoch
        moved on to ``epoch + 1`` (its ``due_at`` re-indexed) or, when ``work`` is
        None (the batch ended), drop the work, its index entry, its result lines
        and its hold of enqueued tokens (:meth:`enqueue`);
        append ``output`` and ``errors`` (one result line each, no newline) to the
        batch's result lines; and add ``files`` (its result files) to :attr:`files`,
        in the batch's project, each id new (``KeyError``, and nothing written);
        a file whose content is
        :class:`ResultLines` of this batch gets the batch's result lines of that
        kind (read before they are dropped), moved a piece at a time, never
        whole. Otherwise change nothing
        and return False. The writer read the work before the batch; a writer
        refused reads both again and decides again (the batch moved on).
        """

    def enqueue(
        self,
        batch: Batch,
        work: Work,
        *,
        status: BatchStatus,
        epoch: int,
        tokens: int,
        limit: int,
    ) -> Enqueued:
        """The write that starts a batch, holding ``tokens`` of its model's limit.

        Atomically: if the conditional write ``write(batch, work,
        status=status, epoch=epoch)`` would be refused, write nothing and
        answer ``"stale"``; if the tokens held by the unfinished batches of
        ``batch.model`` plus ``tokens`` are more than ``limit``, write nothing
        and answer ``"full"``; otherwise make the write, hold ``tokens`` for
        the batch until the write that ends it (``work`` None), and answer
        ``"enqueued"``. So the tokens held never pass any limit asked for,
        however many writers enqueue at once. Only needed by an emulator with
        an enqueued token limit.
        """

    def enqueued_tokens(self, model: str) -> int:
        """The tokens the unfinished batches of ``model`` hold (:meth:`enqueue`)."""

    def results(self, batch_id: str, kind: ResultKind) -> bytes:
        """The result lines of ``kind`` written so far, each ending in a newline.

        All of them at once: a batch's end moves them into its file as
        :class:`ResultLines` instead, never held whole.
        """

    def result_size(self, batch_id: str, kind: ResultKind) -> int:
        """The bytes of the result lines of ``kind`` written so far."""

    def due(self, at: int, limit: int) -> list[str]:
        """Ids of up to ``limit`` unfinished batches due at or before ``at``.

        Earliest due first; ties in creation order. Costs what it returns, not
        the number of unfinished batches.
        """

    def earliest_due(self) -> int | None:
        """The earliest due time of the unfinished batches, or None if none.

        Whoever holds them (unlike :meth:`due`, it leases nothing): the
        emulator purges no file expired after it, since a batch behind may
        still read it for the work due before its expiry.
        """


class StorageFull(BatchFSMError):  # noqa: N818 - a verdict, as the API's 413 says
    """A file refused by :meth:`FileStore.add`: its project's storage is full.

    Adding ``size`` bytes to the ``stored`` bytes its project held at that
    moment would have passed ``limit`` (the add's ``max_stored``). Nothing of
    the file was stored. The emulator answers it 413
    ``storage_limit_exceeded``.

    Example:
        >>> files = MemoryFileStore()
        >>> f = FileObject(id="file-1", bytes=5, created_at=1, filename="a.jsonl",
        ...                purpose="batch")
        >>> try:
        ...     files.add(f, b"hello", max_stored=4)
        ... except StorageFull as full:
        ...     print(full.size, full.stored, full.limit, files.get("file-1"))
        5 0 4 None
    """

    def __init__(self, size: int, stored: int, limit: int) -> None:
        super().__init__(
            f"a file of {size} bytes would bring the files stored to "
            f"{stored + size} bytes, past the limit of {limit} bytes"
        )
        self.size, self.stored, self.limit = size, stored, limit

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.size, self.stored, self.limit)


class FileStore(Protocol):
    """File objects and their content."""

    def add(
        self,
        file: FileObject,
        content: Content,
        *,
        project: str = DEFAULT_PROJECT,
        max_stored: int | None = None,
    ) -> None:
        """Store ``content`` as ``file`` of ``project`` (a new id: else ``KeyError``).

        ``content`` is the bytes, or an iterable of pieces of bytes, read once
        and written as they come: together exactly ``file.bytes`` bytes
        (``ValueError`` as soon as they pass it, or at their end if short).
        All of the file or nothing: if that fails, or the pieces raise (an
        upload cut off), the exception propagates and nothing of the file is
        stored.

        With ``max_stored``, the file is stored only if the project's stored
        bytes (:meth:`stored_bytes`) stay at most ``max_stored`` with it, else
        :class:`StorageFull`: the check and the write are one atomic step, so
        however many adds race, the project never holds more than the limit.
        """

    def get(self, file_id: str, *, project: str | None = None) -> FileObject | None:
        """The File object, or None; None too if it is not ``project``'s (if given)."""

    def content(self, file_id: str) -> bytes | None:
        """The file's bytes, or None."""

    def read(self, file_id: str, offset: int, size: int) -> bytes | None:
        """At most ``size`` bytes of the file from ``offset``; None if no such file.

        Empty at and past the end.
        """

    def delete(self, file_id: str) -> bool:
        """Delete; whether there was such a file."""

    def stored_bytes(self, *, project: str | None = None) -> int:
        """The bytes of every stored file together (expired ones not yet purged too).

        With ``project``, of its files only.
        """

    def list(self) -> list[FileObject]:
        """Every File object, newest first."""

    def page(
        self,
        after: str | None,
        limit: int,
        *,
        order: Order = "desc",
        purpose: str | None = None,
        now: int | None = None,
        project: str | None = None,
    ) -> FilePage:
        """Up to ``limit`` files in creation ``order``, after the file ``after``.

        Only files of ``purpose`` and ``project`` (each if given) and not
        expired at ``now`` (if given: ``expires_at`` after ``now`` or None)
        are listed; ``after`` is any stored file's id (listed or not) of
        ``project`` (if given), and an id of no such file gives an empty
        page. Also says whether more follow. Costs the page (and the
        expired files not yet purged it passes over), never the number of
        files.
        """

    def purge(self, now: int, limit: int) -> int:
        """Delete up to ``limit`` files expired at ``now``, with their content.

        Expired: ``expires_at`` at or before ``now``. Earliest expiry first,
        found through an index of expiry times: costs what it deletes, never
        the number of files. Returns how many it deleted (fewer than
        ``limit``: none is left, unless another process holds some).
        """


class IdSource(Protocol):
    """Where ids come from: never the same one twice, even across restarts."""

    def new_id(self, prefix: str, length: int) -> str:
        """``prefix`` and ``length`` lowercase hex digits, never returned before."""


@attrs.frozen
class FileObject:
    """The API's File object."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: str = "file"
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The API JSON of this file."""
        return attrs.asdict(self)


#: A page of a file listing, and whether more follow.
FilePage = tuple[list[FileObject], bool]


def count_census(batches: Iterable[Batch]) -> dict[str, tuple[int, int, int]]:
    """Per status: the number of ``batches``, their requests completed and failed."""
    census: dict[str, tuple[int, int, int]] = {}
    for batch in batches:
        n, done, failed = census.get(batch.status.value, (0, 0, 0))
        counts = batch.request_counts
        if counts is not None:
            done, failed = done + counts.completed, failed + counts.failed
        census[batch.status.value] = (n + 1, done, failed)
    return census


def enqueued_model(batch: Batch, tokens: int) -> str:
    """The model ``batch`` holds ``tokens`` under, checked for an enqueue."""
    if batch.model is None:
        raise ValueError(f"batch {batch.id} names no model to hold tokens under")
    if type(tokens) is not int or tokens < 0:
        raise ValueError(f"tokens must be an integer of at least 0, got {tokens!r}")
    return batch.model


class MemoryBatchStore:
    """A :class:`BatchStore` in memory: dicts, a creation-ordered list and a heap.

    The due index is a heap of ``(due_at, creation number, id)`` with lazy
    deletion: a write pushes the new entry and leaves the old one, which is
    dropped when it reaches the top and no longer matches the stored work.

    Args:
        files: the file store its writes add result files to (``files``; a
            new :class:`MemoryFileStore` if None).

    Example:
        >>> import batchfsm as bf
        >>> store = MemoryBatchStore()
        >>> b = bf.new_batch(id="batch_1", input_file_id="f",
        ...                  endpoint="/v1/embeddings", created_at=1)
        >>> store.insert(b, Work(due_at=2))
        >>> store.due(1, 10), store.due(2, 10)
        ([], ['batch_1'])
        >>> cancelling = bf.advance(b, "cancel", at=2)
        >>> store.write(cancelling, Work(due_at=7),
        ...             status=bf.BatchStatus.IN_PROGRESS, epoch=0)
        False
        >>> store.write(cancelling, Work(due_at=7),
        ...             status=bf.BatchStatus.VALIDATING, epoch=0)
        True
        >>> store.due(6, 10), store.get("batch_1").status
        ([], <BatchStatus.CANCELLING: 'cancelling'>)
        >>> store.work("batch_1").epoch  # moved on: a write from epoch 0 is stale
        1
    """

    def __init__(self, files: FileStore | None = None) -> None:
        self._files: FileStore = files if files is not None else MemoryFileStore()
        self._batches: dict[str, Batch] = {}
        self._order: list[str] = []  # creation order; pages read it backwards
        self._position: dict[str, int] = {}
        # Each batch's project, and each project's batches in creation order.
        self._project: dict[str, str] = {}
        self._project_order: dict[str, list[str]] = {}
        self._project_position: dict[str, int] = {}
        self._work: dict[str, Work] = {}
        # Each write's result lines, as one piece each: never grown in place.
        self._results: dict[tuple[str, ResultKind], list[bytes]] = {}
        self._heap: list[tuple[int, int, str]] = []
        # The enqueued tokens: held per model, and by which batch (model, tokens).
        self._enqueued: dict[str, int] = {}
        self._holds: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        #: The batch events its terminal writes add, and their deliveries.
        self.outbox = MemoryOutbox(self._lock)

    def __len__(self) -> int:
        return len(self._order)

    @property
    def files(self) -> FileStore:
        """The file store its writes add result files to."""
        return self._files

    def insert(
        self, batch: Batch, work: Work, *, project: str = DEFAULT_PROJECT
    ) -> None:
        """Add a new batch of ``project`` and its work."""
        with self._lock:
            if batch.id in self._batches:
                raise KeyError(f"batch {batch.id} exists already")
            self._batches[batch.id] = batch
            self._position[batch.id] = len(self._order)
            self._order.append(batch.id)
            self._project[batch.id] = project
            order = self._project_order.setdefault(project, [])
            self._project_position[batch.id] = len(order)
            order.append(batch.id)
            self._work[batch.id] = work
            heapq.heappush(
                self._heap, (work.due_at, self._position[batch.id], batch.id)
            )

    def get(self, batch_id: str, *, project: str | None = None) -> Batch | None:
        """The batch, or None (None too if it is not ``project``'s)."""
        if project is not None and self._project.get(batch_id) != project:
            return None
        return self._batches.get(batch_id)

    def project(self, batch_id: str) -> str | None:
        """The batch's project, or None if there is no such batch.

        Example:
            >>> MemoryBatchStore().project("batch_1") is None
            True
        """
        return self._project.get(batch_id)

    def work(self, batch_id: str) -> Work | None:
        """The batch's work in progress, or None."""
        return self._work.get(batch_id)

    def page(
        self, after: str | None, limit: int, *, project: str | None = None
    ) -> tuple[list[Batch], bool]:
        """Newest first, starting after the batch ``after`` (of ``project``)."""
        with self._lock:
            if project is None:
                order, position = self._order, self._position
            else:
                order = self._project_order.get(project, [])
                position = self._project_position
                if after is not None and self._project.get(after) != project:
                    return [], False
            end = len(order) if after is None else position[after]
            start = max(0, end - limit)
            ids = order[start:end]
            return [self._batches[i] for i in reversed(ids)], start > 0

    def write(
        self,
        batch: Batch,
        work: Work | None,
        *,
        status: BatchStatus,
        epoch: int,
        output: Sequence[str] = (),
        errors: Sequence[str] = (),
        files: Sequence[NewFile] = (),
    ) -> bool:
        """Compare-and-set on the status and the work's epoch; moves the epoch on."""
        with self._lock:
            return self._write(batch, work, status, epoch, output, errors, files)

    def enqueue(
        self,
        batch: Batch,
        work: Work,
        *,
        status: BatchStatus,
        epoch: int,
        tokens: int,
        limit: int,
    ) -> Enqueued:
        """Start the batch holding ``tokens`` of ``batch.model``'s ``limit``, or not.

        Example:
            >>> import batchfsm as bf
            >>> store = MemoryBatchStore()
            >>> b = bf.new_batch(id="batch_1", input_file_id="f",
            ...                  endpoint="/v1/embeddings", created_at=1)
            >>> store.insert(b, Work(due_at=2))
            >>> started = bf.advance(b, "start", at=2, model="text-embedding-3-small")
            >>> store.enqueue(started, Work(due_at=3), status=bf.BatchStatus.VALIDATING,
            ...               epoch=0, tokens=120, limit=100)
            'full'
            >>> store.enqueue(started, Work(due_at=3), status=bf.BatchStatus.VALIDATING,
            ...               epoch=0, tokens=60, limit=100)
            'enqueued'
            >>> store.enqueued_tokens("text-embedding-3-small")
            60
        """
        model = enqueued_model(batch, tokens)
        with self._lock:
            if self._as_read(batch.id, status, epoch) is None:
                return "stale"
            if self._enqueued.get(model, 0) + tokens > limit:
                return "full"
            self._write(batch, work, status, epoch, (), (), ())
            self._enqueued[model] = self._enqueued.get(model, 0) + tokens
            self._holds[batch.id] = (model, tokens)
            return "enqueued"

    def due_count(self, at: int) -> int:
        """How many unfinished batches have work due at or before ``at``."""
        with self._lock:
            return sum(1 for work in self._work.values() if work.due_at <= at)

    def census(self) -> dict[str, tuple[int, int, int]]:
        """Per status: how many batches, their requests completed and failed.

        For ``/metrics``: it reads every batch (a scrape's cost, not a page's).
        """
        with self._lock:
            batches = list(self._batches.values())
        return count_census(batches)

    def enqueued_tokens(self, model: str) -> int:
        """The tokens held by the unfinished batches of ``model``.

        Example:
            >>> MemoryBatchStore().enqueued_tokens("gpt-4o")
            0
        """
        return self._enqueued.get(model, 0)

    def _write(
        self,
        batch: Batch,
        work: Work | None,
        status: BatchStatus,
        epoch: int,
        output: Sequence[str],
        errors: Sequence[str],
        files: Sequence[NewFile],
    ) -> bool:
        held = self._as_read(batch.id, status, epoch)
        if held is None:
            return False
        # First: the one step here that may fail. The batch's project's.
        self._add_files(self._project[batch.id], files)
        # The batch before its work: a reader who reads the work first and
        # then the batch never holds a batch older than its epoch (a newer
        # one only makes its write stale).
        self._batches[batch.id] = batch
        if work is None:
            event = event_for(batch, self._project[batch.id])
            if event is not None:  # in the same write as the move
                self.outbox.record(event)
            del self._work[batch.id]
            self._results.pop((batch.id, "output"), None)
            self._results.pop((batch.id, "errors"), None)
            hold = self._holds.pop(batch.id, None)
            if hold is not None:  # ended: its tokens are no longer enqueued
                self._enqueued[hold[0]] -= hold[1]
            return True
        work = attrs.evolve(work, epoch=epoch + 1)
        self._work[batch.id] = work
        if work.due_at != held.due_at:
            entry = (work.due_at, self._position[batch.id], batch.id)
            heapq.heappush(self._heap, entry)
        kinds: tuple[tuple[ResultKind, Sequence[str]], ...] = (
            ("output", output),
            ("errors", errors),
        )
        for kind, lines in kinds:
            if lines:  # in pieces of bounded size: never a copy of them all
                kept = self._results.setdefault((batch.id, kind), [])
                kept += (text.encode() for text in rows(lines))
        return True

    def _as_read(self, batch_id: str, status: BatchStatus, epoch: int) -> Work | None:
        """The batch's work if it still has ``status`` and ``epoch`` (unended)."""
        current, held = self._batches.get(batch_id), self._work.get(batch_id)
        if (
            current is None
            or current.status is not status
            or held is None
            or held.epoch != epoch
        ):
            return None
        return held

    def _add_files(self, project: str, files: Sequence[NewFile]) -> None:
        added: list[str] = []
        try:
            for file, content in files:
                if isinstance(content, ResultLines):
                    held = self._results.get((content.batch_id, content.kind), [])
                    content = _Pieces([*held, content.tail])
                self._files.add(file, content, project=project)
                added.append(file.id)
        except BaseException:
            for file_id in added:  # all of them or none
                self._files.delete(file_id)
            raise

    def results(self, batch_id: str, kind: ResultKind) -> bytes:
        """The result lines of ``kind`` so far."""
        with self._lock:
            return b"".join(self._results.get((batch_id, kind), ()))

    def result_size(self, batch_id: str, kind: ResultKind) -> int:
        """The bytes of the result lines of ``kind`` so far.

        Example:
            >>> MemoryBatchStore().result_size("batch_1", "output")
            0
        """
        with self._lock:
            return sum(map(len, self._results.get((batch_id, kind), ())))

    def due(self, at: int, limit: int) -> list[str]:
        """Up to ``limit`` ids due at or before ``at``, earliest first."""
        with self._lock:
            heap = self._heap
            taken: list[tuple[int, int, str]] = []
            ids: set[str] = set()
            while heap and heap[0][0] <= at and len(taken) < limit:
                entry = heapq.heappop(heap)
                work = self._work.get(entry[2])
                # An entry is stale once its batch ended or its due time moved
                # (a due time that moved back leaves a twin: drop it too).
                if work is not None and work.due_at == entry[0] and entry[2] not in ids:
                    taken.append(entry)
                    ids.add(entry[2])
            for entry in taken:  # still due until a write moves them
                heapq.heappush(heap, entry)
            return [batch_id for _, _, batch_id in taken]

    def earliest_due(self) -> int | None:
        """The earliest due time of the unfinished batches, or None.

        Example:
            >>> import batchfsm as bf
            >>> store = MemoryBatchStore()
            >>> store.earliest_due()
            >>> store.insert(bf.new_batch(id="batch_1", input_file_id="f",
            ...                           endpoint="/v1/embeddings", created_at=1),
            ...              Work(due_at=2))
            >>> store.earliest_due()
            2
        """
        with self._lock:
            heap = self._heap
            while heap:
                due_at, _, batch_id = heap[0]
                work = self._work.get(batch_id)
                if work is not None and work.due_at == due_at:
                    return due_at
                heapq.heappop(heap)  # stale: its batch ended or moved on
            return None


class _Pieces:
    """A file's content kept as the pieces it was written in: never joined.

    A batch's result lines become its result file this way in the memory
    store, uncopied: its results are held once, as they were written.

    Example:
        >>> held = _Pieces([b"ab", b"", b"cde"])
        >>> held.slice(1, 3), held.slice(4, 9), held.slice(7, 1), held.join()
        (b'bcd', b'e', b'', b'abcde')
    """

    __slots__ = ("_parts", "_starts")

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = [part for part in parts if part]
        self._starts = list(
            itertools.accumulate((len(p) for p in self._parts), initial=0)
        )

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._parts)

    def __len__(self) -> int:
        return self._starts[-1]

    def slice(self, offset: int, size: int) -> bytes:
        """At most ``size`` bytes from ``offset``."""
        end = min(offset + size, len(self))
        at = bisect.bisect_right(self._starts, offset) - 1
        got: list[bytes] = []
        while offset < end:
            part, start = self._parts[at], self._starts[at]
            got.append(part[offset - start : end - start])
            offset, at = start + len(part), at + 1
        return b"".join(got)

    def join(self) -> bytes:
        """All of it, as one bytes (a copy)."""
        return b"".join(self._parts)


class _CreationIndex:
    """Ids in creation order, each with its creation number, in blocks.

    New files join at the end; a file leaves from anywhere (deleted,
    purged) at the cost of one block's memmove, not the whole index's; a
    listing finds where it starts by bisection (over the blocks' last
    numbers, then in a block) and reads only what it lists. Blocks are never
    empty, and there are never more than one per :data:`BLOCK` files added.

    Example:
        >>> index = _CreationIndex()
        >>> for n in range(5):
        ...     index.append(n, f"file-{n}")
        >>> index.remove(2)
        >>> list(index.ascending(0)), list(index.descending(None))
        (['file-1', 'file-3', 'file-4'], ['file-4', 'file-3', 'file-1', 'file-0'])
    """

    BLOCK = 512

    def __init__(self) -> None:
        self._blocks: list[tuple[list[int], list[str]]] = []
        self._lasts: list[int] = []  # each block's last number, ascending

    def append(self, number: int, file_id: str) -> None:
        """Add the newest file (``number`` above every other)."""
        if not self._blocks or len(self._blocks[-1][0]) >= self.BLOCK:
            self._blocks.append(([], []))
            self._lasts.append(number)
        numbers, ids = self._blocks[-1]
        numbers.append(number)
        ids.append(file_id)
        self._lasts[-1] = number

    def remove(self, number: int) -> None:
        """Take out the file numbered ``number`` (it must be there)."""
        b = bisect.bisect_left(self._lasts, number)
        numbers, ids = self._blocks[b]
        at = bisect.bisect_left(numbers, number)
        del numbers[at], ids[at]
        if not numbers:
            del self._blocks[b], self._lasts[b]
        elif at == len(numbers):
            self._lasts[b] = numbers[-1]

    def ascending(self, after: int | None) -> Iterator[str]:
        """Ids numbered above ``after`` (all if None), oldest first."""
        blocks = self._blocks
        b = 0 if after is None else bisect.bisect_right(self._lasts, after)
        for i in range(b, len(blocks)):
            numbers, ids = blocks[i]
            at = 0 if after is None else bisect.bisect_right(numbers, after)
            for j in range(at, len(ids)):
                yield ids[j]

    def descending(self, before: int | None) -> Iterator[str]:
        """Ids numbered below ``before`` (all if None), newest first."""
        blocks = self._blocks
        b = len(blocks) - 1
        if before is not None:
            b = min(b, bisect.bisect_left(self._lasts, before))
        for i in range(b, -1, -1):
            numbers, ids = blocks[i]
            at = len(ids) if before is None else bisect.bisect_left(numbers, before)
            for j in range(at - 1, -1, -1):
                yield ids[j]


class MemoryFileStore:
    """A :class:`FileStore` in memory.

    Pages read an index (:class:`_CreationIndex`): the ids in creation order,
    once for all files and once per purpose, so a page finds where it starts
    by bisection and reads only what it lists. Purges read a heap of expiry
    times.

    A file's pieces are written into one buffer of its declared size as they
    come, which then becomes the stored bytes uncopied: a file is held once,
    never once in pieces and again whole.

    Example:
        >>> files = MemoryFileStore()
        >>> files.add(FileObject(id="file-1", bytes=5, created_at=1,
        ...                      filename="a.jsonl", purpose="batch"), [b"he", b"llo"])
        >>> files.read("file-1", 1, 3), files.read("file-1", 9, 3)
        (b'ell', b'')
        >>> files.add(FileObject(id="file-2", bytes=0, created_at=2,
        ...                      filename="b.jsonl", purpose="batch",
        ...                      expires_at=9), b"")
        >>> page, more = files.page(None, 1, order="asc")
        >>> [f.id for f in page], more
        (['file-1'], True)
        >>> files.purge(8, 10), files.purge(9, 10), files.get("file-2")
        (0, 1, None)
    """

    def __init__(self) -> None:
        self._files: dict[str, tuple[FileObject, bytes | _Pieces]] = {}
        self._number: dict[str, int] = {}  # id -> creation number
        self._project: dict[str, str] = {}  # id -> project
        # (project, purpose), each None for every one -> creation numbers and
        # ids, ascending.
        self._index: dict[tuple[str | None, str | None], _CreationIndex] = {}
        # (expires_at, creation number, id) of files that expire; an entry
        # whose file was deleted stays until it is popped (or compacted).
        self._expiry: list[tuple[int, int, str]] = []
        self._stale = 0
        self._created = itertools.count()
        self._stored = 0
        self._stored_by: dict[str, int] = {}  # project -> its bytes
        self._lock = threading.Lock()

    def add(
        self,
        file: FileObject,
        content: Content,
        *,
        project: str = DEFAULT_PROJECT,
        max_stored: int | None = None,
    ) -> None:
        """Store ``content`` (bytes or pieces) as ``file`` of ``project``.

        ``max_stored``: refused (:class:`StorageFull`) if the project's bytes
        would pass it, judged under the same lock that counts the file in.
        """
        if file.id in self._files:  # before reading a byte of it
            raise KeyError(f"file {file.id} exists already")
        data: bytes | _Pieces
        if isinstance(content, (bytes, _Pieces)):  # _Pieces: results, as written
            data = content
        else:
            buffer = io.BytesIO()
            if file.bytes:
                # Grown to its size at once (CPython's BytesIO then allocates
                # exactly that), so that getvalue() below hands the buffer
                # over as the bytes, uncopied and without slack.
                buffer.seek(file.bytes - 1)
                buffer.write(b"\0")
                buffer.seek(0)
            for piece in exactly(content, file.bytes, file.id):
                buffer.write(piece)
            data = buffer.getvalue()
            del buffer
        if len(data) != file.bytes:
            raise ValueError(
                f"{file.id}: its content is {len(data)} bytes, not the "
                f"{file.bytes} its File object says"
            )
        with self._lock:
            if file.id in self._files:
                raise KeyError(f"file {file.id} exists already")
            held = self._stored_by.get(project, 0)
            if max_stored is not None and held + file.bytes > max_stored:
                raise StorageFull(file.bytes, held, max_stored)
            self._files[file.id] = (file, data)
            self._project[file.id] = project
            self._stored += file.bytes
            self._stored_by[project] = self._stored_by.get(project, 0) + file.bytes
            number = self._number[file.id] = next(self._created)
            for key in _index_keys(project, file.purpose):
                self._index.setdefault(key, _CreationIndex()).append(number, file.id)
            if file.expires_at is not None:
                heapq.heappush(self._expiry, (file.expires_at, number, file.id))

    def get(self, file_id: str, *, project: str | None = None) -> FileObject | None:
        """The File object, or None (None too if it is not ``project``'s)."""
        if project is not None and self._project.get(file_id) != project:
            return None
        entry = self._files.get(file_id)
        return entry[0] if entry else None

    def content(self, file_id: str) -> bytes | None:
        """The file's bytes, or None."""
        entry = self._files.get(file_id)
        if entry is None:
            return None
        data = entry[1]
        return data if isinstance(data, bytes) else data.join()

    def read(self, file_id: str, offset: int, size: int) -> bytes | None:
        """A slice of the file's bytes, or None."""
        entry = self._files.get(file_id)
        if entry is None:
            return None
        data = entry[1]
        if isinstance(data, bytes):
            return data[offset : offset + size]
        return data.slice(offset, size)

    def delete(self, file_id: str) -> bool:
        """Delete; whether there was such a file."""
        with self._lock:
            file = self._remove(file_id)
            if file is None:
                return False
            if file.expires_at is not None:
                self._stale += 1  # its expiry entry stays behind
                if self._stale > 64 and self._stale > len(self._expiry) // 2:
                    self._expiry = [e for e in self._expiry if self._holds(e)]
                    heapq.heapify(self._expiry)
                    self._stale = 0
            return True

    def purge(self, now: int, limit: int) -> int:
        """Delete up to ``limit`` files expired at ``now``, earliest expiry first.

        Example:
            >>> files = MemoryFileStore()
            >>> for i in (1, 2, 3):
            ...     files.add(FileObject(id=f"file-{i}", bytes=0, created_at=0,
            ...                          filename="a.jsonl", purpose="batch",
            ...                          expires_at=i), b"")
            >>> files.purge(3, 2), [f.id for f in files.list()]
            (2, ['file-3'])
        """
        purged = 0
        with self._lock:
            heap = self._expiry
            while heap and heap[0][0] <= now and purged < limit:
                entry = heapq.heappop(heap)
                if self._holds(entry):
                    self._remove(entry[2])
                    purged += 1
                else:
                    self._stale -= 1
        return purged

    def _holds(self, entry: tuple[int, int, str]) -> bool:
        # The entry is the stored file's, not a deleted one's (ids never repeat,
        # but a caller may add a file under an id it deleted).
        return self._number.get(entry[2]) == entry[1]

    def _remove(self, file_id: str) -> FileObject | None:
        entry = self._files.pop(file_id, None)
        if entry is None:
            return None
        number = self._number.pop(file_id)
        project = self._project.pop(file_id)
        for key in _index_keys(project, entry[0].purpose):
            self._index[key].remove(number)
        self._stored -= entry[0].bytes
        self._stored_by[project] -= entry[0].bytes
        return entry[0]

    def stored_bytes(self, *, project: str | None = None) -> int:
        """The bytes of every stored file together (of ``project``, if given).

        Example:
            >>> files = MemoryFileStore()
            >>> files.add(FileObject(id="file-1", bytes=5, created_at=1,
            ...                      filename="a.jsonl", purpose="batch"), b"hello")
            >>> files.stored_bytes(), files.stored_bytes(project="proj_other")
            (5, 0)
        """
        if project is not None:
            return self._stored_by.get(project, 0)
        return self._stored

    def list(self) -> list[FileObject]:
        """Every file, newest first."""
        with self._lock:
            return [f for f, _ in reversed(self._files.values())]

    def page(
        self,
        after: str | None,
        limit: int,
        *,
        order: Order = "desc",
        purpose: str | None = None,
        now: int | None = None,
        project: str | None = None,
    ) -> FilePage:
        """Up to ``limit`` files in ``order`` after ``after``; whether more follow."""
        with self._lock:
            index = self._index.get((project, purpose), _CreationIndex())
            if after is not None and (
                after not in self._number
                or (project is not None and self._project[after] != project)
            ):
                return [], False
            start = None if after is None else self._number[after]
            ids = index.ascending(start) if order == "asc" else index.descending(start)
            page: list[FileObject] = []
            for file_id in ids:
                file = self._files[file_id][0]
                expiry = file.expires_at
                if now is not None and expiry is not None and now >= expiry:
                    continue  # expired: hidden, as everywhere
                if len(page) == limit:
                    return page, True
                page.append(file)
            return page, False


def _index_keys(
    project: str, purpose: str
) -> tuple[tuple[str | None, str | None], ...]:
    """The listings a file of ``project`` and ``purpose`` is in."""
    return ((None, None), (None, purpose), (project, None), (project, purpose))


#: Random bytes drawn from the OS at a time for ids (see ``_RandomBytes``).
RANDOM_BYTES_PER_DRAW = 4096


class _RandomBytes:
    """Bytes of :func:`os.urandom` (what :mod:`secrets` draws), a block at a time.

    Each ``os.urandom`` call hands the GIL back. The worker makes two ids per
    request it answers: drawn one at a time, some 50,000 hand-backs a second,
    each followed at once by the worker taking the GIL again before the
    server's event loop wakes to take it. A thread that does so is never asked
    to hand it over (it changed hands), so a retrieve waited up to hundreds
    of milliseconds behind a big batch. One draw per
    :data:`RANDOM_BYTES_PER_DRAW` bytes instead; every byte used once. A
    forked child starts afresh (:meth:`restart`): never with its parent's.
    """

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Forget the bytes drawn (and a lock that another thread held)."""
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0

    def hex(self, digits: int) -> str:
        """``digits`` random lowercase hex digits."""
        size = (digits + 1) // 2
        with self._lock:
            at = self._at
            if at + size > len(self._bytes):
                self._bytes, at = os.urandom(max(size, RANDOM_BYTES_PER_DRAW)), 0
            self._at = at + size
            drawn = self._bytes[at : at + size]
        return drawn.hex()[:digits]


_RANDOM = _RandomBytes()
# A forked child must not hand out its parent's bytes, nor wait for a lock
# that another of the parent's threads held when it forked.
os.register_at_fork(after_in_child=_RANDOM.restart)


class MemoryIds:
    """An :class:`IdSource` in memory: random, or reproducible from a seed.

    Without a seed every id is drawn from :func:`os.urandom` (as
    :mod:`secrets` does), so two emulators (or one restarted) never hand out
    the same id. With a seed, ids are a hash of
    the seed and a counter: the same calls give the same ids (for reproducible
    runs; a persistent store keeps the counter so a restart does not repeat).

    Example:
        >>> MemoryIds(seed=7).new_id("file-", 8) == MemoryIds(seed=7).new_id("file-", 8)
        True
        >>> MemoryIds().new_id("file-", 8) == MemoryIds().new_id("file-", 8)
        False
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def new_id(self, prefix: str, length: int) -> str:
        """A new id: ``prefix`` and ``length`` hex digits."""
        if self.seed is None:
            return prefix + _RANDOM.hex(length)
        with self._lock:
            number = next(self._counter)
        return seeded_id(self.seed, number, prefix, length)


def seeded_id(seed: int, number: int, prefix: str, length: int) -> str:
    """The ``number``-th id of a seeded source (SQL stores keep the count)."""
    digest = hashlib.sha256(f"{seed}:{number}".encode()).hexdigest()
    while len(digest) < length:  # pragma: no cover - ids are at most 64 digits
        digest += hashlib.sha256(digest.encode()).hexdigest()
    return prefix + digest[:length]
