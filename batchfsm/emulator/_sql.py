"""What the SQLite and PostgreSQL stores share: the schema's upkeep and the SQL.

A :class:`_Database` is a connection (or one per thread) and a dialect: how to
open a transaction, how to lock a row, how to claim due work. Everything above
it — the conditional transition, leases with an epoch, pages, files, settings —
is written once here, in SQL both dialects accept (``?`` placeholders, turned
into ``%s`` for psycopg).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from .._convert import dumps, loads
from .._errors import BatchFSMError
from .._model import Batch, BatchStatus
from ._migrations import CHUNK_BYTES, LATEST, MIGRATIONS, add_chunks
from ._stores import (
    FileObject,
    FilePage,
    MemoryIds,
    NewFile,
    Order,
    ResultKind,
    Work,
    seeded_id,
)

__all__ = [
    "AnchoredClock",
    "SQLFiles",
    "SQLIds",
    "SQLStore",
    "SchemaVersionError",
    "StoreError",
]

log = logging.getLogger("batchfsm.emulator")


class StoreError(BatchFSMError):
    """A database a store cannot use; the message is one line saying why.

    Example:
        >>> import batchfsm as bf
        >>> issubclass(StoreError, bf.BatchFSMError)
        True
    """


class SchemaVersionError(StoreError):
    """The database's schema is newer than this batchfsm: it is left alone.

    Attributes:
        where: the database (a path, or a URL without its password).
        found: the version the database carries.
        supported: the newest version this batchfsm knows.

    Example:
        >>> print(SchemaVersionError("db.sqlite", 9, 2))
        db.sqlite has schema version 9, newer than this batchfsm's 2: upgrade batchfsm
    """

    def __init__(self, where: str, found: int, supported: int) -> None:
        super().__init__(where, found, supported)
        self.where = where
        self.found = found
        self.supported = supported

    def __str__(self) -> str:
        return (
            f"{self.where} has schema version {self.found}, newer than this "
            f"batchfsm's {self.supported}: upgrade batchfsm"
        )


class ThreadConnections:
    """One database connection per live thread (SQLite files and PostgreSQL alike).

    Threads come and go (a pool's idle threads end): adding a connection closes
    those of threads that ended, so they stay one per live thread.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: dict[threading.Thread, Any] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._all)

    def current(self) -> Any:
        """This thread's connection, or None."""
        return getattr(self._local, "conn", None)

    def add(self, conn: Any) -> None:
        """Make ``conn`` this thread's connection."""
        self._local.conn = conn
        with self._lock:
            for thread, other in list(self._all.items()):
                if not thread.is_alive():
                    other.close()
                    del self._all[thread]
            self._all[threading.current_thread()] = conn

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for conn in self._all.values():
                conn.close()
            self._all.clear()


