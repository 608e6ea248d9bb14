"""The Files API's rules: what an upload may be, when a file expires, list pages.

Functions over :class:`~batchfsm.emulator.FileObject` values and the
:class:`~batchfsm.emulator.FileStore` seam, so any file store can serve them.
The limits and defaults are documented (Files API reference; ``openai``
``FileCreateParams``); the ``.jsonl`` message was observed (the live API's
answer to a ``batch`` file with another extension), as were a ``batch`` file
named without an extension being accepted (the official client names raw
bytes ``upload``) and one that is not UTF-8 being refused at upload.

An expired file answers 404 at once (:func:`is_live`) and is purged soon
after (:func:`purge_expired`, run with the due work, up to the earliest work
due): its row and content go, found through the store's index of expiry
times, a bounded number of files per store transaction, so a listing never
keeps passing over it.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any

from ._api_error import refuse
from ._content import PIECE_BYTES, Piece
from ._params import Problem, after_problem, invalid_value, list_limit, list_page
from ._stores import FileObject, FileStore, StorageFull
from ._validate import MAX_BYTES

__all__ = [
    "BATCH_FILE_EXPIRES_AFTER",
    "MAX_BATCH_FILE_BYTES",
    "MAX_FILE_BYTES",
    "MAX_LIST_LIMIT",
    "NOT_UTF8",
    "PURGE_FILES_PER_STEP",
    "PURPOSES",
    "READ_PIECE_BYTES",
    "FileGoneError",
    "checked_content",
    "expires_at",
    "is_live",
    "list_files_page",
    "max_bytes",
    "purge_expired",
    "read_pieces",
    "storage_full_problem",
    "storage_problem",
    "too_large_problem",
    "upload_problem",
]

#: The purposes an upload may name (``batch_output`` is the service's own).
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
#: Any file: at most 512 MB.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: A ``batch`` file: at most 200 MB.
MAX_BATCH_FILE_BYTES = MAX_BYTES
#: A ``batch`` file expires this many seconds after its creation by default.
BATCH_FILE_EXPIRES_AFTER = 30 * 86_400
#: ``GET /v1/files``: ``limit`` is 1..10,000, and 10,000 by default.
MAX_LIST_LIMIT = 10_000
#: Expired files purged per store transaction (each with all its chunks).
PURGE_FILES_PER_STEP = 16
#: A download reads a file from its store this many bytes at a time: what one
#: download holds at once, whatever the size of the file.
READ_PIECE_BYTES = 256 * 1024


class FileGoneError(Exception):
    """A file being read in pieces was deleted (or cut short) midway."""


def read_pieces(
    files: FileStore, file: FileObject, piece_bytes: int = READ_PIECE_BYTES
) -> Iterator[bytes]:
    """The content of ``file``, read from ``files`` by range, ``piece_bytes`` at a time.

    Each piece is one :meth:`FileStore.read`, so the whole file is never held:
    a download of any size holds one piece at a time. Exactly ``file.bytes``
    bytes in all.

    Raises:
        FileGoneError: the file was deleted, or its content ended early, while
            it was being read (what was handed out is all there is).

    Example:
        >>> from ._stores import MemoryFileStore
        >>> files = MemoryFileStore()
        >>> f = FileObject(id="file-1", bytes=5, created_at=1, filename="a.jsonl",
        ...                purpose="batch")
        >>> files.add(f, b"hello")
        >>> list(read_pieces(files, f, 2))
        [b'he', b'll', b'o']
    """
    offset = 0
    while offset < file.bytes:
        piece = files.read(file.id, offset, min(piece_bytes, file.bytes - offset))
        if not piece:
            raise FileGoneError(file.id)
        offset += len(piece)
        yield piece


#: A ``batch`` file that is not UTF-8 (observed: PSOpenAI issue #19).
NOT_UTF8 = Problem("Invalid file for Batch API. Must be utf-8 encoded", None, None)


def max_bytes(purpose: str) -> int:
    """The most bytes a file of ``purpose`` may hold.

    Example:
        >>> max_bytes("batch") == MAX_BATCH_FILE_BYTES, max_bytes("vision")
        (True, 536870912)
    """
    return MAX_BATCH_FILE_BYTES if purpose == "batch" else MAX_FILE_BYTES


def too_large_problem(size: int, *, batch: bool, more: bool = False) -> Problem:
    """413 for a file of ``size`` bytes (``more``: over the limit, at least that).

    ``batch``: the limit of a ``batch`` file, else that of any file.

    Example:
        >>> print(too_large_problem(300_000_000, batch=True, more=True).message)
        File too large: more than 209715200 bytes; a batch input file may be up to
        209715200 bytes.
    """
    limit, allowed = (
        (MAX_BATCH_FILE_BYTES, "a batch input file may be up to")
        if batch
        else (MAX_FILE_BYTES, "files may be up to")
    )
    held = f"more than {limit}" if more else str(size)
    return Problem(
        f"File too large: {held} bytes; {allowed} {limit} bytes.",
        "file",
        "file_too_large",
        413,
    )


def storage_problem(size: int, stored: int, limit: int | None) -> Problem | None:
    """413 for an upload of ``size`` bytes past the server's storage ``limit``.

    ``stored``: the bytes the stored files hold now (result files included).
    None if it fits, or there is no limit.

    Example:
        >>> print(storage_problem(600, 500, 1_000).message)
        Storage limit reached: this file of 600 bytes would bring the files stored
        to 1100 bytes, past this server's limit of 1000 bytes. Delete files to
        make room.
        >>> storage_problem(500, 500, 1_000) is None
        True
    """
    if limit is None or stored + size <= limit:
        return None
    return storage_full_problem(StorageFull(size, stored, limit))


def storage_full_problem(full: StorageFull) -> Problem:
    """413 for a file a store refused with :class:`StorageFull`.

    Example:
        >>> storage_full_problem(StorageFull(600, 500, 1_000)).code
        'storage_limit_exceeded'
    """
    return Problem(
        f"Storage limit reached: this file of {full.size} bytes would bring the "
        f"files stored to {full.stored + full.size} bytes, past this server's "
        f"limit of {full.limit} bytes. Delete files to make room.",
        "file",
        "storage_limit_exceeded",
        413,
    )


def upload_problem(filename: str, purpose: Any, size: int) -> Problem | None:
    """Why an upload is refused, or ``None``.

    Example:
        >>> upload_problem("notes.txt", "batch", 10).message
        'Invalid file format for Batch API. Must be .jsonl'
        >>> [upload_problem(name, "batch", 10) for name in ("in.jsonl", "upload")]
        [None, None]
    """
    if not isinstance(purpose, str) or purpose not in PURPOSES:
        return invalid_value("purpose", str(purpose), PURPOSES)
    if size > MAX_FILE_BYTES:
        return too_large_problem(size, batch=False)
    if purpose != "batch":
        return None
    # A name without an extension passes: the official client names raw bytes
    # and nameless file objects "upload" (observed: the live API accepts them).
    extension = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if extension not in ("", ".jsonl"):
        return Problem("Invalid file format for Batch API. Must be .jsonl", None, None)
    if size > MAX_BATCH_FILE_BYTES:
        return too_large_problem(size, batch=True)
    return None


def checked_content(
    purpose: str, content: bytes | Iterable[Piece]
) -> bytes | Iterator[Piece]:
    r"""``content`` as it is, refused where a ``batch`` file stops being UTF-8.

    Bytes are checked whole before they are returned; pieces as they pass, by
    an incremental decoder (so a character cut between two pieces is fine),
    each before it is handed on, the end of the file last: a store writing
    them stores nothing of a refused file. A NUL byte is refused too: no JSON
    text holds one raw, and every UTF-16 or UTF-32 file of ASCII text does. A
    UTF-8 byte order mark is accepted (validation passes over it). Files of
    other purposes pass unread.

    Raises:
        ApiError: 400 "Invalid file for Batch API. Must be utf-8 encoded".

    Example:
        >>> b"".join(checked_content("batch", iter([b"{\xc3", b"\xa9}\n"])))
        b'{\xc3\xa9}\n'
        >>> list(checked_content("batch", ["é".encode("utf-16")]))
        Traceback (most recent call last):
        ...
        batchfsm.emulator._api_error.ApiError: 400: Invalid file for Batch API. ...
    """
    if purpose != "batch":
        return content if isinstance(content, bytes) else iter(content)
    if isinstance(content, bytes):
        if b"\0" in content or not content.isascii():  # memchr first: cheap
            view = memoryview(content)
            _utf8_end(
                view[i : i + PIECE_BYTES] for i in range(0, len(view), PIECE_BYTES)
            )
        return content
    return _utf8_pieces(content)


def _utf8_pieces(content: Iterable[Piece]) -> Iterator[Piece]:
    """The pieces, each checked before it is handed on; the end checked last."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for piece in content:
        _utf8_piece(decoder, piece)
        yield piece
    _utf8_piece(decoder, b"", final=True)


