"""The SQL stores' :class:`FileStore`: File objects, and their bytes in chunks.

The content is stored in chunks (see :mod:`._migrations`): a read costs the
chunks its slice covers, whatever the size of the file; a listing's page is
one indexed query.
"""

from __future__ import annotations

import json
from typing import Any

from ._database import Database, Tx
from ._migrations import CHUNK_BYTES, add_chunks
from ._stores import FileObject, FilePage, Order

__all__ = ["SQLFiles", "add_file"]


def add_file(tx: Tx, file: FileObject, content: bytes) -> None:
    """Store ``content`` as ``file`` in ``tx`` (its id must be new: ``KeyError``)."""
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

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, file: FileObject, content: bytes) -> None:
        """Store ``content`` as ``file`` (its id must be new: ``KeyError``)."""
        with self._db.transaction() as tx:
            add_file(tx, file, content)

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
