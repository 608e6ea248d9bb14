"""The SQLite store: the standard library's ``sqlite3``, WAL, one writer at a time.

Each thread has its own connection to a database file, so reads never wait for
each other or for the writer; a process's writers take turns at a lock.

Every write is a ``BEGIN IMMEDIATE`` transaction (the read-modify-write of a
transition happens under the database's write lock) and returns only after
``COMMIT``. In WAL mode with ``synchronous=NORMAL`` a committed write survives
the process being killed at any moment; a power loss may lose the last commits
before a checkpoint, never the file's consistency (``synchronous=FULL``, which
would also survive that, costs an fsync per write: about 40 times fewer
writes a second). Several processes may share one file (SQLite serialises
their writers), though PostgreSQL is the store meant for that.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ._database import ThreadConnections, Tx
from ._sql import SQLStore
from ._store_errors import StoreError, StoreUnavailable, WouldWait, sqlite_unavailable

__all__ = ["SQLiteStore"]

log = logging.getLogger("batchfsm.emulator")


class _SQLite:
    postgres = False
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    lock_sql = ""  # BEGIN IMMEDIATE holds the write lock already
    skip_locked_sql = ""

    def __init__(self, path: str) -> None:
        self.where = path
        if path != ":memory:" and Path(path).is_dir():
            raise StoreError(f"{path} is a directory, not an SQLite database file")
        # A file: a connection per live thread, so that in WAL mode reads go on
        # beside each other and beside the one writer; this process's writers
        # take turns at a lock rather than at SQLite's busy wait. ":memory:" is
        # one connection's own database: every thread shares it, in turn.
        self._shared = path == ":memory:"
        self._conns = ThreadConnections()
        self._writing = threading.RLock()
        self._lost: str | None = None  # why this file is no longer the database
        # The event loop's reads (read_now): a connection of their own that
        # never waits, taken by one caller at a time (never waited for).
        self._now: sqlite3.Connection | None = None
        self._now_taken = threading.Lock()
        if not self._shared:
            _usable_place(path)
        self._first = self._connect()  # fail now, with the reason
        self._identity = None if self._shared else _identity(path)
        self._reserve = None if self._shared else Path(f"{path}-reserve")
        if self._reserve is not None and not _keep_reserve(self._reserve):
            self.close()
            raise StoreError(
                f"{path}: the disk is full (no room for its reserve of "
                f"{RESERVE_BYTES:,} bytes); free some space"
            )

    def tend(self) -> None:
        """Check the file is ours; make its reserve whole again where it is not.

        A reserve given up (or short) is made again from the room the disk
        has, the space that deletes freed inside the database given back to
        the disk first: the reserve comes before any new content.
        """
        self.check()
        reserve = self._reserve
        if reserve is None or _reserve_size(reserve) >= RESERVE_BYTES:
            return
        with self._writing:
            self._give_back()
            _keep_reserve(reserve)

    def _give_back(self) -> None:
        """Give the pages that deletes freed back to the disk (SQLite's freelist).

        In steps, each checkpointed and its log emptied, so that on a full
        disk no step needs more room than one step's pages; a database made
        without incremental auto-vacuum (by an earlier batchfsm) keeps them.
        """
        conn = self._connect()
        with contextlib.suppress(sqlite3.Error):
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                return  # not INCREMENTAL: a database made before it
            while conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
                before = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA incremental_vacuum({_VACUUM_STEP})").fetchall()
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                if conn.execute("PRAGMA page_count").fetchone()[0] >= before:
                    break  # nothing went back: no use trying again

    def make_room(self) -> bool:
        """Give up the reserve file beside the database: a delete can pass now.

        In WAL mode a delete writes its pages to the log first: on a disk
        that is full, even the delete that would free space fails. The
        reserve (:data:`RESERVE_BYTES`, made when the store opens, and
        made again by :meth:`tend` right after the delete and at each
        heartbeat) is the room it needs: given up, it lets the log be
        checkpointed into the database and emptied, and the delete then has
        the log's room.
        """
        if self._reserve is None or _free_bytes(self._reserve.parent) > RESERVE_BYTES:
            return False  # not for want of space: the reserve would not help
        with self._writing:
            try:
                self._reserve.unlink()
            except FileNotFoundError:
                return False
            # The log's pages into the database (which may grow by as much as
            # the log holds, at most about the reserve), then the log emptied.
            with contextlib.suppress(sqlite3.Error):
                self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info(
            "%s: the disk is full; its reserve of %s bytes was given up so that "
            "deletes can free space",
            self.where,
            f"{RESERVE_BYTES:,}",
        )
        return True

    def check(self) -> None:
        """Refuse (:class:`StoreUnavailable`) once the file is not ours any more.

        A file deleted (or replaced) under the server keeps answering through
        the open connections, but what is written to it is lost when the
        server stops: from the moment it is noticed (here, before each write
        and at each heartbeat) every write is refused, with one log line.
        """
        if self._lost is None and self._identity is not None:
            now = _identity(self.where)
            if now != self._identity:
                what = "deleted" if now is None else "replaced by another file"
                self._lost = (
                    f"{self.where} was {what} while the server was using it: "
                    "no more writes are taken (they would be lost); restart the "
                    "server once the database file is back in place"
                )
                log.error("%s", self._lost)
        if self._lost is not None:
            raise StoreUnavailable(self._lost, logged=True)

    def _connect(self) -> sqlite3.Connection:
        if self._shared and hasattr(self, "_first"):
            return self._first
        conn: sqlite3.Connection | None = self._conns.current()
        if conn is not None:
            return conn
        if hasattr(self, "_first"):
            self.check()  # never a new, empty file where the database was
        try:
            conn = sqlite3.connect(
                self.where, isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as exc:
            raise _unusable(self.where, exc) from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")  # a file not SQLite: refused
        except sqlite3.Error as exc:
            conn.close()  # refused, and never left open
            raise _unusable(self.where, exc) from None
        self._conns.add(conn)
        return conn

    def prepare(self) -> None:
        # Only once the version is known to be ours: WAL rewrites the header.
        if self.where == ":memory:":
            return
        try:
            conn = self._connect()
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                # A new file: pages that deletes free can go back to the disk
                # (see _give_back). Set before the first table; its VACUUM
                # writes the empty file's header again, at no cost.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM")
            mode = self._connect().execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.Error as exc:  # pragma: no cover - a locked or odd file
            raise _unusable(self.where, exc) from None
        if mode[0].lower() != "wal":  # pragma: no cover - odd filesystems
            raise StoreError(f"{self.where}: SQLite refused WAL mode ({mode[0]})")

    def statement(self) -> contextlib.AbstractContextManager[Tx]:
        return self.transaction()  # a write takes the file's one writer's turn

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        turn = self._writing if write or self._shared else contextlib.nullcontext()
        with turn:
            if write:
                self.check()
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise _unusable(self.where, exc) from None
            try:
                yield Tx(conn, postgres=False)
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite rolls some failures back by itself (a full disk, an
                # I/O error, a failed COMMIT): a ROLLBACK then would fail and
                # hide the real error behind "no transaction is active".
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and sqlite_unavailable(exc):
                    raise StoreUnavailable(_describe(self.where, exc)) from exc
                raise

    @contextlib.contextmanager
    def read_now(self) -> Iterator[Tx]:
        """A read transaction that never waits (WAL: readers wait for no writer).

        On a connection of its own whose busy timeout is 0: where SQLite would
        wait (a recovery, an exclusive lock, another caller using it now), it
        raises :class:`WouldWait` at once, before anything is read. Each read
        is a transaction of its own, so it sees every write committed before
        it began, by any process sharing the file.
        """
        if self._shared or not self._now_taken.acquire(blocking=False):
            raise WouldWait
        try:
            if self._now is None:
                self._now = self._connect_now()
            conn = self._now
            try:
                conn.execute("BEGIN")
                yield Tx(conn, postgres=False)
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    raise WouldWait from None
                raise _unusable(self.where, exc) from None
            finally:
                if conn.in_transaction:  # a read: its end is all there is to do
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
        finally:
            self._now_taken.release()

    def _connect_now(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.where, isolation_level=None, check_same_thread=False, timeout=0
            )
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise _unusable(self.where, exc) from None
        return conn

    def version(self, tx: Tx) -> int:
        try:
            version: int = tx.one("PRAGMA user_version")[0]
        except sqlite3.DatabaseError as exc:
            raise _unusable(self.where, exc) from None
        return version

    def set_version(self, tx: Tx, version: int) -> None:
        tx.run(f"PRAGMA user_version = {int(version)}")

    def lock_schema(self, tx: Tx) -> None:
        pass  # BEGIN IMMEDIATE: no other writer until this transaction ends

    def foreign_tables(self, tx: Tx) -> list[str]:
        return [
            name
            for (name,) in tx.all(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'batchfsm\\_%' ESCAPE '\\'"
                " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            )
        ]

    def close(self) -> None:
        with self._writing:
            self._conns.close()
            with self._now_taken:
                if self._now is not None:
                    self._now.close()
                    self._now = None


#: Free space below which a database's disk counts as full at start.
MIN_FREE_BYTES = 1 << 20


#: Disk space kept beside an SQLite database for deletes on a full disk:
#: more than the write-ahead log holds before SQLite checkpoints it (1,000
#: pages of 4 KiB), so that once it is given up the log can be moved into
#: the database and emptied. Given up, it is made again as soon as there is
#: room, before new content (deletes give their space back to the disk, in
#: a database made with incremental auto-vacuum); on a disk with less room
#: than this, as much of it as fits.
RESERVE_BYTES = 8 << 20


#: Pages given back to the disk per step of :meth:`_SQLite._give_back`.
_VACUUM_STEP = 256

#: The reserve grows in whole steps of this much (and a step short of the
#: disk's last free bytes, which the filesystem needs for itself).
_RESERVE_STEP = 256 << 10


def _reserve_size(reserve: Path) -> int:
    """The bytes the reserve file holds now (0: none)."""
    try:
        return reserve.stat().st_size
    except OSError:
        return 0


def _keep_reserve(reserve: Path) -> bool:
    """Make the reserve whole, or as much of it as the disk has room for.

    Real blocks, not a sparse file. Grown in place, so whatever part of it
    could be made stays and is grown at the next call: on a small disk a
    partial reserve is there for the next full disk, rather than none.
    Returns whether it is whole.
    """
    have = _reserve_size(reserve)
    if have >= RESERVE_BYTES:
        return True
    room = _free_bytes(reserve.parent) - _RESERVE_STEP
    want = min(RESERVE_BYTES, have + max(0, room) // _RESERVE_STEP * _RESERVE_STEP)
    if want <= have:
        return False
    try:
        with open(reserve, "ab") as out:
            try:  # blocks allocated, nothing written: no cost to speak of
                os.posix_fallocate(out.fileno(), have, want - have)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                out.write(bytes(want - have))  # a filesystem without it
    except OSError:
        return False
    return want >= RESERVE_BYTES


def _free_bytes(folder: Path) -> int:
    """The bytes free for us on ``folder``'s filesystem (0 if it cannot be told)."""
    try:
        space = os.statvfs(folder)
    except OSError:  # the directory went away
        return 0
    return space.f_bavail * space.f_frsize


def _identity(path: str) -> tuple[int, int] | None:
    """The file at ``path`` (device, inode), or None if there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _usable_place(path: str) -> None:
    """Refuse, in one line, a database whose directory is gone, read-only or full."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise StoreError(f"{path}: the directory {folder} does not exist")
    try:
        space = os.statvfs(folder)
    except OSError:  # pragma: no cover - a filesystem without statvfs
        return
    writable = os.access(folder, os.W_OK) and (
        not os.path.exists(path) or os.access(path, os.W_OK)
    )
    if space.f_flag & os.ST_RDONLY or not writable:
        # SQLite would open it and fail at the first write (or at its WAL).
        where = "on a read-only filesystem" if space.f_flag & os.ST_RDONLY else ""
        raise StoreError(
            f"{path} is read-only{' (' + where + ')' if where else ''}: the "
            "server writes to its database; make it writable, or use another"
        )
    free = space.f_bavail * space.f_frsize
    if free < MIN_FREE_BYTES:
        raise StoreError(
            f"{path}: the disk is full ({free:,} bytes free, at least "
            f"{MIN_FREE_BYTES:,} needed to start); free some space"
        )


def _busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLite's "busy" or "locked": a wait refused, not a fault."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return str(exc).startswith(("database is locked", "database table is locked"))


def _unusable(path: str, exc: sqlite3.Error) -> StoreError:
    """The store's error for ``exc``: unavailable (now) or unusable (at all)."""
    kind = StoreUnavailable if sqlite_unavailable(exc) else StoreError
    return kind(_describe(path, exc))


#: What each of SQLite's primary result codes means to an operator.
_MEANING = {
    8: "is read-only",  # SQLITE_READONLY
    10: "had an I/O error",  # SQLITE_IOERR
    13: "is on a full disk",  # SQLITE_FULL
    14: "cannot be opened",  # SQLITE_CANTOPEN
}


def _describe(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a usable SQLite database ({text})"
    meaning = _MEANING.get((getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF)
    return f"{path} {meaning} ({text})" if meaning else f"{path}: {text}"


class SQLiteStore(SQLStore):
    """Batches, work in progress and files in one SQLite file (WAL).

    Args:
        path: the database file (created if missing), or ``":memory:"``.
        lease_seconds: how long this store's leases last after its last
            heartbeat (renewed every third of it while the store is open):
            a process that dies or stalls has the batches it holds taken
            over by the others this long after (see :class:`SQLStore`).

    Raises:
        StoreError: the file is not an SQLite database, or another
            application's; SchemaVersionError: it is newer than this batchfsm.

    Example:
        >>> from batchfsm.emulator import Emulator
        >>> store = SQLiteStore(":memory:")  # a file path to keep it
        >>> emulator = Emulator(store=store, files=store.files, ids=store.ids())
        >>> emulator.create_file(b"{}", "in.jsonl", "batch").bytes
        2
        >>> store.close()
    """

    def __init__(self, path: str | Path, *, lease_seconds: float = 30.0) -> None:
        super().__init__(_SQLite(str(path)), lease_seconds=lease_seconds)
