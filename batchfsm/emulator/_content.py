"""A file's content as it travels into a store: pieces of bytes, never all at once.

A store takes a file's content as :data:`Content`, bytes or an iterable of
pieces of bytes, and writes it as the pieces come (:func:`exactly` checks
that they add up to the size the File object declares). An upload reaches
the emulator as bytes, a binary file open for reading, or an iterable of
pieces (:data:`Upload`); :func:`measure` tells its size where it can be known
without reading it (bytes, a seekable file), and :func:`spool` learns it by
copying the pieces to a temporary file (on disk past
:data:`SPOOL_MEMORY_BYTES`), refusing as soon as they pass a limit: so every
limit is applied before the store sees a byte.
"""

from __future__ import annotations

import functools
import io
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Protocol

__all__ = [
    "PIECE_BYTES",
    "SPOOL_MEMORY_BYTES",
    "Content",
    "Piece",
    "Readable",
    "TooLargeError",
    "Upload",
    "exactly",
    "measure",
    "pieces",
    "spool",
]

#: Bytes read from a file at a time on the way to a store.
PIECE_BYTES = 1 << 20
#: A spooled upload of unknown size stays in memory up to this size, then
#: moves to a temporary file on disk.
SPOOL_MEMORY_BYTES = 1 << 20


class Readable(Protocol):
    """A binary file open for reading (``open(path, "rb")``, :class:`io.BytesIO`)."""

    def read(self, size: int = -1, /) -> bytes: ...


#: A piece of a file's content.
Piece = bytes | bytearray | memoryview
#: A file's content as a :class:`~batchfsm.emulator.FileStore` takes it: the
#: bytes, or the bytes in pieces (an iterable of pieces, read once, in order).
Content = bytes | Iterable[Piece]
#: An upload as :meth:`~batchfsm.emulator.Emulator.create_file` takes it: the
#: bytes, a binary file open for reading (read from where it stands to its
#: end), or an iterable of pieces of bytes.
Upload = bytes | Readable | Iterable[Piece]

_BYTES_LIKE = (bytes, bytearray, memoryview)


def pieces(content: Content | Readable) -> Iterator[Piece]:
    """The pieces of ``content``; bytes are one piece, uncopied.

    Raises:
        TypeError: a piece is not bytes (a file opened in text mode, say).

    Example:
        >>> list(pieces(b"ab")), list(pieces([b"a", b"", b"b"])), list(pieces(b""))
        ([b'ab'], [b'a', b'', b'b'], [])
        >>> list(pieces(io.BytesIO(b"abc")))
        [b'abc']
    """
    if isinstance(content, _BYTES_LIKE):
        if memoryview(content).nbytes:
            yield content
        return
    read = getattr(content, "read", None)
    source: Iterable[object] = (
        iter(functools.partial(read, PIECE_BYTES), b"") if read is not None else content  # type: ignore[assignment]  # an iterable of pieces
    )
    for piece in source:
        if not isinstance(piece, _BYTES_LIKE):
            raise TypeError(
                "content must be bytes, a binary file or an iterable of bytes; "
                f"a piece of it is {type(piece).__name__}"
            )
        yield piece


def exactly(content: Content, size: int, file_id: str) -> Iterator[Piece]:
    """The pieces of ``content``, checked to add up to exactly ``size`` bytes.

    Raises:
        ValueError: as soon as they pass ``size``, or at their end if short
            (a store then stores nothing of the file).

    Example:
        >>> b"".join(exactly([b"ab", b"c"], 3, "file-1"))
        b'abc'
        >>> b"".join(exactly([b"ab"], 3, "file-1"))
        Traceback (most recent call last):
        ...
        ValueError: file-1: its content is 2 bytes, not the 3 its File object says
    """
    held = 0
    for piece in pieces(content):
        held += memoryview(piece).nbytes
        if held > size:
            raise ValueError(
                f"{file_id}: its content is over {size} bytes, "
                "the size its File object says"
            )
        yield piece
    if held != size:
        raise not_its_size(file_id, held, size)


def not_its_size(file_id: str, held: int, size: int) -> ValueError:
    """The error of content of ``held`` bytes for a file of ``size`` bytes."""
    return ValueError(
        f"{file_id}: its content is {held} bytes, not the {size} its File object says"
    )


def measure(upload: Upload) -> int | None:
    """The bytes ``upload`` holds, if that can be known without reading it.

    Bytes, or a seekable file (from where it stands to its end); None for
    anything else (a pipe, an iterable of pieces).

    Example:
        >>> f = io.BytesIO(b"abcdef")
        >>> f.seek(2)
        2
        >>> measure(b"abc"), measure(f), f.tell(), measure([b"abc"])
        (3, 4, 2, None)
    """
    if isinstance(upload, _BYTES_LIKE):
        return memoryview(upload).nbytes
    if getattr(upload, "read", None) is None:
        return None
    file: IO[bytes] = upload  # type: ignore[assignment]
    try:
        # (Python 3.10's SpooledTemporaryFile seeks but has no seekable().)
        if not getattr(file, "seekable", lambda: True)():
            return None
        here = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(here)
    except (AttributeError, OSError, ValueError):  # no seek, closed, a pipe
        return None
    return max(0, end - here)


class TooLargeError(Exception):
    """An upload of unknown size passed its limit while it was being spooled."""

    def __init__(self, held: int) -> None:
        super().__init__(held)
        self.held = held


def spool(upload: Upload, limit: int) -> tuple[IO[bytes], int]:
    """``upload`` copied to a temporary file, and its size; the file at its start.

    The copy stays in memory up to :data:`SPOOL_MEMORY_BYTES`, on disk past
    it; the caller closes it (which deletes it).

    Raises:
        TooLargeError: as soon as the pieces pass ``limit`` bytes (the copy
            is deleted).

    Example:
        >>> copy, size = spool(iter([b"ab", b"cd"]), limit=10)
        >>> size, copy.read()
        (4, b'abcd')
        >>> copy.close()
        >>> spool(iter([b"ab", b"cd"]), limit=3)
        Traceback (most recent call last):
        ...
        batchfsm.emulator._content.TooLargeError: 4
    """
    copy: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - returned open
    held = 0
    try:
        for piece in pieces(upload):
            held += memoryview(piece).nbytes
            if held > limit:
                raise TooLargeError(held)
            copy.write(piece)
        copy.seek(0)
    except BaseException:
        copy.close()
        raise
    return copy, held
