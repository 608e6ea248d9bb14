"""Where the emulator keeps batches and files: small interfaces, in memory.

The batch store is the seam for persistence: ``get``, ``insert``, ``page``
(newest first, after a cursor) and ``put_if_status`` — a compare-and-set on
the status, so that two writers racing (a cancel and the worker) cannot both
win. A SQL store (SQLite, PostgreSQL) implements the same four methods.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import attrs

from .._model import Batch, BatchStatus

__all__ = ["BatchStore", "FileObject", "FileStore", "MemoryBatchStore"]


class BatchStore(Protocol):
    """The four operations the emulator needs from a batch store."""

    def get(self, batch_id: str) -> Batch | None:
        """The batch, or None."""

    def insert(self, batch: Batch) -> None:
        """Add a new batch (its id must be new)."""

    def put_if_status(self, batch: Batch, expected: BatchStatus) -> bool:
        """Replace the stored batch if its status is still ``expected``."""

    def page(self, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        """Up to ``limit`` batches created before ``after``, newest first.

        Also says whether more follow.
        """


class MemoryBatchStore:
    """A :class:`BatchStore` in memory: a dict and a creation-ordered list.

    Example:
        >>> import batchfsm as bf
        >>> store = MemoryBatchStore()
        >>> b = bf.new_batch(id="batch_1", input_file_id="f",
        ...                  endpoint="/v1/embeddings", created_at=1)
        >>> store.insert(b)
        >>> cancelling = bf.advance(b, "cancel", at=2)
        >>> store.put_if_status(cancelling, bf.BatchStatus.IN_PROGRESS)
        False
    """

    def __init__(self) -> None:
        self._batches: dict[str, Batch] = {}
        self._order: list[str] = []  # creation order; pages read it backwards
        self._position: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._order)

    def get(self, batch_id: str) -> Batch | None:
        """The batch, or None."""
        return self._batches.get(batch_id)

    def insert(self, batch: Batch) -> None:
        """Add a new batch."""
        with self._lock:
            if batch.id in self._batches:
                raise KeyError(f"batch {batch.id} exists already")
            self._batches[batch.id] = batch
            self._position[batch.id] = len(self._order)
            self._order.append(batch.id)

    def put_if_status(self, batch: Batch, expected: BatchStatus) -> bool:
        """Compare-and-set on the status."""
        with self._lock:
            current = self._batches.get(batch.id)
            if current is None or current.status is not expected:
                return False
            self._batches[batch.id] = batch
            return True

    def page(self, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        """Newest first, starting after the batch ``after``."""
        end = len(self._order) if after is None else self._position[after]
        start = max(0, end - limit)
        ids = self._order[start:end]
        return [self._batches[i] for i in reversed(ids)], start > 0


@attrs.frozen
class FileObject:
    """The API's File object."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: str = "file"
    status: str = "processed"
    expires_at: int | None = None
    status_details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The API JSON of this file."""
        return attrs.asdict(self)


class FileStore:
    """Files in memory: metadata and content by id."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[FileObject, bytes]] = {}

    def add(self, file: FileObject, content: bytes) -> FileObject:
        """Store ``content`` as ``file``."""
        self._files[file.id] = (file, content)
        return file

    def get(self, file_id: str) -> FileObject | None:
        """The file object, or None."""
        entry = self._files.get(file_id)
        return entry[0] if entry else None

    def content(self, file_id: str) -> bytes | None:
        """The file's bytes, or None."""
        entry = self._files.get(file_id)
        return entry[1] if entry else None

    def delete(self, file_id: str) -> bool:
        """Delete; whether there was such a file."""
        return self._files.pop(file_id, None) is not None

    def list(self) -> list[FileObject]:
        """Every file, newest first."""
        return [f for f, _ in reversed(self._files.values())]