def _utf8_end(content: Iterable[Piece]) -> None:
    """Check every piece, then the end."""
    for _ in _utf8_pieces(content):
        pass


def _utf8_piece(
    decoder: codecs.IncrementalDecoder, piece: Piece, *, final: bool = False
) -> None:
    whole = piece if isinstance(piece, bytes) else bytes(piece)
    if b"\0" in whole:
        raise refuse(NOT_UTF8)
    if whole.isascii() and not decoder.getstate()[0] and not final:
        return  # ASCII after a whole character: nothing to decode
    try:
        decoder.decode(whole, final=final)
    except UnicodeDecodeError:
        raise refuse(NOT_UTF8) from None


def expires_at(purpose: str, created_at: int, expires_after: int | None) -> int | None:
    """When a new file expires: ``expires_after`` seconds after its creation.

    Without ``expires_after``, a ``batch`` file expires after 30 days and any
    other file never.

    Example:
        >>> expires_at("batch", 1000, None) - 1000, expires_at("vision", 1000, None)
        (2592000, None)
    """
    if expires_after is not None:
        return created_at + expires_after
    if purpose == "batch":
        return created_at + BATCH_FILE_EXPIRES_AFTER
    return None


def is_live(file: FileObject | None, now: int) -> bool:
    """Whether ``file`` exists at ``now`` (an expired file is gone everywhere).

    Example:
        >>> f = FileObject(id="file-1", bytes=1, created_at=0, filename="a.jsonl",
        ...                purpose="batch", expires_at=10)
        >>> is_live(f, 9), is_live(f, 10), is_live(None, 0)
        (True, False, False)
    """
    return file is not None and (file.expires_at is None or now < file.expires_at)


