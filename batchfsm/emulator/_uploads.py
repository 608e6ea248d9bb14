"""The Uploads API: a file sent in parts, a File when completed.

``POST /v1/uploads`` (``bytes``, ``filename``, ``mime_type``, ``purpose``,
optional ``expires_after``) answers an Upload object ``pending`` that expires
an hour after its creation; ``POST /v1/uploads/{id}/parts`` (multipart,
field ``data``, at most 64 MB a part) answers an ``upload.part``;
``POST /v1/uploads/{id}/complete`` (``part_ids`` in the order of the file,
optional ``md5``) joins the parts into a File, stored as an upload through
``POST /v1/files`` is (so a ``batch`` one can be a batch's input), and
answers the Upload ``completed`` with its ``file``;
``POST /v1/uploads/{id}/cancel`` answers it ``cancelled``. Parts wait in
temporary files (on disk past 1 MiB), never in memory whole, and only while
their upload is pending: completed or cancelled, its parts' files are closed
at once; expired, at the next sweep (:meth:`Uploads.sweep`: each call of the
Uploads API, and the emulator's run of due work, a bounded number of uploads
each, earliest expiry first). A part that arrives once its upload is no
longer pending is refused, and its file closed.

An Upload is its creator's project's, as files and batches are: another
project's upload id answers every call exactly as an unknown one (404), and
its completed File is the project's.
"""

from __future__ import annotations

import hashlib
import heapq
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import attrs

from ._api_error import ApiError, refuse
from ._files import upload_problem
from ._projects import DEFAULT_PROJECT

if TYPE_CHECKING:
    from ._engine import Emulator

__all__ = ["MAX_PART_BYTES", "MAX_UPLOAD_TOTAL_BYTES", "Uploads", "uploads_of"]

#: What one part may hold (the API's documented limit).
MAX_PART_BYTES = 64 * 1024 * 1024
#: What an Upload may hold in all (the API's documented limit).
MAX_UPLOAD_TOTAL_BYTES = 8 * 1024**3
#: An Upload expires an hour after its creation.
UPLOAD_SECONDS = 3600
#: Expired uploads whose parts one sweep frees, at most.
SWEEP_UPLOADS = 64
_PIECE = 1024 * 1024


@attrs.define
class _Part:
    id: str
    created_at: int
    data: IO[bytes]
    size: int


@attrs.define
class _Upload:
    id: str
    created_at: int
    filename: str
    purpose: str
    bytes: int
    expires_after: int | None
    project: str = DEFAULT_PROJECT
    status: str = "pending"
    parts: dict[str, _Part] = attrs.Factory(dict)
    file: dict[str, Any] | None = None

    def to_dict(self, now: int) -> dict[str, Any]:
        expires_at = self.created_at + UPLOAD_SECONDS
        status = self.status
        if status == "pending" and now >= expires_at:
            status = "expired"
        return {
            "id": self.id,
            "object": "upload",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": status,
            "expires_at": expires_at,
            "file": self.file,
        }

    def drop_parts(self) -> None:
        for part in self.parts.values():
            part.data.close()
        self.parts.clear()


def _missing(name: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{name}'.",
        param=name,
        code="missing_required_parameter",
    )


def _invalid_type(name: str, expected: str) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{name}': expected {expected}.",
        param=name,
        code="invalid_type",
    )


