"""The SQL batch store: the part of SQLite and PostgreSQL that is the same.

:class:`SQLStore` keeps batches, their work in progress, result lines and
settings on a :class:`Database` (:mod:`._database`), in SQL both dialects
accept; its files are :class:`SQLFiles` (:mod:`._sql_files`), its leases
those of :mod:`._leases`, its schema kept up by :mod:`._migrations`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from .._json_io import dumps, loads
from .._model import Batch, BatchStatus
from ._content import not_its_size
from ._database import Database, Tx, model_key, unheld
from ._events import event_for
from ._leases import (
    Heartbeat,
    claim_due,
    give_back,
    new_owner,
    reclaim_dead,
    renew,
    this_process,
)
from ._migrations import CHUNK_BYTES, migrate
from ._pieces import rows
from ._projects import DEFAULT_PROJECT
from ._sql_files import SQLFiles, add_file, counted, one_chunk, small_file
from ._sql_outbox import SQLOutbox, clear_and_add_event, cleared, deliveries_of
from ._stores import (
    Enqueued,
    HeldWrite,
    MemoryIds,
    NewFile,
    ResultKind,
    ResultLines,
    Work,
    enqueued_model,
    seeded_id,
)

__all__ = ["SQLIds", "SQLStore"]

log = logging.getLogger("batchfsm.emulator")

#: How often, at most, a store looks for dead processes on its machine whose
#: leases it need not wait out (see :func:`._leases.dead_here`).
RECLAIM_SECONDS = 1.0

#: How many reads of the database's clock one measurement of the offset takes.
CLOCK_SAMPLES = 3


#: The condition of every conditional write: the batch (id) still has the
#: status and the epoch its writer read, and has not ended.
_AS_READ = " WHERE id = ? AND status = ? AND epoch = ? AND work IS NOT NULL"

#: A batch's next row of result lines of a kind, by its place (``seq``), and
#: whether another follows it.
_NEXT_RESULTS = (
    "SELECT seq, lines, EXISTS (SELECT 1 FROM batchfsm_results n"
    " WHERE n.batch_id = r.batch_id AND n.kind = r.kind AND n.seq > r.seq)"
    " FROM batchfsm_results r WHERE batch_id = ? AND kind = ?"
    " AND seq > ? ORDER BY seq LIMIT 1"
)


#: A batch's result lines of a kind as stored, in their order, then a tail:
#: the data of a result file of one chunk, made by the database
#: (PostgreSQL), in the statement that ends the batch.
_LINES_THEN = (
    "convert_to(coalesce((SELECT string_agg(lines, '' ORDER BY seq)"
    " FROM batchfsm_results WHERE batch_id = ? AND kind = ?), ''), 'UTF8')"
    " || ?::bytea"
)


def _result_pieces(tx: Tx, lines: ResultLines) -> Iterator[bytes]:
    # One row (one write's lines) at a time: the batch's results are never
    # held whole on their way into their file, nor fetched all at once (a
    # PostgreSQL cursor holds every row it was asked for). Each row says
    # whether another follows: no round trip to find there is none.
    seq, more = -1, True
    while more and (row := tx.one(_NEXT_RESULTS, (lines.batch_id, lines.kind, seq))):
        seq, more = row[0], bool(row[2])
        yield row[1].encode()
    if lines.tail:
        yield lines.tail


def _add_files(
    tx: Tx, batch_id: str, files: Sequence[NewFile], project: str | None = None
) -> None:
    # A batch's result files are its project's (``project``, if known).
    if not files:
        return
    if project is None:
        (project,) = tx.one(
            "SELECT project FROM batchfsm_batches WHERE id = ?", (batch_id,)
        )
    for file, content in files:
        if isinstance(content, ResultLines):
            content = _result_pieces(tx, content)
        add_file(tx, file, content, project)


#: The conditional write of a batch that goes on; and one that now holds
#: enqueued tokens too.
_UPDATE, _UPDATE_HOLDING = (
    "UPDATE batchfsm_batches SET status = ?, body = ?, work = ?, due_at = ?,"
    f" epoch = epoch + ?{hold}{_AS_READ}"
    for hold in ("", ", enqueued_model = ?, enqueued_tokens = ?")
)


#: The conditional write of a batch that ends: its work, due time and lease
#: go, its epoch moves on by its steps (``?``).
_END = (
    "UPDATE batchfsm_batches SET status = ?, body = ?, work = NULL,"
    f" due_at = NULL, epoch = epoch + ?, lease_owner = NULL{_AS_READ}"
)


def _state(
    body: str, work: str | None, due_at: int | None, epoch: int
) -> tuple[Batch, Work | None]:
    """A batch and its work (None: ended) from their columns."""
    if work is None:
        return loads(body), None
    return loads(body), Work(
        due_at=int(due_at or 0), epoch=int(epoch), **json.loads(work)
    )


def _at_once(postgres: bool, w: HeldWrite) -> bool:
    """Whether ``w`` is written in one statement (:meth:`SQLStore._end_at_once`).

    An end on PostgreSQL whose files are of one chunk each, their content
    bytes or the batch's result lines.
    """
    if w.work is not None or not postgres:
        return False
    return all(
        isinstance(content, (bytes, ResultLines)) and 0 < file.bytes <= CHUNK_BYTES
        for file, content in w.files
    )


def _work_json(work: Work) -> str:
    # due_at and epoch have columns of their own (the index, the fence).
    fields = attrs.asdict(work)
    del fields["due_at"], fields["epoch"]
    return json.dumps(fields, separators=(",", ":"))


class SQLStore:
    """A :class:`BatchStore` in SQL, with its :class:`FileStore` and ids.

    The part of :class:`SQLiteStore` and :class:`PostgresStore` that does not
    depend on the database. Every method is one transaction, committed before
    it returns. :meth:`write` is the one conditional write of the seam: a
    single ``UPDATE … SET …, epoch = epoch + 1 WHERE id = ? AND status = ? AND
    epoch = ?``, so every write makes every earlier read stale.

    Several processes may share the database. :meth:`due` leases what it
    answers to this store (``owner``) until the batch ends or the store
    closes: other stores' :meth:`due` skip it (PostgreSQL reads with ``FOR
    UPDATE SKIP LOCKED``, so claimers never wait for each other) as long as
    this store's heartbeat lasts. A thread renews the heartbeat every third
    of ``lease_seconds``, by the database's clock, from the first
    :meth:`due` on, however long a handler call takes. A store that stops
    renewing it (its process died, stalled, or lost the database) has its
    batches taken over ``lease_seconds`` after its last renewal, their epoch
    moved on, so its late writes are refused. A process on the same machine
    that no longer runs has its batches taken over within a second.
    :meth:`enqueue` starts a batch under an enqueued token limit, the
    model's row of enqueued tokens locked, so processes starting batches at
    once never pass the limit.

    Attributes:
        files: the :class:`FileStore` on the same database.
        owner: who holds the leases this store takes (host, process, random).
        clock_offset: the database's clock less this host's, in seconds,
            measured at each heartbeat on PostgreSQL (0 on SQLite):
            :class:`AnchoredClock` tells the time by the database's clock.
        lease_seconds: how long the leases last after the last heartbeat.

    Example:
        >>> import batchfsm as bf
        >>> from batchfsm.emulator import SQLiteStore, Work
        >>> first = SQLiteStore(":memory:")
        >>> first.insert(bf.new_batch(id="batch_1", input_file_id="f",
        ...                           endpoint="/v1/embeddings", created_at=1),
        ...              Work(due_at=5))
        >>> first.due(4, limit=10), first.due(5, limit=10)
        ([], ['batch_1'])
        >>> first.close()
    """

    def __init__(self, db: Database, *, lease_seconds: float = 30.0) -> None:
        if not (0 < lease_seconds < math.inf):
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._db = db
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        self.files = SQLFiles(db)
        #: The batch events its terminal writes add, and their deliveries.
        self.outbox = SQLOutbox(db)
        self.owner = new_owner()
        self.lease_seconds = float(lease_seconds)
        self._process = this_process()
        self._heartbeat: Heartbeat | None = None
        self._closed = False
        self._starting = threading.Lock()
        self._renewed = -math.inf  # time.monotonic() when the last renewal began
        #: The database's clock less this host's, in seconds, as last measured
        #: (at each heartbeat; 0 on SQLite, whose clock is this host's).
        self.clock_offset = 0.0
        try:
            self._beat()
        except BaseException:
            db.close()
            raise

    def _beat(self) -> None:
        """Renew this store's heartbeat; free the leases of dead processes here."""
        self._renew()
        self._reclaim()

    def _renew(self) -> None:
        begun = time.monotonic()
        with self._db.transaction() as tx:
            renew(self._db, tx, self.owner, self._process, self.lease_seconds)
        self._renewed = begun
        if self._db.postgres:
            self._measure_clock()

    def _measure_clock(self) -> None:
        # The database's time now, against this host's at the middle of the
        # round trip that read it: processes on hosts whose clocks disagree
        # stamp their batches by the one clock they share (AnchoredClock).
        # The error is at most half the round trip, so of a few reads the
        # shortest one's is kept (as NTP does).
        samples = []
        with self._db.transaction(write=False) as tx:
            for _ in range(CLOCK_SAMPLES):
                before = time.time()
                (now,) = tx.one(f"SELECT {self._db.now_sql}")
                after = time.time()
                samples.append((after - before, float(now) - (before + after) / 2))
        self.clock_offset = min(samples)[1]

    def _reclaim(self) -> None:
        for gone in reclaim_dead(self._db, self.owner):
            log.info("%s no longer runs: its leases are free", gone)

    def _tick(self) -> None:
        # Each tick looks for dead processes here; the renewal is every
        # third of the lease: at this tick if the next would be late for it.
        self._db.tend()  # a database file deleted under the server: noticed
        interval, tick = self._intervals()
        if time.monotonic() - self._renewed + tick > interval:
            self._renew()
        self._reclaim()

    def _intervals(self) -> tuple[float, float]:
        """How often to renew the heartbeat, and how often to look for the dead."""
        interval = self.lease_seconds / 3
        return interval, min(interval, RECLAIM_SECONDS)

    @property
    def where(self) -> str:
        """The database, for messages (a path, or a URL without its password)."""
        return self._db.where

    def ids(self, seed: int | None = None) -> SQLIds:
        """An :class:`IdSource` on this database (a seeded one keeps its counter)."""
        return SQLIds(self, seed)

    def close(self) -> None:
        """Give back this store's leases (others may take them now), and close."""
        with self._starting:
            heartbeat, self._heartbeat = self._heartbeat, None
            self._closed = True
        if heartbeat is not None:
            heartbeat.stop()
        try:
            with self._db.transaction() as tx:
                give_back(tx, self.owner)
        except Exception:  # noqa: BLE001 - closing a broken connection still closes
            log.warning("%s: leases not given back; they run out", self.where)
        self._db.close()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- batches -----------------------------------------------------------------

    def __len__(self) -> int:
        with self._db.transaction(write=False) as tx:
            count: int = tx.one("SELECT count(*) FROM batchfsm_batches")[0]
            return count

    def insert(
        self, batch: Batch, work: Work, *, project: str = DEFAULT_PROJECT
    ) -> None:
        """Add a new batch of ``project`` and its work (a new id: else ``KeyError``).

        Example:
            >>> import batchfsm as bf
            >>> from batchfsm.emulator import SQLiteStore, Work
            >>> store = SQLiteStore(":memory:")
            >>> store.insert(bf.new_batch(id="batch_1", input_file_id="f",
            ...                           endpoint="/v1/embeddings", created_at=1),
            ...              Work(due_at=2))
            >>> store.get("batch_1").status, store.work("batch_1").due_at
            (<BatchStatus.VALIDATING: 'validating'>, 2)
            >>> store.close()
        """
        with self._db.statement() as tx:
            added = tx.run(
                "INSERT INTO batchfsm_batches"
                " (id, status, body, work, due_at, epoch, project)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    batch.id,
                    batch.status.value,
                    dumps(batch),
                    _work_json(work),
                    work.due_at,
                    work.epoch,
                    project,
                ),
            ).rowcount
            if added != 1:  # one statement, not a look first: a round trip less
                raise KeyError(f"batch {batch.id} exists already")

    def get(self, batch_id: str, *, project: str | None = None) -> Batch | None:
        """The batch, or None (None too if it is not ``project``'s)."""
        if unheld(batch_id) or unheld(project):
            return None
        with self._db.transaction(write=False) as tx:
            if project is None:
                row = tx.one(
                    "SELECT body FROM batchfsm_batches WHERE id = ?", (batch_id,)
                )
            else:
                row = tx.one(
                    "SELECT body FROM batchfsm_batches WHERE id = ? AND project = ?",
                    (batch_id, project),
                )
        return None if row is None else loads(row[0])

    def _get_now(self, batch_id: str, *, project: str) -> Batch | None:
        """:meth:`get` on the event loop: raises ``WouldWait`` where it would wait.

        The emulator's retrieve under ``serve`` reads this way (see
        ``Emulator._retrieve_batch_now``): a hop to a store thread costs
        ten times the read itself. Only a database whose reads never wait
        (SQLite in WAL mode) answers; PostgreSQL always raises.
        """
        if unheld(batch_id) or unheld(project):
            return None
        with self._db.read_now() as tx:
            row = tx.one(
                "SELECT body FROM batchfsm_batches WHERE id = ? AND project = ?",
                (batch_id, project),
            )
        return None if row is None else loads(row[0])

    def project(self, batch_id: str) -> str | None:
        """The batch's project, or None if there is no such batch."""
        if unheld(batch_id):
            return None
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT project FROM batchfsm_batches WHERE id = ?", (batch_id,)
            )
        return None if row is None else str(row[0])

    def work(self, batch_id: str) -> Work | None:
        """The batch's work in progress; None if there is no such batch or it ended."""
        if unheld(batch_id):
            return None
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT work, due_at, epoch FROM batchfsm_batches WHERE id = ?",
                (batch_id,),
            )
        if row is None or row[0] is None:
            return None
        return Work(due_at=int(row[1]), epoch=int(row[2]), **json.loads(row[0]))

    def batch_and_work(
        self, batch_id: str, *, project: str | None = None
    ) -> tuple[Batch | None, Work | None]:
        """The batch and its work in progress, read together: one snapshot.

        One statement, so the two agree (the work's epoch is the batch's),
        in one round trip rather than :meth:`work` then :meth:`get`. With
        ``project``, a batch of another project is read as none.

        Example:
            >>> import batchfsm as bf
            >>> from batchfsm.emulator import SQLiteStore, Work
            >>> store = SQLiteStore(":memory:")
            >>> store.insert(bf.new_batch(id="batch_1", input_file_id="f",
            ...                           endpoint="/v1/embeddings", created_at=1),
            ...              Work(due_at=2))
            >>> batch, work = store.batch_and_work("batch_1")
            >>> batch.status.value, work.due_at, store.batch_and_work("batch_2")
            ('validating', 2, (None, None))
            >>> store.close()
        """
        if unheld(batch_id) or unheld(project):
            return None, None
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT body, work, due_at, epoch, project FROM batchfsm_batches"
                " WHERE id = ?",
                (batch_id,),
            )
        if row is None or (project is not None and row[4] != project):
            return None, None
        return _state(*row[:4])

    def page(
        self, after: str | None, limit: int, *, project: str | None = None
    ) -> tuple[list[Batch], bool]:
        """Up to ``limit`` batches created before ``after``, newest first.

        Also says whether more follow. With ``project``, its batches only,
        read through the ``(project, seq)`` index (``after`` of it too).
        """
        if unheld(after) or unheld(project):
            return [], False
        where: list[str] = []
        params: list[object] = []
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if after is not None:
            mine = "" if project is None else " AND project = ?"
            where.append(f"seq < (SELECT seq FROM batchfsm_batches WHERE id = ?{mine})")
            params.extend([after] if project is None else [after, project])
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT body FROM batchfsm_batches{clause} ORDER BY seq DESC LIMIT ?",
                (*params, limit + 1),
            )
        return [loads(body) for (body,) in rows[:limit]], len(rows) > limit

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

        If the stored batch still has ``status`` and its work ``epoch``, then in
        one transaction: store ``batch`` and ``work`` with the epoch moved on
        to ``epoch + 1`` (None: the batch ended; its work, due time, lease,
        result lines and hold of enqueued tokens go), append the ``output`` and
        ``errors`` result lines and add ``files`` (the batch's result files) to
        :attr:`files`. Otherwise nothing is written. A failure anywhere (a file
        id that exists: ``KeyError``) rolls all of it back.

        Example:
            >>> import batchfsm as bf
            >>> from batchfsm.emulator import SQLiteStore, Work
            >>> store = SQLiteStore(":memory:")
            >>> b = bf.new_batch(id="batch_1", input_file_id="f",
            ...                  endpoint="/v1/embeddings", created_at=1)
            >>> store.insert(b, Work(due_at=2))
            >>> cancelling = bf.advance(b, "cancel", at=2)
            >>> store.write(cancelling, Work(due_at=7),
            ...             status=bf.BatchStatus.IN_PROGRESS, epoch=0)
            False
            >>> store.write(cancelling, Work(due_at=7),
            ...             status=bf.BatchStatus.VALIDATING, epoch=0)
            True
            >>> store.work("batch_1").epoch  # moved on: a write from epoch 0 is stale
            1
            >>> store.close()
        """
        held = HeldWrite(batch, work, status, epoch, output, errors, files)
        return self.write_many([held])[0]

    def write_many(self, writes: Sequence[HeldWrite]) -> list[bool]:
        """Several conditional writes in one transaction; whether each happened.

        Each is :meth:`write`'s, judged on its own (one refused leaves the
        others be); they commit together, or (an error) none does. One
        commit for many writes: what makes a durable database's commits
        (an fsync each) few.

        Example:
            >>> import batchfsm as bf
            >>> from batchfsm.emulator import SQLiteStore, Work
            >>> store = SQLiteStore(":memory:")
            >>> b = bf.new_batch(id="batch_1", input_file_id="f",
            ...                  endpoint="/v1/embeddings", created_at=1)
            >>> store.insert(b, Work(due_at=2))
            >>> cancelling = bf.advance(b, "cancel", at=2)
            >>> was = bf.BatchStatus.VALIDATING
            >>> store.write_many([
            ...     HeldWrite(cancelling, Work(due_at=7), status=was, epoch=0),
            ...     HeldWrite(cancelling, Work(due_at=7), status=was, epoch=0),
            ... ])
            [True, False]
            >>> store.close()
        """
        if len(writes) == 1 and _at_once(self._db.postgres, writes[0]):
            with self._db.statement() as tx:  # one statement: no BEGIN, no COMMIT
                return [self._end_at_once(tx, writes[0])]
        with self._db.transaction() as tx:
            return [self._write_held(tx, w) for w in writes]

    def _write_held(self, tx: Tx, w: HeldWrite) -> bool:
        if _at_once(tx.postgres, w):
            return self._end_at_once(tx, w)
        body = dumps(w.batch)
        if w.work is None:
            return self._end(tx, w.batch, body, w.status, w.epoch, w.files, w.steps)
        return self._update(
            tx, w.batch, body, w.work, w.status, w.epoch, w.output, w.errors,
            w.files, steps=w.steps,
        )  # fmt: skip

    def _update(
        self,
        tx: Tx,
        batch: Batch,
        body: str,
        work: Work,
        status: BatchStatus,
        epoch: int,
        output: Sequence[str] = (),
        errors: Sequence[str] = (),
        files: Sequence[NewFile] = (),
        hold: tuple[str, int] | None = None,
        steps: int = 1,
    ) -> bool:
        # The conditional write of a batch that goes on; ``hold``: and from
        # now on it holds these enqueued tokens of that model.
        values = (batch.status.value, body, _work_json(work), work.due_at, steps)
        where = (batch.id, status.value, epoch)
        if hold is None:
            updated = tx.run(_UPDATE, (*values, *where)).rowcount
        else:
            updated = tx.run(_UPDATE_HOLDING, (*values, *hold, *where)).rowcount
        if updated != 1:
            return False
        for kind, lines in (("output", output), ("errors", errors)):
            # In rows of bounded size (a long line cut across rows, which
            # the result file joins again): never a copy of them all.
            for text in rows(lines):
                tx.run(
                    "INSERT INTO batchfsm_results (batch_id, kind, lines)"
                    " VALUES (?, ?, ?)",
                    (batch.id, kind, text),
                )
        _add_files(tx, batch.id, files)
        return True

    def _end_at_once(self, tx: Tx, w: HeldWrite) -> bool:
        """:meth:`_end` in one statement (PostgreSQL; see :func:`_at_once`).

        Data-modifying ``WITH`` clauses, each run once, all or none: the
        conditional write, then (only if it happened) the tokens given
        back, the result files, the clean-up, the event and its deliveries.
        """
        clauses: list[str] = []
        values: list[object] = []
        names: list[str] = []
        # The batch is written only if the stored lines make up each file's
        # size (checked as the rows are read: else nothing of it is written).
        sized, sizes = "", list[object]()
        for i, (file, content) in enumerate(w.files):
            if isinstance(content, ResultLines):  # the stored lines, then the tail
                data = (_LINES_THEN, (content.batch_id, content.kind, content.tail))
                sized += f" AND octet_length({_LINES_THEN}) = ?"
                sizes.extend((*data[1], file.bytes))
            else:
                data = one_chunk(file, content)
            names.append(f"file_{i}")
            clause, more = small_file(names[-1], "ended", file, data, if_new=False)
            clauses.append(clause)
            values.extend(more)
        if names:
            clauses.append(f"counted AS ({counted(names)})")
            values.extend(file.bytes for file, _ in w.files)
        event = event_for(w.batch)  # its project: the batch's, read by the write
        if event is not None:
            clauses.append(
                "event AS (INSERT INTO batchfsm_events"
                " (id, batch_id, type, created_at, project, body)"
                " SELECT ?, ?, ?, ?, project, ? FROM ended RETURNING id, project),"
                f" deliveries AS ({deliveries_of('event')})"
            )
            said = (event.id, event.batch_id, event.type, event.created_at)
            values.extend((*said, event.body().decode()))
        statement = (
            f"WITH ended AS ({_END}{sized}"
            " RETURNING id, enqueued_model, enqueued_tokens, project),"
            " given_back AS (UPDATE batchfsm_enqueued q"
            " SET tokens = q.tokens - e.enqueued_tokens FROM ended e"
            " WHERE q.model = e.enqueued_model),"
            + "".join(f" {clause}," for clause in clauses)
            + " results AS ({}), chunks AS ({})".format(
                *cleared("SELECT id FROM ended")
            )
            + " SELECT count(*), EXISTS (SELECT 1 FROM batchfsm_batches"
            f"{_AS_READ}) FROM ended"
        )
        head = (w.batch.status.value, dumps(w.batch), w.steps)
        where = (w.batch.id, w.status.value, w.epoch)
        ended, as_read = tx.one(statement, (*head, *where, *sizes, *values, *where))
        if not ended and as_read:  # not stale: lines of another size than a file
            self._not_their_size(w)
        return bool(ended)

    def _not_their_size(self, w: HeldWrite) -> None:
        """Raise ``ValueError``: ``w``'s result files are not their lines' size."""
        sizes = self._result_sizes(w.batch.id)
        for file, content in w.files:
            if isinstance(content, ResultLines):
                held = sizes[content.kind] + len(content.tail)
                if held != file.bytes:
                    raise not_its_size(file.id, held, file.bytes)

    def _end(
        self,
        tx: Tx,
        batch: Batch,
        body: str,
        status: BatchStatus,
        epoch: int,
        files: Sequence[NewFile],
        steps: int = 1,
    ) -> bool:
        # An ended batch keeps naming what it held (its work is NULL now), so
        # the one UPDATE also says what to give back.
        ended = tx.one(
            f"{_END} RETURNING enqueued_model, enqueued_tokens, project",
            (batch.status.value, body, steps, batch.id, status.value, epoch),
        )
        if ended is None:
            return False
        model, tokens, project = ended
        if model is not None:  # ended: its tokens are no longer enqueued
            tx.run(
                "UPDATE batchfsm_enqueued SET tokens = tokens - ? WHERE model = ?",
                (tokens, model),
            )
        _add_files(tx, batch.id, files, project)  # their result lines, then they go
        # The event in the same transaction as the move.
        clear_and_add_event(tx, batch.id, event_for(batch, project))
        return True

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
        """The write that starts a batch, holding ``tokens`` of its model's ``limit``.

        In one transaction: ``"stale"`` if the conditional :meth:`write` would
        be refused; else, with the batch's row and then the model's row of
        enqueued tokens locked (PostgreSQL: ``SELECT … FOR UPDATE``; SQLite has
        one writer at a time), ``"full"`` and nothing written if the model's
        batches hold more than ``limit - tokens``; else the write, and the
        model's tokens and the batch's hold grow by ``tokens``:
        ``"enqueued"``. The write that ends the batch gives them back. Every
        writer locks a batch's row before a model's, so two never wait for
        each other in opposite orders.

        Example:
            >>> import batchfsm as bf
            >>> from batchfsm.emulator import SQLiteStore, Work
            >>> store = SQLiteStore(":memory:")
            >>> for n in (1, 2):
            ...     store.insert(bf.new_batch(id=f"batch_{n}", input_file_id="f",
            ...                               endpoint="/v1/embeddings", created_at=1),
            ...                  Work(due_at=2))
            >>> def start(n):
            ...     started = bf.advance(store.get(f"batch_{n}"), "start", at=2,
            ...                          model="text-embedding-3-small")
            ...     return store.enqueue(started, Work(due_at=3), epoch=0, tokens=60,
            ...                          limit=100, status=bf.BatchStatus.VALIDATING)
            >>> start(1), start(2), store.enqueued_tokens("text-embedding-3-small")
            ('enqueued', 'full', 60)
            >>> store.close()
        """
        model = model_key(enqueued_model(batch, tokens))
        body = dumps(batch)
        lock = self._db.lock_sql
        with self._db.transaction() as tx:
            if not tx.one(
                f"SELECT 1 FROM batchfsm_batches{_AS_READ} {lock}",
                (batch.id, status.value, epoch),
            ):
                return "stale"
            tx.run(
                "INSERT INTO batchfsm_enqueued (model, tokens) VALUES (?, 0)"
                " ON CONFLICT (model) DO NOTHING",
                (model,),
            )
            (held,) = tx.one(
                f"SELECT tokens FROM batchfsm_enqueued WHERE model = ? {lock}",
                (model,),
            )
            if int(held) + tokens > limit:
                return "full"
            if not self._update(
                tx, batch, body, work, status, epoch, hold=(model, tokens)
            ):  # pragma: no cover - the row is locked, or the writer alone
                return "stale"
            tx.run(
                "UPDATE batchfsm_enqueued SET tokens = tokens + ? WHERE model = ?",
                (tokens, model),
            )
            return "enqueued"

    def enqueued_tokens(self, model: str) -> int:
        """The tokens held by the unfinished batches of ``model``.

        Example:
            >>> from batchfsm.emulator import SQLiteStore
            >>> store = SQLiteStore(":memory:")
            >>> store.enqueued_tokens("gpt-4o")
            0
            >>> store.close()
        """
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT tokens FROM batchfsm_enqueued WHERE model = ?",
                (model_key(model),),
            )
        return 0 if row is None else int(row[0])

    def results(self, batch_id: str, kind: ResultKind) -> bytes:
        """The result lines of ``kind`` written so far, each ending in a newline."""
        with self._db.transaction(write=False) as tx:
            return b"".join(_result_pieces(tx, ResultLines(batch_id, kind)))

    def result_size(self, batch_id: str, kind: ResultKind) -> int:
        """The bytes of the result lines of ``kind`` written so far.

        Example:
            >>> from batchfsm.emulator import SQLiteStore
            >>> store = SQLiteStore(":memory:")
            >>> store.result_size("batch_1", "output")
            0
            >>> store.close()
        """
        # Counted by the database, none of the lines read out of it.
        size = (
            "octet_length(lines)"
            if self._db.postgres
            else "length(CAST(lines AS BLOB))"
        )
        with self._db.transaction(write=False) as tx:
            (held,) = tx.one(
                f"SELECT coalesce(sum({size}), 0) FROM batchfsm_results"
                " WHERE batch_id = ? AND kind = ?",
                (batch_id, kind),
            )
        return int(held)

    def _result_sizes(self, batch_id: str) -> dict[ResultKind, int]:
        """:meth:`result_size` of both kinds, in one statement (the worker's end)."""
        size = (
            "octet_length(lines)"
            if self._db.postgres
            else "length(CAST(lines AS BLOB))"
        )
        # No GROUP BY: SQLite would sort the rows, their lines with them.
        each = (f"coalesce(sum(CASE WHEN kind = ? THEN {size} END), 0)",) * 2
        with self._db.transaction(write=False) as tx:
            output, errors = tx.one(
                f"SELECT {', '.join(each)} FROM batchfsm_results WHERE batch_id = ?",
                ("output", "errors", batch_id),
            )
        return {"output": int(output), "errors": int(errors)}

    def due(self, at: int, limit: int) -> list[str]:
        """Ids of up to ``limit`` unfinished batches due at or before ``at``.

        Earliest due first, ties in creation order; read through the due-time
        index. Each one answered is leased to this store (see the class):
        batches another store holds are left out while its heartbeat lasts.
        """
        return [row[0] for row in self._claim(at, limit)]

    def _due_states(
        self, at: int, limit: int
    ) -> list[tuple[str, tuple[Batch, Work | None], str]]:
        """:meth:`due`, each with its batch, work and project as claimed.

        As :meth:`batch_and_work` reads them, in the claim's statement (the
        worker's pass: a round trip less for each batch it steps).
        """
        rows = self._claim(at, limit, "body", "work", "due_at", "epoch", "project")
        return [(row[0], _state(*row[1:5]), row[5]) for row in rows]

    def _as_stored(self, ids: Sequence[str]) -> dict[str, tuple[BatchStatus, int]]:
        """Each batch's stored status and epoch (if work is left): one statement."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT id, status, epoch FROM batchfsm_batches"
                f" WHERE id IN ({marks}) AND work IS NOT NULL",
                ids,
            )
        return {i: (BatchStatus(status), int(epoch)) for i, status, epoch in rows}

    def _claim(self, at: int, limit: int, *columns: str) -> list[tuple[Any, ...]]:
        interval, tick = self._intervals()
        if self._heartbeat is None:
            with self._starting:
                if self._heartbeat is None and not self._closed:
                    self._heartbeat = Heartbeat(self, SQLStore._tick, tick, self.where)
        if time.monotonic() - self._renewed > interval:
            # Before claiming, a renewal that is due: the first since the store
            # opened, or one the thread has not managed (the database was slow).
            self._renew()
        with self._db.transaction() as tx:
            return claim_due(self._db, tx, self.owner, at, limit, *columns)

    def due_count(self, at: int) -> int:
        """How many unfinished batches have work due at or before ``at`` (indexed)."""
        with self._db.transaction(write=False) as tx:
            (count,) = tx.one(
                "SELECT count(*) FROM batchfsm_batches WHERE due_at <= ?", (at,)
            )
        return int(count)

    def census(self) -> dict[str, tuple[int, int, int]]:
        """Per status: how many batches, their requests completed and failed.

        One grouped query (for ``/metrics``): a scan of the batches table.
        """
        if self._db.postgres:
            field = "(body::jsonb #>> '{{request_counts,{}}}')::bigint"
        else:
            field = "json_extract(body, '$.request_counts.{}')"
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT status, count(*), sum({field.format('completed')}),"
                f" sum({field.format('failed')}) FROM batchfsm_batches"
                " GROUP BY status"
            )
        return {
            status: (int(n), int(done or 0), int(failed or 0))
            for status, n, done, failed in rows
        }

    def earliest_due(self) -> int | None:
        """The earliest due time of the unfinished batches, whoever holds them.

        None if there are none. Read through the due-time index; leases nothing.

        Example:
            >>> import batchfsm as bf
            >>> from batchfsm.emulator import SQLiteStore, Work
            >>> store = SQLiteStore(":memory:")
            >>> store.earliest_due()
            >>> store.insert(bf.new_batch(id="batch_1", input_file_id="f",
            ...                           endpoint="/v1/embeddings", created_at=1),
            ...              Work(due_at=5))
            >>> store.earliest_due(), store.due(4, limit=10)
            (5, [])
            >>> store.close()
        """
        with self._db.transaction(write=False) as tx:
            (earliest,) = tx.one(
                "SELECT min(due_at) FROM batchfsm_batches WHERE due_at IS NOT NULL"
            )
        return None if earliest is None else int(earliest)

    # -- settings ------------------------------------------------------------------

    def setting(self, key: str, default: str) -> str:
        """The stored value of ``key``; stores ``default`` first if there is none.

        The first writer wins, so every process sharing the database reads the
        same value (the clock's anchor relies on this).
        """
        with self._db.transaction() as tx:
            row = tx.one("SELECT value FROM batchfsm_settings WHERE key = ?", (key,))
            if row is not None:
                return str(row[0])
            tx.run(
                "INSERT INTO batchfsm_settings (key, value) VALUES (?, ?)",
                (key, default),
            )
            return default

    def count(self, key: str) -> int:
        """Add one to the counter ``key`` and return it (1 the first time)."""
        with self._db.transaction() as tx:
            lock = self._db.lock_sql
            row = tx.one(
                f"SELECT value FROM batchfsm_settings WHERE key = ? {lock}", (key,)
            )
            value = 1 if row is None else int(row[0]) + 1
            if row is None:
                tx.run(
                    "INSERT INTO batchfsm_settings (key, value) VALUES (?, ?)",
                    (key, str(value)),
                )
            else:
                tx.run(
                    "UPDATE batchfsm_settings SET value = ? WHERE key = ?",
                    (str(value), key),
                )
            return value


class SQLIds:
    """An :class:`IdSource` on an :class:`SQLStore`.

    Random by default; with a seed, the same ids as :class:`MemoryIds` with
    that seed, from a counter kept in the database, so that a restarted server
    (or another process) never hands out an id again.
    """

    def __init__(self, store: SQLStore, seed: int | None = None) -> None:
        self._store = store
        self.seed = seed
        self._random = MemoryIds(None)

    def new_id(self, prefix: str, length: int) -> str:
        """``prefix`` and ``length`` lowercase hex digits, never returned before."""
        if self.seed is None:
            return self._random.new_id(prefix, length)
        number = self._store.count(f"ids:{self.seed}")
        return seeded_id(self.seed, number, prefix, length)