def purge_expired(files: FileStore, now: int) -> int:
    """Purge every file expired at ``now``, :data:`PURGE_FILES_PER_STEP` at a time.

    Each step is one call of :meth:`FileStore.purge` (one transaction in SQL),
    so a backlog never holds the store for long at once. Returns how many.

    Example:
        >>> from ._stores import MemoryFileStore
        >>> files = MemoryFileStore()
        >>> for i in range(40):
        ...     files.add(FileObject(id=f"file-{i}", bytes=0, created_at=0,
        ...                          filename="a.jsonl", purpose="batch",
        ...                          expires_at=i % 2 + 1), b"")
        >>> purge_expired(files, 1), purge_expired(files, 9), files.list()
        (20, 20, [])
    """
    purged = 0
    while True:
        step = files.purge(now, PURGE_FILES_PER_STEP)
        purged += step
        if step < PURGE_FILES_PER_STEP:
            return purged


def list_files_page(
    files: FileStore,
    now: int,
    *,
    after: str | None = None,
    limit: str | None = None,
    order: str | None = None,
    purpose: str | None = None,
    project: str | None = None,
) -> dict[str, Any] | Problem:
    """One page of ``GET /v1/files``, from its query parameters (as text).

    Lists the files of ``files`` live at ``now``, read a page at a time from
    the store (expired files are purged with the due work, so it passes over
    only those that expired since). ``order`` is ``desc`` (the default) or
    ``asc`` by creation;
    ``after`` is the id of a listed file (live, and of ``purpose`` if given)
    the page starts after; ``purpose`` keeps only that purpose, ``project``
    only that project's files (an ``after`` of another is as unknown).

    Example:
        >>> from ._stores import MemoryFileStore
        >>> files = MemoryFileStore()
        >>> for i in (1, 2, 3):
        ...     files.add(FileObject(id=f"file-{i}", bytes=1, created_at=i,
        ...                          filename="a.jsonl", purpose="batch"), b"x")
        >>> page = list_files_page(files, 9, limit="2", order="asc")
        >>> [f["id"] for f in page["data"]], page["has_more"], page["last_id"]
        (['file-1', 'file-2'], True, 'file-2')
    """
    size = list_limit(limit, MAX_LIST_LIMIT, MAX_LIST_LIMIT)
    if isinstance(size, Problem):
        return size
    if order not in (None, "asc", "desc"):
        return invalid_value("order", str(order), ["asc", "desc"])
    if after is not None:
        start = files.get(after, project=project)
        if not is_live(start, now) or (
            purpose is not None and start is not None and start.purpose != purpose
        ):
            return after_problem("file", after)
    page, has_more = files.page(
        after,
        size,
        order="asc" if order == "asc" else "desc",
        purpose=purpose,
        now=now,
        project=project,
    )
    return list_page([f.to_dict() for f in page], has_more)
