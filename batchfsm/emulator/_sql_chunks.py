"""Line chunks in PostgreSQL: one big batch's requests claimed by many processes.

The store's side of :mod:`._chunks` (which says why and when): a batch split
into line chunks (``batchfsm_line_chunks``, see :mod:`._migrations`), each
claimed by one store at a time, fenced by its ``claim`` counter, its
progress written together with the batch's counts under the batch's row
lock. Only :class:`~._postgres.PostgresStore` has them: SQLite and memory
stores run each batch in the one process that holds it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence

import attrs

from .._graph import ALLOWED
from .._json_io import dumps, loads
from .._model import Batch, BatchStatus
from .._table import Event
from ._sql import SQLStore
from ._stores import Work

__all__ = ["RUNNING", "ChunkedSQLStore", "LineChunk", "Merge"]

log = logging.getLogger("batchfsm.emulator")

#: The one status whose requests run: the status ``finalize`` leaves (from the
#: table). Chunks are claimed, and their progress written, only in it: a
#: cancel or an expiry moves the batch out of it, and every claim ends.
(RUNNING,) = (s for s, events in ALLOWED.items() if Event.FINALIZE in events)

#: How long a store that found no open chunk waits before it looks again
#: (real seconds): an idle process costs one read this often, not one a pass.
IDLE_SECONDS = 0.1


@attrs.frozen
class LineChunk:
    """One claimed range of a batch's request lines, and how far it got.

    Attributes:
        batch_id: its batch.
        start: the byte offset of its first line in the input file.
        stop: the byte offset past its last line.
        lines: the request lines in it (blank lines are none).
        done: those run (answered, or failed) so far.
        pos: the byte offset of its first line not run yet.
        ahead: the ends of the lines after ``pos`` that ran already.
        claim: the fence: the claim this copy was read under (each claim
            adds one, so a write of an older claim is refused).
    """

    batch_id: str
    start: int
    stop: int
    lines: int
    done: int
    pos: int
    ahead: tuple[int, ...]
    claim: int


#: Given the batch and its work as stored (its row locked), the two after a
#: chunk's group of answers.
Merge = Callable[[Batch, Work], tuple[Batch, Work]]

_COLUMNS = "batch_id, start, stop, lines, done, pos, ahead, claim"
_RETURNED = ", ".join(f"c.{column}" for column in _COLUMNS.split(", "))


def _chunk(row: Sequence[object]) -> LineChunk:
    batch_id, start, stop, lines, done, pos, ahead, claim = row
    return LineChunk(
        str(batch_id), int(start), int(stop), int(lines), int(done),  # type: ignore[call-overload]
        int(pos), tuple(json.loads(str(ahead))), int(claim),  # type: ignore[call-overload]
    )  # fmt: skip


#: Claim the first open chunk (oldest batch first) that no live store
#: holds; one statement, skipping the rows another claimer has locked.
_CLAIM = f"""
UPDATE batchfsm_line_chunks c SET owner = ?, claim = c.claim + 1
FROM (
    SELECT f.batch_id, f.start, f.owner FROM batchfsm_line_chunks f
    JOIN batchfsm_batches b ON b.id = f.batch_id
    WHERE f.done < f.lines AND b.status = ? AND b.work IS NOT NULL
    AND (f.owner IS NULL OR f.owner = ? OR f.owner NOT IN (
        SELECT owner FROM batchfsm_owners WHERE lease_until >= {{now}}))
    ORDER BY b.seq, f.start LIMIT 1 FOR UPDATE OF f SKIP LOCKED
) AS free
WHERE c.batch_id = free.batch_id AND c.start = free.start
RETURNING {_RETURNED}, free.owner
"""


class ChunkedSQLStore(SQLStore):
    """An :class:`SQLStore` whose big batches any of its processes may help run.

    See :mod:`._chunks`. PostgreSQL's (``FOR UPDATE OF … SKIP LOCKED``).
    """

    _idle_until = 0.0

    def split(
        self,
        batch: Batch,
        work: Work,
        *,
        status: BatchStatus,
        epoch: int,
        chunks: Sequence[tuple[int, int, int]],
    ) -> bool:
        """:meth:`write` ``batch`` and ``work``, and add its chunks.

        ``chunks``: each ``(start, stop, lines)``.

        One transaction; whether it happened (nothing is added if the write
        is refused).
        """
        with self._db.transaction() as tx:
            if not self._update(tx, batch, dumps(batch), work, status, epoch):
                return False
            for start, stop, lines in chunks:
                tx.run(
                    "INSERT INTO batchfsm_line_chunks"
                    " (batch_id, start, stop, lines, pos) VALUES (?, ?, ?, ?, ?)",
                    (batch.id, start, stop, lines, start),
                )
        self._idle_until = 0.0  # there is work for this store at once
        return True

    def claim_chunk(self) -> LineChunk | None:
        """Claim an open chunk of a running batch for this store; None if none is free.

        Free: no store holds it, or its holder's heartbeat ran out (or was
        dropped: a dead process), or it is this store's own (a run of it
        that stopped). The claim moves its fence on.
        """
        if time.monotonic() < self._idle_until:
            return None
        with self._db.transaction(write=False) as tx:
            found = tx.one(
                "SELECT 1 FROM batchfsm_line_chunks WHERE done < lines LIMIT 1"
            )
        row = None
        if found is not None:
            with self._db.transaction() as tx:
                row = tx.one(
                    _CLAIM.format(now=self._db.now_sql),
                    (self.owner, RUNNING.value, self.owner),
                )
        if row is None:
            self._idle_until = time.monotonic() + IDLE_SECONDS
            return None
        chunk, before = _chunk(row[:-1]), row[-1]
        if before is not None and before != self.owner:
            log.info(
                "took over lines %d..%d of batch %s from %s, which has no live"
                " heartbeat", chunk.start, chunk.stop, chunk.batch_id, before,
            )  # fmt: skip
        return chunk

    def earliest_due(self) -> int | None:
        """As :meth:`SQLStore.earliest_due`, the requests of chunks not run counted.

        A batch split into chunks is due at its expiry (its holder has
        nothing to do before), but its requests are due from its
        ``in_progress_at`` until they ran: so its input is not purged
        meanwhile, as it is not under a batch run in order.
        """
        with self._db.transaction(write=False) as tx:
            (earliest,) = tx.one(
                "SELECT min(t) FROM ("
                " SELECT min(due_at) AS t FROM batchfsm_batches"
                " WHERE due_at IS NOT NULL UNION ALL"
                " SELECT min((b.body::json ->> 'in_progress_at')::bigint)"
                " FROM batchfsm_line_chunks c JOIN batchfsm_batches b"
                " ON b.id = c.batch_id WHERE c.done < c.lines AND b.status = ?"
                ") AS due",
                (RUNNING.value,),
            )
        return None if earliest is None else int(earliest)

    def line_chunks(self, batch_id: str) -> list[LineChunk]:
        """The batch's chunks, in the order of their lines (none: not split)."""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT {_COLUMNS} FROM batchfsm_line_chunks WHERE batch_id = ?"
                " ORDER BY start",
                (batch_id,),
            )
        return [_chunk(row) for row in rows]

    def write_chunk(
        self,
        chunk: LineChunk,
        merge: Merge,
        output: Sequence[str] = (),
        errors: Sequence[str] = (),
    ) -> bool:
        """Write a group of a chunk's answers; whether it happened.

        In one transaction, the batch's row locked first (as every writer
        locks it before its chunks): refused if the batch is no longer
        :data:`RUNNING` or the chunk's claim moved on (taken over); else
        the chunk's ``done``, ``pos`` and ``ahead`` as given, the batch and
        its work as ``merge`` makes them from the stored ones, its epoch
        moved on (so a move decided from an older read is refused), and the
        result lines appended.
        """
        with self._db.transaction() as tx:
            row = tx.one(
                "SELECT body, work, due_at, epoch FROM batchfsm_batches WHERE id = ?"
                f" AND status = ? AND work IS NOT NULL {self._db.lock_sql}",
                (chunk.batch_id, RUNNING.value),
            )
            if row is None:
                return False
            moved = tx.run(
                "UPDATE batchfsm_line_chunks SET done = ?, pos = ?, ahead = ?"
                " WHERE batch_id = ? AND start = ? AND claim = ?",
                (
                    chunk.done, chunk.pos, json.dumps(list(chunk.ahead)),
                    chunk.batch_id, chunk.start, chunk.claim,
                ),
            )  # fmt: skip
            if moved.rowcount != 1:
                return False
            body, stored, due_at, epoch = row
            work = Work(due_at=int(due_at), epoch=int(epoch), **json.loads(stored))
            after, work_after = merge(loads(body), work)
            return self._update(
                tx, after, dumps(after), work_after, RUNNING, work.epoch,
                output, errors,
            )  # fmt: skip
