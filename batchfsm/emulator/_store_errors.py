"""Why a SQL store cannot use a database: one line each, never a traceback.

::

    BatchFSMError
    └── StoreError                 the database cannot be used (one line)
        ├── SchemaVersionError     its schema is newer than this batchfsm
        └── StoreUnavailable       not now: connection lost, server restarting,
                                   lock timeout, serialization failure, disk
                                   full, I/O error, file deleted under us

:func:`sqlite_unavailable` and :func:`postgres_unavailable` are the one place
that sorts a driver's error into :class:`StoreUnavailable` (a fault of the
store, which passes or which the operator mends: retried, answered 503) or
not (a fault of the statement or of the data: the caller's to judge).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .._errors import BatchFSMError

__all__ = [
    "SchemaVersionError",
    "StoreError",
    "StoreUnavailable",
    "WouldWait",
    "postgres_unavailable",
    "sqlite_unavailable",
]


class StoreError(BatchFSMError):
    """A database a store cannot use; the message is one line saying why.

    Example:
        >>> import batchfsm as bf
        >>> issubclass(StoreError, bf.BatchFSMError)
        True
    """


class WouldWait(Exception):  # noqa: N818 - a verdict, not a failure
    """A read asked not to wait could not be made at once: make it where it may.

    Raised by a store's read on the event loop (:meth:`SQLStore._get_now`)
    when answering would mean waiting (a lock, a network round trip), before
    anything is read; the caller then makes the ordinary read in a store
    thread. Never seen outside the emulator.
    """


class StoreUnavailable(StoreError):  # noqa: N818 - a state, as the API's 503 says
    """The store cannot answer now; the same call may succeed later.

    The connection was lost, the server is restarting or shutting down, a
    lock or a serialization conflict stood in the way, the disk is full, or
    the database file was deleted or replaced under the server. Nothing of
    the failed call was written (or, for a connection lost during a commit,
    it may have been: every write of the stores is conditional, so trying it
    again is safe). The worker retries with backoff; over HTTP it is a 503
    with ``Retry-After``. The message is one line.

    Example:
        >>> error = StoreUnavailable("db.sqlite: database or disk is full")
        >>> isinstance(error, StoreError), str(error)
        (True, 'db.sqlite: database or disk is full')
    """

    def __init__(self, message: str, *, logged: bool = False) -> None:
        super().__init__(message)
        #: Whether the store logged it already (a log line of its own, once).
        self.logged = logged

    def __reduce__(self) -> tuple[Any, ...]:
        return _unavailable, (str(self), self.logged)


def _unavailable(message: str, logged: bool) -> StoreUnavailable:
    return StoreUnavailable(message, logged=logged)


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


#: SQLite's primary result codes of a store that cannot answer now: BUSY,
#: LOCKED, NOMEM, READONLY (the file or its directory turned read-only),
#: IOERR, CORRUPT and NOTADB (the file was damaged or replaced: no retry
#: mends it, but it is no fault of the batch at hand either), FULL,
#: CANTOPEN (the directory went away).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 26})


def sqlite_unavailable(exc: BaseException) -> bool:
    """Whether an ``sqlite3`` error is a fault of the store, not of the statement.

    Example:
        >>> sqlite_unavailable(sqlite3.OperationalError("database is locked"))
        True
        >>> sqlite_unavailable(sqlite3.IntegrityError("UNIQUE constraint failed"))
        False
    """
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_UNAVAILABLE
    # Raised by the module itself (no code): judge by the words SQLite uses.
    text = str(exc).lower()
    words = ("locked", "disk is full", "disk i/o", "unable to open", "readonly")
    return any(word in text for word in words)


#: PostgreSQL's SQLSTATEs of a server that cannot answer now: connection
#: exceptions (class 08), serialization failure, deadlock, lock not
#: available, insufficient resources (class 53: disk full, out of memory,
#: too many connections), operator intervention (class 57: admin shutdown,
#: crash shutdown, cannot connect now, query cancelled) and system errors
#: (class 58: I/O error).
_POSTGRES_CLASSES = ("08", "53", "57", "58")
_POSTGRES_STATES = frozenset({"40001", "40P01", "55P03"})


def postgres_unavailable(exc: BaseException) -> bool:
    """Whether a ``psycopg`` error is a fault of the server, not of the statement.

    A connection lost or closed carries no SQLSTATE: it is one too.

    Example:
        >>> import psycopg
        >>> postgres_unavailable(psycopg.OperationalError("the connection is lost"))
        True
        >>> postgres_unavailable(psycopg.errors.UniqueViolation("duplicate key"))
        False
    """
    state: Any = getattr(exc, "sqlstate", None)
    if state is None:
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state in _POSTGRES_STATES or state[:2] in _POSTGRES_CLASSES
