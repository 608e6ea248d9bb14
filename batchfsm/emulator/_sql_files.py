"""The SQL stores' :class:`FileStore`: File objects, and their bytes in chunks.

The content is stored in chunks (see :mod:`._migrations`), written as its
pieces arrive: an upload is never held whole, and a read costs the chunks its
slice covers, whatever the size of the file. A file is added in one
transaction, so an upload cut off or refused midway leaves nothing behind
(the transaction holds SQLite's writer while it lasts: the HTTP app hands the
store an upload already spooled to local disk, never a slow client's
socket). A listing's page is one indexed query; expired files are found for
purging through the index of expiry times.

Each project's stored bytes are a counter (``batchfsm_storage``, since schema
version 12) that every write adding or deleting files moves in its own
transaction, as its last statement (its row is locked only until the commit,
not while an upload's chunks are written): :meth:`SQLFiles.stored_bytes`
reads one row, whatever the number of files, and concurrent writers add and
subtract without losing one another's bytes (the database's row lock).
An add with ``max_stored`` moves it only if the project stays within the
limit, in that same statement (an upsert whose update is conditional): the
check and the count are one atomic step, whatever the number of writers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._content import Content, exactly
from ._database import Database, Tx, unheld
from ._migrations import CHUNK_BYTES, add_chunks, chunks
from ._projects import DEFAULT_PROJECT
from ._store_errors import StoreUnavailable
from ._stores import FileObject, FilePage, Order, StorageFull

__all__ = ["SQLFiles", "add_file", "count_bytes", "counted", "one_chunk", "small_file"]


def add_file(
    tx: Tx,
    file: FileObject,
    content: Content,
    project: str = DEFAULT_PROJECT,
    max_stored: int | None = None,
) -> None:
    """Store ``content`` (bytes or pieces) as ``file`` of ``project`` in ``tx``.

    Its id must be new (``KeyError``); the pieces must add up to
    ``file.bytes`` (``ValueError``); with ``max_stored``, the project's bytes
    must stay within it (:class:`StorageFull`). Whatever fails, the caller
    rolls ``tx`` back.
    """
    if max_stored is not None and file.bytes > max_stored:
        raise StorageFull(file.bytes, 0, max_stored)  # before a byte is written
    if tx.postgres and max_stored is None and 0 < file.bytes <= CHUNK_BYTES:
        _add_small_file(tx, file, content, project)
        return
    row = (file.id, json.dumps(file.to_dict()), file.purpose, file.expires_at, project)
    added = tx.run(_ADD_FILE + " ON CONFLICT (id) DO NOTHING", row).rowcount
    if added != 1:  # one statement, not a look first: a round trip less
        raise KeyError(f"file {file.id} exists already")
    add_chunks(tx, file.id, exactly(content, file.bytes, file.id))
    if max_stored is None:
        count_bytes(tx, project, file.bytes)
    else:
        count_within(tx, project, file.bytes, max_stored)


_ADD_FILE = (
    "INSERT INTO batchfsm_files (id, body, purpose, expires_at, project)"
    " VALUES (?, ?, ?, ?, ?)"
)
#: A project's stored bytes moved by a count (an upsert).
_COUNT_BYTES = (
    " ON CONFLICT (project) DO UPDATE"
    " SET bytes = batchfsm_storage.bytes + excluded.bytes"
)


def small_file(
    name: str,
    project: str,
    file: FileObject,
    data: tuple[str, tuple[Any, ...]],
    *,
    if_new: bool = True,
) -> tuple[str, tuple[Any, ...]]:
    """``WITH`` clauses adding a file of one chunk (PostgreSQL), and their values.

    The clause ``name`` is the file's row, returning its id and project; its
    chunk, ``data`` (an expression and its values), is written only if the
    row is. ``project``: a query of one column, ``project``, saying whose it
    is (its values go after the file's). A file id that exists adds no row
    (``if_new``), or fails the statement. The stored bytes are counted by
    :func:`counted`.
    """
    clauses = (
        f"{name} AS (INSERT INTO batchfsm_files (id, body, purpose, expires_at,"
        f" project) SELECT ?, ?, ?, ?, project FROM {project}"
        f"{' ON CONFLICT (id) DO NOTHING' if if_new else ''} RETURNING id, project),"
        f" {name}_chunk AS (INSERT INTO batchfsm_file_chunks (file_id, n, data)"
        f" SELECT id, 0, {data[0]} FROM {name})"
    )
    values = (file.id, json.dumps(file.to_dict()), file.purpose, file.expires_at)
    return clauses, (*values, *data[1])


def one_chunk(file: FileObject, content: Content) -> tuple[str, tuple[Any, ...]]:
    """``content``, checked (``file``'s size, one chunk): :func:`small_file`'s data."""
    [(_, chunk)] = chunks(exactly(content, file.bytes, file.id))  # checked first
    return "?::bytea", (chunk,)


def counted(names: Sequence[str]) -> str:
    """A statement counting the files the clauses ``names`` add: a size (``?``) each.

    Their projects' stored bytes move by the sizes of those added, in one
    upsert (a row is never moved twice in one statement).
    """
    added = " UNION ALL ".join(
        f"SELECT project, ?::bigint AS size FROM {n}" for n in names
    )
    return (
        "INSERT INTO batchfsm_storage (project, bytes)"
        f" SELECT project, sum(size) FROM ({added}) a GROUP BY project{_COUNT_BYTES}"
    )


def _add_small_file(tx: Tx, file: FileObject, content: Content, project: str) -> None:
    """A file of one chunk, on PostgreSQL: its row, chunk and count in one statement.

    Data-modifying ``WITH`` clauses: the chunk and the count are written
    only if the file's row is (a new id), in one round trip, not three.
    """
    whose = "(SELECT ?::text AS project) p"
    clauses, values = small_file("f", whose, file, one_chunk(file, content))
    added = tx.run(
        f"WITH {clauses} {counted(['f'])}",
        (*values[:4], project, *values[4:], file.bytes),
    ).rowcount
    if added != 1:
        raise KeyError(f"file {file.id} exists already")


def count_bytes(tx: Tx, project: str, delta: int) -> None:
    """Move ``project``'s stored bytes by ``delta``, in the caller's transaction."""
    if delta:
        tx.run(
            "INSERT INTO batchfsm_storage (project, bytes) VALUES (?, ?)"
            + _COUNT_BYTES,
            (project, delta),
        )


def count_within(tx: Tx, project: str, size: int, limit: int) -> None:
    """Add ``size`` to ``project``'s stored bytes if they stay within ``limit``.

    One statement, so atomic with respect to every other writer: PostgreSQL
    judges the condition on the row it locked (the latest committed), SQLite
    under its single writer's lock. Else :class:`StorageFull`, with the bytes
    stored as the refusing transaction saw them.
    """
    if tx.all(
        "INSERT INTO batchfsm_storage (project, bytes) VALUES (?, ?)"
        " ON CONFLICT (project) DO UPDATE"
        " SET bytes = batchfsm_storage.bytes + excluded.bytes"
        " WHERE batchfsm_storage.bytes + excluded.bytes <= ?"
        " RETURNING bytes",
        (project, size, limit),
    ):
        return
    row = tx.one("SELECT bytes FROM batchfsm_storage WHERE project = ?", (project,))
    raise StorageFull(size, int(row[0]) if row else 0, limit)


def _deleted(tx: Tx, rows: list[tuple[str, str]]) -> None:
    """Give back the bytes of the files deleted: (project, body) each."""
    freed: dict[str, int] = {}
    for project, body in rows:
        freed[project] = freed.get(project, 0) + json.loads(body)["bytes"]
    for project in sorted(freed):  # one order: writers never wait in a circle
        count_bytes(tx, project, -freed[project])


#: The chunks of a file from ``n`` to ``n``, in order; one row with NULLs for a
#: file with none of them, no row for no such file.
_CHUNKS = (
    "SELECT c.data FROM batchfsm_files f LEFT JOIN batchfsm_file_chunks c"
    " ON c.file_id = f.id AND c.n BETWEEN ? AND ? WHERE f.id = ? ORDER BY c.n"
)


#: Expired files, through the index of expiry times (``expires_at <= ?``
#: implies the partial index's ``expires_at IS NOT NULL``).
_EXPIRED_ONE = "SELECT 1 FROM batchfsm_files WHERE expires_at <= ? LIMIT 1"
_EXPIRED = (
    "SELECT id FROM batchfsm_files WHERE expires_at <= ?"
    " ORDER BY expires_at, seq LIMIT ?"
)


class SQLFiles:
    """The :class:`FileStore` of an :class:`SQLStore`: metadata and content.

    The content is stored in chunks (see :mod:`._migrations`): a read costs
    the chunks its slice covers, whatever the size of the file.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        file: FileObject,
        content: Content,
        *,
        project: str = DEFAULT_PROJECT,
        max_stored: int | None = None,
    ) -> None:
        r"""Store ``content`` (bytes or pieces) as ``file`` of ``project``, at once.

        Its id must be new (``KeyError``); the pieces must add up to
        ``file.bytes`` (``ValueError``). Each chunk is written as the pieces
        make it up; if they raise or do not add up, nothing is stored. With
        ``max_stored``, the project's bytes must stay within it, judged
        atomically as the transaction counts the file in (:func:`count_within`);
        else :class:`StorageFull` and nothing is stored.

        Example:
            >>> from batchfsm.emulator import SQLiteStore
            >>> store = SQLiteStore(":memory:")
            >>> files = store.files
            >>> def cut_off():
            ...     yield b"{}\n" * 50_000
            ...     raise ConnectionError("the client went away")
            >>> files.add(FileObject(id="file-1", bytes=300_000, created_at=1,
            ...                      filename="a.jsonl", purpose="batch"), cut_off())
            Traceback (most recent call last):
            ...
            ConnectionError: the client went away
            >>> files.get("file-1"), files.read("file-1", 0, 1)
            (None, None)
            >>> store.close()
        """
        with self._db.transaction() as tx:
            add_file(tx, file, content, project, max_stored)

    def get(self, file_id: str, *, project: str | None = None) -> FileObject | None:
        """The File object, or None (None too if it is not ``project``'s)."""
        if unheld(file_id) or unheld(project):
            return None
        with self._db.transaction(write=False) as tx:
            if project is None:
                row = tx.one("SELECT body FROM batchfsm_files WHERE id = ?", (file_id,))
            else:
                row = tx.one(
                    "SELECT body FROM batchfsm_files WHERE id = ? AND project = ?",
                    (file_id, project),
                )
        return None if row is None else FileObject(**json.loads(row[0]))

    def of_batch(self, file_id: str, batch_id: str) -> FileObject | None:
        """The File object if it is of the batch's project, else None.

        One statement for what would be two: the batch's project, then the
        file of that project (the worker's look at a batch's input).
        """
        if unheld(file_id) or unheld(batch_id):
            return None
        with self._db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT f.body FROM batchfsm_files f"
                " JOIN batchfsm_batches b ON b.project = f.project"
                " WHERE f.id = ? AND b.id = ?",
                (file_id, batch_id),
            )
        return None if row is None else FileObject(**json.loads(row[0]))

    def content(self, file_id: str) -> bytes | None:
        """The file's bytes, or None."""
        return self._chunks(file_id, 0, 2**62)

    def read(self, file_id: str, offset: int, size: int) -> bytes | None:
        """At most ``size`` bytes of the file from ``offset``; None if no such file.

        Example:
            >>> from batchfsm.emulator import SQLiteStore
            >>> from batchfsm.emulator._migrations import CHUNK_BYTES
            >>> store = SQLiteStore(":memory:")
            >>> files = store.files
            >>> content = bytes(range(256)) * (CHUNK_BYTES // 128)  # two chunks
            >>> files.add(FileObject(id="file-1", bytes=len(content), created_at=1,
            ...                      filename="a.jsonl", purpose="batch"), content)
            >>> across = files.read("file-1", CHUNK_BYTES - 2, 4)  # both chunks
            >>> across == content[CHUNK_BYTES - 2 : CHUNK_BYTES + 2]
            True
            >>> files.read("file-1", len(content), 4), files.read("file-2", 0, 4)
            (b'', None)
            >>> store.close()
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
        if unheld(file_id):
            return None
        with self._db.transaction(write=False) as tx:
            rows = tx.all(_CHUNKS, (first, last, file_id))
        if not rows:
            return None
        return b"".join(bytes(data) for (data,) in rows if data is not None)

    def stored_bytes(self, *, project: str | None = None) -> int:
        """The bytes of every stored file together, as their File objects say.

        With ``project``, of its files only. One row of the counter each
        write of files moves: as cheap with a million files as with one.

        Example:
            >>> from batchfsm.emulator import SQLiteStore
            >>> store = SQLiteStore(":memory:")
            >>> files = store.files
            >>> files.add(FileObject(id="file-1", bytes=5, created_at=1,
            ...                      filename="a.jsonl", purpose="batch"), b"hello")
            >>> files.stored_bytes(), files.stored_bytes(project="proj_other")
            (5, 0)
            >>> store.close()
        """
        if unheld(project):
            return 0
        where, params = (
            ("", ()) if project is None else (" WHERE project = ?", (project,))
        )
        with self._db.transaction(write=False) as tx:
            (held,) = tx.one(
                f"SELECT coalesce(sum(bytes), 0) FROM batchfsm_storage{where}", params
            )
        return int(held)

    def delete(self, file_id: str) -> bool:
        """Delete; whether there was such a file.

        On a full disk the database's reserve of space is given up for it
        (:meth:`Database.make_room`): a delete is how space is freed. The
        reserve is then made again at once from the space the delete freed,
        before any new content can take it (:meth:`Database.tend`).
        """
        if unheld(file_id):
            return False
        try:
            return self._delete(file_id)
        except StoreUnavailable:
            if not self._db.make_room():
                raise
            deleted = self._delete(file_id)
        self._db.tend()
        return deleted

    def _delete(self, file_id: str) -> bool:
        with self._db.transaction() as tx:
            # The file's row first, as a purge takes it: never each holding
            # what the other waits for.
            tx.run(
                f"SELECT 1 FROM batchfsm_files WHERE id = ? {self._db.lock_sql}",
                (file_id,),
            )
            tx.run("DELETE FROM batchfsm_file_chunks WHERE file_id = ?", (file_id,))
            deleted = tx.all(
                "DELETE FROM batchfsm_files WHERE id = ? RETURNING project, body",
                (file_id,),
            )
            _deleted(tx, deleted)
        return len(deleted) == 1

    def purge(self, now: int, limit: int) -> int:
        """Delete up to ``limit`` files expired at ``now``, with their chunks.

        Read through the index of expiry times, earliest first; a write only
        when there is something to purge. Several processes purge side by
        side: in PostgreSQL each skips the rows another is deleting.

        Example:
            >>> from batchfsm.emulator import SQLiteStore
            >>> store = SQLiteStore(":memory:")
            >>> files = store.files
            >>> for i in (1, 2, 3):
            ...     files.add(FileObject(id=f"file-{i}", bytes=1, created_at=0,
            ...                          filename="a.jsonl", purpose="batch",
            ...                          expires_at=i), b"x")
            >>> files.purge(2, 10), [f.id for f in files.list()]
            (2, ['file-3'])
            >>> store.close()
        """
        with self._db.transaction(write=False) as tx:
            if tx.one(_EXPIRED_ONE, (now,)) is None:
                return 0
        with self._db.transaction() as tx:
            ids = [
                file_id
                for (file_id,) in tx.all(
                    f"{_EXPIRED} {self._db.skip_locked_sql}", (now, limit)
                )
            ]
            if ids:
                marks = ", ".join("?" * len(ids))
                tx.run(
                    f"DELETE FROM batchfsm_file_chunks WHERE file_id IN ({marks})", ids
                )
                _deleted(
                    tx,
                    tx.all(
                        f"DELETE FROM batchfsm_files WHERE id IN ({marks})"
                        " RETURNING project, body",
                        ids,
                    ),
                )
        return len(ids)

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
        project: str | None = None,
    ) -> FilePage:
        """Up to ``limit`` files in ``order`` after ``after``; whether more follow.

        One query read through the ``seq`` key, or the ``(purpose, seq)``,
        ``(project, seq)`` or ``(project, purpose, seq)`` index.

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
        if unheld(after) or unheld(purpose) or unheld(project):
            return [], False
        where: list[str] = []
        params: list[Any] = []
        if after is not None:
            # Of the same project: another project's id is no stored file's.
            sign = ">" if order == "asc" else "<"
            where.append(
                f"seq {sign} (SELECT seq FROM batchfsm_files WHERE id = ?"
                f"{'' if project is None else ' AND project = ?'})"
            )
            params.extend([after] if project is None else [after, project])
        for column, value in (("project", project), ("purpose", purpose)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
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