class Uploads:
    """The Uploads of one emulator (kept in memory, as its parts' temporary files)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.lock = threading.Lock()
        self.uploads: dict[str, _Upload] = {}
        # (expires_at, id) of each upload made, earliest first: a sweep pops
        # those due, whatever became of them.
        self._expiring: list[tuple[int, str]] = []

    def clear(self) -> None:
        with self.lock:
            for upload in self.uploads.values():
                upload.drop_parts()
            self.uploads.clear()
            self._expiring.clear()

    def sweep(self, now: int, limit: int = SWEEP_UPLOADS) -> int:
        """Close the parts' files of up to ``limit`` uploads expired at ``now``.

        Earliest expiry first; costs what it frees, not the number of uploads.
        An upload being completed is left to its completion (which frees its
        parts either way). Returns how many expired uploads it passed.
        """
        swept = 0
        with self.lock:
            heap = self._expiring
            while heap and heap[0][0] <= now and swept < limit:
                _, upload_id = heapq.heappop(heap)
                upload = self.uploads.get(upload_id)
                if upload is not None and upload.status == "pending":
                    upload.drop_parts()
                swept += 1
        return swept

    def _swept(self) -> int:
        """Sweep what expired by now (every call of the API does), then ``now``."""
        now = self.emu._now()
        self.sweep(now)
        return now

    def _get(self, upload_id: str, project: str) -> _Upload:
        upload = self.uploads.get(upload_id)
        # Another project's upload is unknown: the same answer, word for word.
        if upload is None or upload.project != project:
            raise ApiError(404, f"No upload found with id '{upload_id}'.")
        return upload

    def _pending(self, upload_id: str, project: str) -> _Upload:
        upload = self._get(upload_id, project)
        status = upload.to_dict(self.emu._now())["status"]
        if status != "pending":
            raise ApiError(
                400,
                f"Upload {upload_id} is {status}: only a pending upload "
                "takes parts, completes or cancels.",
            )
        return upload

    def create(
        self, data: dict[str, Any], *, project: str = DEFAULT_PROJECT
    ) -> dict[str, Any]:
        """Create an Upload of ``project`` from the JSON body ``data``."""
        for name in ("bytes", "filename", "mime_type", "purpose"):
            if name not in data:
                raise _missing(name)
        size = data["bytes"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _invalid_type("bytes", "a non-negative integer")
        if size > MAX_UPLOAD_TOTAL_BYTES:
            raise ApiError(
                400,
                f"An upload holds at most {MAX_UPLOAD_TOTAL_BYTES} bytes.",
                param="bytes",
                code="invalid_value",
            )
        for name in ("filename", "mime_type"):
            if not isinstance(data[name], str):
                raise _invalid_type(name, "a string")
        problem = upload_problem(data["filename"], data["purpose"], size)
        if problem is not None:
            raise refuse(problem)
        seconds = (data.get("expires_after") or {}).get("seconds")
        upload = _Upload(
            id=self.emu._id("upload_", 24),
            created_at=self.emu._now(),
            filename=data["filename"],
            purpose=data["purpose"],
            bytes=size,
            expires_after=seconds if isinstance(seconds, int) else None,
            project=project,
        )
        self._swept()
        with self.lock:
            self.uploads[upload.id] = upload
            expiry = (upload.created_at + UPLOAD_SECONDS, upload.id)
            heapq.heappush(self._expiring, expiry)
        return upload.to_dict(upload.created_at)

    def add_part(
        self, upload_id: str, source: IO[bytes], *, project: str = DEFAULT_PROJECT
    ) -> dict[str, Any]:
        """Add the bytes of ``source`` (read to its end) as a part of ``upload_id``.

        ``upload_id`` must be ``project``'s (else 404, as an unknown one).
        """
        self._swept()
        with self.lock:
            upload = self._pending(upload_id, project)
        # Kept open past this call, as the part's bytes: closed by drop_parts.
        copy: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_PIECE)  # noqa: SIM115
        try:  # a client gone, a full disk: the copy is closed, not left behind
            size = _copied(source, copy)
            part = _Part(self.emu._id("part_", 24), self._swept(), copy, size)
        except BaseException:
            copy.close()
            raise
        with self.lock:
            try:  # pending still? Cancelled, completed or expired meanwhile: no
                self._pending(upload_id, project)
            except ApiError:
                copy.close()
                raise
            held = sum(p.size for p in upload.parts.values())
            if held + size > upload.bytes:
                copy.close()
                raise ApiError(
                    400,
                    f"The parts would hold {held + size} bytes, more than the "
                    f"{upload.bytes} the upload was created with.",
                    param="data",
                )
            upload.parts[part.id] = part
        return {
            "id": part.id,
            "object": "upload.part",
            "created_at": part.created_at,
            "upload_id": upload_id,
        }

    def complete(
        self, upload_id: str, data: dict[str, Any], *, project: str = DEFAULT_PROJECT
    ) -> dict[str, Any]:
        """Join the parts ``data["part_ids"]`` into a File; the Upload completed.

        ``upload_id`` must be ``project``'s (else 404, as an unknown one); the
        File is the project's.
        """
        if "part_ids" not in data:
            raise _missing("part_ids")
        ids = data["part_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _invalid_type("part_ids", "an array of strings")
        self._swept()
        with self.lock:
            upload = self._pending(upload_id, project)
            parts = self._parts(upload, ids)
            upload.status = "completing"  # no second complete, no cancel meanwhile
        try:
            file = self._store(upload, parts, data.get("md5"))
        except BaseException:
            with self.lock:
                upload.status = "pending"
                if upload.to_dict(self.emu._now())["status"] == "expired":
                    upload.drop_parts()  # expired while completing: the sweep passed
            raise
        with self.lock:
            upload.status, upload.file = "completed", file
            upload.drop_parts()
        return upload.to_dict(self.emu._now())

    @staticmethod
    def _parts(upload: _Upload, ids: list[str]) -> list[_Part]:
        unknown = [i for i in ids if i not in upload.parts]
        if unknown:
            raise ApiError(
                400,
                f"Part {unknown[0]!r} is not a part of upload {upload.id}.",
                param="part_ids",
            )
        if len(set(ids)) != len(ids):
            raise ApiError(400, "part_ids names a part twice.", param="part_ids")
        parts = [upload.parts[i] for i in ids]
        total = sum(p.size for p in parts)
        if total != upload.bytes:
            raise ApiError(
                400,
                f"The parts hold {total} bytes, not the {upload.bytes} the upload "
                "was created with.",
                param="part_ids",
            )
        return parts

    def _store(self, upload: _Upload, parts: list[_Part], md5: Any) -> dict[str, Any]:
        if md5 is not None:
            digest = hashlib.md5(usedforsecurity=False)
            for piece in _read(parts):
                digest.update(piece)
            if not isinstance(md5, str) or digest.hexdigest() != md5.lower():
                raise ApiError(
                    400, "The md5 does not match the parts' bytes.", param="md5"
                )
        created = self.emu.create_file(
            _read(parts),
            upload.filename,
            upload.purpose,
            upload.expires_after,
            project=upload.project,
        )
        return created.to_dict()

    def cancel(
        self, upload_id: str, *, project: str = DEFAULT_PROJECT
    ) -> dict[str, Any]:
        """Cancel a pending Upload of ``project``: its parts are dropped."""
        self._swept()
        with self.lock:
            upload = self._pending(upload_id, project)
            upload.status = "cancelled"
            upload.drop_parts()
        return upload.to_dict(self.emu._now())


def _read(parts: list[_Part]) -> Iterator[bytes]:
    for part in parts:
        part.data.seek(0)
        while piece := part.data.read(_PIECE):
            yield piece


def uploads_of(emulator: Emulator) -> Uploads:
    """The Uploads of ``emulator`` (made on first use)."""
    uploads: Uploads | None = emulator.__dict__.get("_uploads")
    if uploads is None:
        uploads = emulator.__dict__.setdefault("_uploads", Uploads(emulator))
    return uploads


def _copied(source: IO[bytes], copy: IO[bytes]) -> int:
    """Copy ``source`` to its end into ``copy`` (rewound); its size."""
    size = 0
    while piece := source.read(_PIECE):
        size += len(piece)
        if size > MAX_PART_BYTES:
            raise ApiError(
                413, f"A part holds at most {MAX_PART_BYTES} bytes.", param="data"
            )
        copy.write(piece)
    copy.seek(0)
    return size
