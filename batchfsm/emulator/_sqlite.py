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
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ._database import ThreadConnections, Tx
from ._sql import SQLStore
from ._store_errors import StoreError

__all__ = ["SQLiteStore"]


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
        self._first = self._connect()  # fail now, with the reason

    def _connect(self) -> sqlite3.Connection:
        if self._shared and hasattr(self, "_first"):
            return self._first
        conn: sqlite3.Connection | None = self._conns.current()
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(
                self.where, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(_describe(self.where, exc)) from None
        self._conns.add(conn)
        return conn

    def prepare(self) -> None:
        # Only once the version is known to be ours: WAL rewrites the header.
        if self.where == ":memory:":
            return
        try:
            mode = self._connect().execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.Error as exc:  # pragma: no cover - a locked or odd file
            raise StoreError(_describe(self.where, exc)) from None
        if mode[0].lower() != "wal":  # pragma: no cover - odd filesystems
            raise StoreError(f"{self.where}: SQLite refused WAL mode ({mode[0]})")

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        turn = self._writing if write or self._shared else contextlib.nullcontext()
        with turn:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(_describe(self.where, exc)) from None
            try:
                yield Tx(conn, postgres=False)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise StoreError(_describe(self.where, exc)) from None

    def version(self, tx: Tx) -> int:
        try:
            version: int = tx.one("PRAGMA user_version")[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(_describe(self.where, exc)) from None
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


def _describe(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a usable SQLite database ({text})"
    return f"{path}: {text}"


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
