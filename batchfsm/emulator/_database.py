"""A database as the SQL stores see it: connections, transactions, a dialect.

A :class:`Database` is a connection (one per thread, kept by
:class:`ThreadConnections`) and a dialect: how to open a transaction, how to
lock a row, how to claim due work (see :mod:`._sqlite`, :mod:`._postgres`).
Everything above it is written once, in SQL both dialects accept (``?``
placeholders, turned into ``%s`` for psycopg by :class:`Tx`).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Cursor", "Database", "ThreadConnections", "Tx", "model_key", "unheld"]


def unheld(key: str | None) -> bool:
    r"""Whether no row can have ``key`` for its id: it holds a NUL.

    PostgreSQL's text never holds one (a query naming one fails), and no id
    the stores make does: a lookup by such a key (from a URL, say) finds
    nothing, in every dialect, without asking the database.

    Example:
        >>> unheld("batch_1"), unheld("batch_\x00"), unheld(None)
        (False, True, False)
    """
    return key is not None and "\x00" in key


#: The longest model name a row of enqueued tokens is keyed by as it is.
MODEL_KEY_BYTES = 512
_DIGEST = "sha256:"


def model_key(model: str) -> str:
    r"""The key of ``model``'s row of enqueued tokens: the name, or its digest.

    Any text is a model name to a client (``--any-model``), but PostgreSQL
    neither holds a NUL nor indexes a key past a third of a page: a name
    that is long, holds a NUL or could be taken for a digest is keyed by
    its SHA-256 instead, so every name has a row of its own.

    Example:
        >>> model_key("gpt-4o-mini"), model_key("a\x00b")[:15]
        ('gpt-4o-mini', 'sha256:59b271ae')
    """
    text = model.encode("utf-8", "surrogatepass")
    as_it_is = not (unheld(model) or model.startswith(_DIGEST))
    if as_it_is and len(text) <= MODEL_KEY_BYTES:
        return model
    return _DIGEST + hashlib.sha256(text).hexdigest()


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


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


#: SQL written with ``?`` placeholders, as psycopg takes it (``%s``).
_PSYCOPG_TEXT: dict[str, str] = {}
#: The most statements :data:`_PSYCOPG_TEXT` keeps (those built with a
#: list of ``?`` for each id vary with the list's length).
_PSYCOPG_TEXTS = 1024


def _psycopg_text(sql: str) -> str:
    text = _PSYCOPG_TEXT.get(sql)
    if text is None:
        text = sql.replace("?", "%s")
        if len(_PSYCOPG_TEXT) < _PSYCOPG_TEXTS:
            _PSYCOPG_TEXT[sql] = text
    return text


class Tx:
    """One open transaction: run SQL written with ``?`` placeholders.

    ``raw`` is a connection or a cursor: anything whose ``execute`` returns
    the cursor holding the result. Each statement's result is to be read
    before the next one runs (the same cursor may serve them all).
    """

    def __init__(self, raw: Any, postgres: bool) -> None:
        self._raw = raw
        self._postgres = postgres

    @property
    def postgres(self) -> bool:
        """Whether the statements run on PostgreSQL (else SQLite)."""
        return self._postgres

    def run(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self._postgres:
            sql = _psycopg_text(sql)
        cursor: Cursor = self._raw.execute(sql, params)
        return cursor

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.run(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.run(sql, params).fetchall()


class Database(Protocol):
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

    def transaction(self, write: bool = True) -> contextlib.AbstractContextManager[Tx]:
        """A transaction: committed on exit, rolled back on an error."""

    def statement(self) -> contextlib.AbstractContextManager[Tx]:
        """A write of exactly one statement, atomic by itself.

        Where the database makes each statement a transaction of its own
        (PostgreSQL in autocommit) it needs no ``BEGIN``/``COMMIT`` around
        it; elsewhere it is :meth:`transaction`. Not for a read-then-write:
        a statement run after the first in it commits on its own.
        """

    def read_now(self) -> contextlib.AbstractContextManager[Tx]:
        """A read-only transaction that never waits, for the event loop.

        Raises ``WouldWait`` (before reading anything) where the read could
        wait: a lock held, a network round trip, another caller reading now.
        """

    def version(self, tx: Tx) -> int:
        """The schema version recorded in the database (0: none)."""

    def set_version(self, tx: Tx, version: int) -> None:
        """Record the schema version, inside the migration's transaction."""

    def prepare(self) -> None:
        """Settle the connection's modes, once the database is known to be ours."""

    def lock_schema(self, tx: Tx) -> None:
        """Keep other processes from migrating at the same time."""

    def foreign_tables(self, tx: Tx) -> list[str]:
        """Tables in the database that are not batchfsm's (see :meth:`migrate`)."""

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` if the database went away (see SQLite's)."""

    def tend(self) -> None:
        """At each heartbeat: :meth:`check`, and restore a reserve given up."""

    def make_room(self) -> bool:
        """Give up a reserve of disk space for a delete; whether there was one."""
        ...

    def close(self) -> None:
        """Close every connection."""
