"""The PostgreSQL store: psycopg 3, a connection per live thread, many processes.

Several processes (on several machines) may share the database: each claims
due batches with ``SELECT … FOR UPDATE SKIP LOCKED`` and keeps them while its
heartbeat lasts; a batch taken over has its epoch moved on, which fences off
the stalled holder's late writes. Heartbeats are timed by the database's clock,
so the processes' own clocks need not agree.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any

from .._extras import missing_extra
from ._database import ThreadConnections, Tx
from ._sql_chunks import ChunkedSQLStore
from ._store_errors import (
    StoreError,
    StoreUnavailable,
    WouldWait,
    postgres_unavailable,
)

__all__ = ["PostgresStore"]

#: Any number will do, as long as it is batchfsm's: the advisory lock that
#: keeps two processes from migrating one database at once.
_SCHEMA_LOCK = 0x62617463  # "batc"


def _one_line(where: str, exc: Exception) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{where}: {first}"


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


class _Postgres:
    postgres = True
    now_sql = "extract(epoch from clock_timestamp())::double precision"
    lock_sql = "FOR UPDATE"
    skip_locked_sql = "FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(missing_extra(exc, "postgres")) from None
        self._psycopg = psycopg
        self.url = url
        self.where = _redact(url)
        self._conns = ThreadConnections()
        self._cursors = threading.local()
        self._connect()  # fail now, with the reason, rather than on first use

    def _cursor(self, conn: Any) -> Any:
        """This thread's cursor on ``conn``, made once per connection.

        A cursor made per statement (``conn.execute``) costs a third of the
        driver's time of a short statement. One cursor serves every
        statement of the thread: each caller reads what a statement returns
        (``Tx.one``, ``Tx.all``, a count of rows) before the next one runs.
        """
        held = getattr(self._cursors, "held", None)
        if held is None or held[0] is not conn:
            held = self._cursors.held = (conn, conn.cursor())
        return held[1]

    def _connect(self) -> Any:
        # A connection the server dropped (terminated, restarted) is marked
        # closed by psycopg once an operation on it failed: the next
        # transaction of that thread opens a new one. A health check before
        # each transaction (a pool's) would cost a round trip each and still
        # not catch a drop between the check and the statement.
        conn = self._conns.current()
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            kind = StoreUnavailable if postgres_unavailable(exc) else StoreError
            raise kind(_one_line(f"cannot connect to {self.where}", exc)) from None
        self._conns.add(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        conn = self._connect()
        try:
            cursor = self._cursor(conn)
            if not write:  # one statement in autocommit: one round trip, not three
                yield Tx(cursor, postgres=True)
                return
            with conn.transaction():
                yield Tx(cursor, postgres=True)
        except self._psycopg.Error as exc:
            if not postgres_unavailable(exc):
                raise
            if conn.broken:
                conn.close()  # the next transaction connects again
            raise StoreUnavailable(_one_line(self.where, exc)) from exc

    def statement(self) -> contextlib.AbstractContextManager[Tx]:
        # One statement in autocommit is a transaction of its own: without
        # BEGIN and COMMIT, one round trip instead of three.
        return self.transaction(write=False)

    def check(self) -> None:
        pass  # a server that went away fails the next statement

    def tend(self) -> None:
        pass

    def make_room(self) -> bool:
        return False  # the server's disk is the server's to manage

    def version(self, tx: Tx) -> int:
        tx.run("CREATE TABLE IF NOT EXISTS batchfsm_schema (version integer NOT NULL)")
        rows = tx.all("SELECT version FROM batchfsm_schema")
        if len(rows) > 1:
            raise StoreError(
                f"{self.where}: batchfsm_schema holds {len(rows)} rows, not one; "
                "the schema record is damaged"
            )
        return int(rows[0][0]) if rows else 0

    def set_version(self, tx: Tx, version: int) -> None:
        tx.run("DELETE FROM batchfsm_schema")
        tx.run("INSERT INTO batchfsm_schema (version) VALUES (?)", (version,))

    def prepare(self) -> None:
        pass

    def lock_schema(self, tx: Tx) -> None:
        tx.run("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))

    def foreign_tables(self, tx: Tx) -> list[str]:
        return []  # a shared database: other applications' tables are expected

    def read_now(self) -> contextlib.AbstractContextManager[Tx]:
        """Never: every read is a round trip to the server, which may wait."""
        raise WouldWait

    def close(self) -> None:
        self._conns.close()


class PostgresStore(ChunkedSQLStore):
    """Batches, work in progress and files in PostgreSQL, for several processes.

    Args:
        url: a libpq conninfo, e.g. ``postgresql://user@host:5432/dbname``.
        lease_seconds: how long this store's leases last after its last
            heartbeat (renewed every third of it while the store is open):
            a process that dies or stalls has the batches it holds taken
            over by the others this long after (see :class:`SQLStore`).

    Raises:
        StoreError: the server cannot be reached, or the driver is missing;
            SchemaVersionError: the schema is newer than this batchfsm.

    Example:
        >>> from batchfsm.emulator import StoreError
        >>> try:
        ...     PostgresStore("postgresql://me:secret@127.0.0.1:1/batches")
        ... except StoreError as exc:
        ...     print("secret" in str(exc), "me:***@127.0.0.1:1" in str(exc))
        False True
    """

    def __init__(self, url: str, *, lease_seconds: float = 30.0) -> None:
        super().__init__(_Postgres(url), lease_seconds=lease_seconds)