class _Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _Tx:
    """One open transaction: run SQL written with ``?`` placeholders."""

    def __init__(self, raw: Any, postgres: bool) -> None:
        self._raw = raw
        self._postgres = postgres

    def run(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        if self._postgres:
            sql = sql.replace("?", "%s")
        cursor: _Cursor = self._raw.execute(sql, params)
        return cursor

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.run(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.run(sql, params).fetchall()


class _Database(Protocol):
    """A connection and its dialect (see :mod:`._sqlite`, :mod:`._postgres`)."""

    where: str
    postgres: bool
    #: SQL for the database's real time now, in Unix seconds (leases use it, so
    #: processes on different machines agree on when a lease ran out).
    now_sql: str
    #: What to append to a SELECT that locks the rows it reads.
    lock_sql: str
    #: ... and that skips rows another transaction holds.
    skip_locked_sql: str

    def transaction(self, write: bool = True) -> contextlib.AbstractContextManager[_Tx]:
        """A transaction: committed on exit, rolled back on an error."""

    def version(self, tx: _Tx) -> int:
        """The schema version recorded in the database (0: none)."""

    def set_version(self, tx: _Tx, version: int) -> None:
        """Record the schema version, inside the migration's transaction."""

    def prepare(self) -> None:
        """Settle the connection's modes, once the database is known to be ours."""

    def lock_schema(self, tx: _Tx) -> None:
        """Keep other processes from migrating at the same time."""

    def foreign_tables(self, tx: _Tx) -> list[str]:
        """Tables in the database that are not batchfsm's (see :meth:`migrate`)."""

    def close(self) -> None:
        """Close every connection."""


def migrate(db: _Database) -> int:
    """Bring the schema up to :data:`LATEST`; the version found before.

    Raises:
        SchemaVersionError: the database is newer than this batchfsm.
    """
    with db.transaction() as tx:
        db.lock_schema(tx)
        found = db.version(tx)
        if found > LATEST:
            raise SchemaVersionError(db.where, found, LATEST)
        if found == 0 and not db.postgres and db.foreign_tables(tx):
            # An SQLite file is one application's: never add ours to another's.
            raise StoreError(
                f"{db.where} is an SQLite database of another application "
                "(it has tables and no batchfsm schema version)"
            )
    db.prepare()
    for migration in MIGRATIONS[found:]:
        with db.transaction() as tx:
            db.lock_schema(tx)
            if db.version(tx) >= migration.version:  # another process got here
                continue
            statements = migration.postgres if db.postgres else migration.sqlite
            for statement in statements:
                tx.run(statement)
            if migration.step is not None:
                migration.step(tx)
            db.set_version(tx, migration.version)
    return found


def _work_json(work: Work) -> str:
    # due_at and epoch have columns of their own (the index, the fence).
    fields = attrs.asdict(work)
    del fields["due_at"], fields["epoch"]
    return json.dumps(fields, separators=(",", ":"))


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _dead_here(owner: str) -> bool:
    """Whether ``owner`` was a process on this machine that no longer runs."""
    try:
        host, pid, _ = owner.rsplit(":", 2)
        number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or number == os.getpid():
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. alive but another user's: not ours to judge
        return False
    return False


class SQLStore:
    """A :class:`BatchStore` in SQL, with its :class:`FileStore` and ids.

    The part of :class:`SQLiteStore` and :class:`PostgresStore` that does not
    depend on the database. Every method is one transaction, committed before
    it returns. :meth:`write` is the one conditional write of the seam: a
    single ``UPDATE … SET …, epoch = epoch + 1 WHERE id = ? AND status = ? AND
    epoch = ?``, so every write makes every earlier read stale.

    Several processes may share the database. :meth:`due` leases what it
    answers to this store (``owner``) for ``lease_seconds``: other stores'
    :meth:`due` skip it while the lease lasts (PostgreSQL reads with ``FOR
    UPDATE SKIP LOCKED``, so claimers never wait for each other), and take it
    over once the lease ran out — the holder died or stalled — moving its epoch
    on, so the previous holder's late write is refused.

    Attributes:
        files: the :class:`FileStore` on the same database.
        owner: who holds the leases this store takes (host, process, random).
        lease_seconds: how long a lease lasts unless renewed.

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

    def __init__(self, db: _Database, *, lease_seconds: float = 30.0) -> None:
        if not (0 < lease_seconds < float("inf")):
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self._db = db
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        self.files = SQLFiles(db)
        self.owner = _owner()
        self.lease_seconds = float(lease_seconds)
        self._reclaim_dead()

    def _reclaim_dead(self) -> None:
        # A restart on the same machine need not wait for a killed process's
        # leases to run out: a process that no longer runs writes nothing more.
        with self._db.transaction() as tx:
            holders = [
                owner
                for (owner,) in tx.all(
                    "SELECT DISTINCT lease_owner FROM batchfsm_batches"
                    " WHERE lease_owner IS NOT NULL"
                )
            ]
            for owner in filter(_dead_here, holders):
                tx.run(
                    "UPDATE batchfsm_batches SET lease_owner = NULL,"
                    " lease_until = NULL, epoch = epoch + 1 WHERE lease_owner = ?",
                    (owner,),
                )

    @property
    def where(self) -> str:
        """The database, for messages (a path, or a URL without its password)."""
        return self._db.where

    def ids(self, seed: int | None = None) -> SQLIds:
        """An :class:`IdSource` on this database (a seeded one keeps its counter)."""
        return SQLIds(self, seed)

    def close(self) -> None:
        """Give back this store's leases (others may take them now), and close."""
        try:
            with self._db.transaction() as tx:
                tx.run(
                    "UPDATE batchfsm_batches SET lease_owner = NULL,"
                    " lease_until = NULL WHERE lease_owner = ?",
                    (self.owner,),
                )
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

    def insert(self, batch: Batch, work: Work) -> None:
        """Add a new batch and its work (its id must be new: ``KeyError``).

        Example:
            >>> import batchfsm as bf
            >>> from batchfsm.emulator import SQLiteStore, Work
            >>> store = SQLiteStore(":memory:")
            >>> store.insert(bf.new_batch(id="batch_1", input_file_id="f",
            ...                           endpoint="/v1/embeddings", created_at=1),
            ...              Work(due_at=2))
            >>> store.get("batch_1").status, store.work("batch_1").due_at
            (<BatchStatus.VALIDATING: 'validating'>, 2)
        """
        with self._db.transaction() as tx:
            if tx.one("SELECT 1 FROM batchfsm_batches WHERE id = ?", (batch.id,)):
                raise KeyError(f"batch {batch.id} exists already")
            tx.run(
                "INSERT INTO batchfsm_batches (id, status, body, work, due_at, epoch)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    batch.id,
                    batch.status.value,
                    dumps(batch),
                    _work_json(work),
                    work.due_at,
                    work.epoch,
                ),
            )

    def get(self, batch_id: str) -> Batch | None:
        """The batch, or None."""
        with self._db.transaction(write=False) as tx:
            row = tx.one("SELECT body FROM batchfsm_batches WHERE id = ?", (batch_id,))
        return None if row is None else loads(row[0])

    def work(self, batch_id: str) -> Work | None:
        """The batch's work in progress; None if there is no such batch or it ended."""
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT work, due_at, epoch FROM batchfsm_batches WHERE id = ?",
                (batch_id,),
            )
        if row is None or row[0] is None:
            return None
        return Work(due_at=int(row[1]), epoch=int(row[2]), **json.loads(row[0]))

    def page(self, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        """Up to ``limit`` batches created before ``after``, newest first.

        Also says whether more follow.
        """
        with self._db.transaction(write=False) as tx:
            if after is None:
                rows = tx.all(
                    "SELECT body FROM batchfsm_batches ORDER BY seq DESC LIMIT ?",
                    (limit + 1,),
                )
            else:
                rows = tx.all(
                    "SELECT body FROM batchfsm_batches WHERE seq <"
                    " (SELECT seq FROM batchfsm_batches WHERE id = ?)"
                    " ORDER BY seq DESC LIMIT ?",
                    (after, limit + 1),
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
        to ``epoch + 1`` (None: the batch ended; its work, due time, lease and
        result lines go), append the ``output`` and ``errors`` result lines and
        add ``files`` (the batch's result files) to :attr:`files`. Otherwise
        nothing is written. A failure anywhere (a file id that exists:
        ``KeyError``) rolls all of it back.

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
        """
        body = dumps(batch)
        with self._db.transaction() as tx:
            if work is None:
                updated = tx.run(
                    "UPDATE batchfsm_batches SET status = ?, body = ?, work = NULL,"
                    " due_at = NULL, epoch = epoch + 1, lease_owner = NULL,"
                    " lease_until = NULL"
                    " WHERE id = ? AND status = ? AND epoch = ? AND work IS NOT NULL",
                    (batch.status.value, body, batch.id, status.value, epoch),
                ).rowcount
                if updated == 1:
                    tx.run(
                        "DELETE FROM batchfsm_results WHERE batch_id = ?", (batch.id,)
                    )
                    for file, content in files:
                        _add_file(tx, file, content)
                return updated == 1
            updated = tx.run(
                "UPDATE batchfsm_batches SET status = ?, body = ?, work = ?,"
                " due_at = ?, epoch = epoch + 1"
                " WHERE id = ? AND status = ? AND epoch = ? AND work IS NOT NULL",
                (
                    batch.status.value,
                    body,
                    _work_json(work),
                    work.due_at,
                    batch.id,
                    status.value,
                    epoch,
                ),
            ).rowcount
            if updated != 1:
                return False
            for kind, lines in (("output", output), ("errors", errors)):
                if lines:
                    tx.run(
                        "INSERT INTO batchfsm_results (batch_id, kind, lines)"
                        " VALUES (?, ?, ?)",
                        (batch.id, kind, "".join(line + "\n" for line in lines)),
                    )
            for file, content in files:
                _add_file(tx, file, content)
            return True

    def results(self, batch_id: str, kind: ResultKind) -> bytes:
        """The result lines of ``kind`` written so far, each ending in a newline."""
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT lines FROM batchfsm_results WHERE batch_id = ? AND kind = ?"
                " ORDER BY seq",
                (batch_id, kind),
            )
        return "".join(lines for (lines,) in rows).encode()

    def due(self, at: int, limit: int) -> list[str]:
        """Ids of up to ``limit`` unfinished batches due at or before ``at``.

        Earliest due first, ties in creation order; read through the due-time
        index. Each one answered is leased to this store (see the class):
        batches another store holds are left out until its lease runs out.
        """
        db = self._db
        with db.transaction() as tx:
            rows = tx.all(
                "SELECT id, lease_owner FROM batchfsm_batches WHERE due_at <= ?"
                " AND (lease_owner IS NULL OR lease_owner = ?"
                f" OR lease_until < {db.now_sql})"
                f" ORDER BY due_at, seq LIMIT ? {db.skip_locked_sql}",
                (at, self.owner, limit),
            )
            if not rows:
                return []
            ids = [batch_id for batch_id, _ in rows]
            taken = [i for i, holder in rows if holder not in (None, self.owner)]
            marks = ", ".join("?" * len(ids))
            tx.run(
                "UPDATE batchfsm_batches SET lease_owner = ?,"
                f" lease_until = {db.now_sql} + ? WHERE id IN ({marks})",
                (self.owner, self.lease_seconds, *ids),
            )
            if taken:
                # Taken over from a holder whose lease ran out: fence it off.
                marks = ", ".join("?" * len(taken))
                tx.run(
                    "UPDATE batchfsm_batches SET epoch = epoch + 1"
                    f" WHERE id IN ({marks})",
                    taken,
                )
            return ids

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


def _add_file(tx: _Tx, file: FileObject, content: bytes) -> None:
    if tx.one("SELECT 1 FROM batchfsm_files WHERE id = ?", (file.id,)):
        raise KeyError(f"file {file.id} exists already")
    tx.run(
        "INSERT INTO batchfsm_files (id, body, purpose, expires_at)"
        " VALUES (?, ?, ?, ?)",
        (file.id, json.dumps(file.to_dict()), file.purpose, file.expires_at),
    )
    add_chunks(tx, file.id, content)


#: The chunks of a file from ``n`` to ``n``, in order; one row with NULLs for a
#: file with none of them, no row for no such file.
_CHUNKS = (
    "SELECT c.data FROM batchfsm_files f LEFT JOIN batchfsm_file_chunks c"
    " ON c.file_id = f.id AND c.n BETWEEN ? AND ? WHERE f.id = ? ORDER BY c.n"
)


class SQLFiles:
    """The :class:`FileStore` of an :class:`SQLStore`: metadata and content.

    The content is stored in chunks (see :mod:`._migrations`): a read costs
    the chunks its slice covers, whatever the size of the file.
    """

    def __init__(self, db: _Database) -> None:
        self._db = db

    def add(self, file: FileObject, content: bytes) -> None:
        """Store ``content`` as ``file`` (its id must be new: ``KeyError``)."""
        with self._db.transaction() as tx:
            _add_file(tx, file, content)

    def get(self, file_id: str) -> FileObject | None:
        """The File object, or None."""
        with self._db.transaction(write=False) as tx:
            row = tx.one("SELECT body FROM batchfsm_files WHERE id = ?", (file_id,))
        return None if row is None else FileObject(**json.loads(row[0]))

    def content(self, file_id: str) -> bytes | None:
        """The file's bytes, or None."""
        return self._chunks(file_id, 0, 2**62)

    def read(self, file_id: str, offset: int, size: int) -> bytes | None:
        """At most ``size`` bytes of the file from ``offset``; None if no such file.

        Example:
            >>> from batchfsm.emulator import SQLiteStore
            >>> from batchfsm.emulator._migrations import CHUNK_BYTES
            >>> files = SQLiteStore(":memory:").files
            >>> content = bytes(range(256)) * (CHUNK_BYTES // 128)  # two chunks
            >>> files.add(FileObject(id="file-1", bytes=len(content), created_at=1,
            ...                      filename="a.jsonl", purpose="batch"), content)
            >>> across = files.read("file-1", CHUNK_BYTES - 2, 4)  # both chunks
            >>> across == content[CHUNK_BYTES - 2 : CHUNK_BYTES + 2]
            True
            >>> files.read("file-1", len(content), 4), files.read("file-2", 0, 4)
            (b'', None)
        """
        if size <= 0:
            return b"" if self.get(file_id) is not None else None
        first = offset // CHUNK_BYTES
        data = self._chunks(file_id, first, (offset + size - 1) // CHUNK_BYTES)
        if data is None:
            return None
        start = offset - first * CHUNK_BYTES
        return data[start : start + size]

    def _chunks(self, file_id: str, first: int, last: int) -> bytes | None:
        with self._db.transaction(write=False) as tx:
            rows = tx.all(_CHUNKS, (first, last, file_id))
        if not rows:
            return None
        return b"".join(bytes(data) for (data,) in rows if data is not None)

    def delete(self, file_id: str) -> bool:
        """Delete; whether there was such a file."""
        with self._db.transaction() as tx:
            tx.run("DELETE FROM batchfsm_file_chunks WHERE file_id = ?", (file_id,))
            deleted = tx.run(
                "DELETE FROM batchfsm_files WHERE id = ?", (file_id,)
            ).rowcount
        return deleted == 1

    def list(self) -> list[FileObject]:
        """Every File object, newest first."""
        with self._db.transaction(write=False) as tx:
            rows = tx.all("SELECT body FROM batchfsm_files ORDER BY seq DESC")
        return [FileObject(**json.loads(body)) for (body,) in rows]

    def page(
        self,
        after: str | None,
        limit: int,
        *,
        order: Order = "desc",
        purpose: str | None = None,
        now: int | None = None,
    ) -> FilePage:
        """Up to ``limit`` files in ``order`` after ``after``; whether more follow.

        One query read through the ``seq`` key, or the ``(purpose, seq)``
        index.

        Example:
            >>> from batchfsm.emulator import FileObject, SQLiteStore
            >>> store = SQLiteStore(":memory:")
            >>> for i in (1, 2, 3):
            ...     store.files.add(FileObject(id=f"file-{i}", bytes=0, created_at=i,
            ...                                filename="a.jsonl", purpose="batch",
            ...                                expires_at=3 if i == 2 else None), b"")
            >>> page, more = store.files.page("file-3", 5, now=3)
            >>> [f.id for f in page], more
            (['file-1'], False)
            >>> store.close()
        """
        where: list[str] = []
        params: list[Any] = []
        if after is not None:
            sign = ">" if order == "asc" else "<"
            where.append(f"seq {sign} (SELECT seq FROM batchfsm_files WHERE id = ?)")
            params.append(after)
        if purpose is not None:
            where.append("purpose = ?")
            params.append(purpose)
        if now is not None:
            where.append("(expires_at IS NULL OR expires_at > ?)")
            params.append(now)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        direction = "ASC" if order == "asc" else "DESC"
        with self._db.transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT body FROM batchfsm_files{clause}"
                f" ORDER BY seq {direction} LIMIT ?",
                (*params, limit + 1),
            )
        page = [FileObject(**json.loads(body)) for (body,) in rows[:limit]]
        return page, len(rows) > limit


class AnchoredClock:
    """The real time, ``speed`` times faster, from an anchor kept in a store.

    The first process to open a database anchors its emulated clock there
    (real and emulated time, and the speed); every process that opens it later
    reads the same anchor, so a ``--speed`` server's time continues across
    restarts and is the same in every process that shares the database. Time
    never runs backwards within a process, even if the system clock does.

    Raises:
        StoreError: the database's clock runs at another speed.

    Example:
        >>> from batchfsm.emulator import SQLiteStore
        >>> store = SQLiteStore(":memory:")
        >>> first = AnchoredClock(store, speed=60)
        >>> AnchoredClock(store, speed=60).anchor == first.anchor
        True
        >>> AnchoredClock(store, speed=2)
        Traceback (most recent call last):
        ...
        batchfsm.emulator._sql.StoreError: :memory: keeps an emulated clock running
        at --speed 60; start with that speed, or use another database
    """

    def __init__(self, store: SQLStore, speed: float = 1.0) -> None:
        if not (0 < speed < float("inf")):
            raise ValueError(f"speed must be finite and positive, got {speed}")
        real = time.time()
        proposal = json.dumps({"real": real, "emulated": real, "speed": speed})
        anchor = json.loads(store.setting("clock", proposal))
        if anchor["speed"] != speed:
            raise StoreError(
                f"{store.where} keeps an emulated clock running at --speed "
                f"{anchor['speed']:g}; start with that speed, or use another database"
            )
        self.speed = speed
        self._real = float(anchor["real"])
        self._emulated = float(anchor["emulated"])
        self._last = 0.0
        self._lock = threading.Lock()

    @property
    def anchor(self) -> tuple[float, float]:
        """The real and the emulated time at the anchor, in Unix seconds."""
        return self._real, self._emulated

    def now(self) -> float:
        """The emulated time now, in Unix seconds."""
        emulated = self._emulated + (time.time() - self._real) * self.speed
        with self._lock:
            self._last = max(self._last, emulated)
            return self._last
