"""Open the store a ``--db`` value names: a path, sqlite:///PATH or a PostgreSQL URL."""

from __future__ import annotations

from ._sql import SQLStore
from ._store_errors import StoreError

__all__ = ["open_store"]


def open_store(url: str, *, lease_seconds: float = 30.0) -> SQLStore:
    """The store a ``--db`` value names.

    ``postgresql://…`` (or ``postgres://…``) opens a :class:`PostgresStore`;
    ``sqlite:///PATH`` or a plain path an :class:`SQLiteStore` (created if
    missing, upgraded if older). ``lease_seconds``: see :class:`SQLStore`.

    Raises:
        StoreError: the value names no store this batchfsm can open, or the
            database cannot be used (the message says why, in one line).

    Example:
        >>> store = open_store("sqlite:///:memory:")
        >>> type(store).__name__, store.where
        ('SQLiteStore', ':memory:')
        >>> store.close()
    """
    from ._postgres import PostgresStore
    from ._sqlite import SQLiteStore

    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url:
            raise StoreError("--db: empty; give a file path or a postgresql:// URL")
        return SQLiteStore(url, lease_seconds=lease_seconds)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url, lease_seconds=lease_seconds)
    if scheme == "sqlite":
        if not rest.startswith("/"):
            raise StoreError(
                f"{url}: an SQLite URL is sqlite:///PATH (three slashes, then the path)"
            )
        # sqlite:///relative/db and sqlite:////absolute/db, as SQLAlchemy reads them
        return SQLiteStore(rest[1:], lease_seconds=lease_seconds)
    raise StoreError(
        f"{url}: unknown database scheme {scheme!r}; use a file path, "
        "sqlite:///PATH or postgresql://…"
    )
