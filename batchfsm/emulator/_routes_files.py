"""The Files API's routes: upload, list, retrieve, delete a file, and its content.

An upload streams through the multipart parser into a temporary file (on disk
past 1 MiB), then from there into the store a piece at a time, in a worker
thread, never held whole; uploads in flight together hold at most the app's
upload budget (429 beyond, unless it is the only one). A download streams
from the store a piece at a time as the client takes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Send

from ._api_error import ApiError, refuse
from ._endpoint import AppContext, context_of, endpoint, log, project_of
from ._files import FileGoneError, read_pieces
from ._http import (
    MAX_FIELD_BYTES,
    MAX_UPLOAD_BYTES,
    JSONResponse,
    declared_length,
    too_large,
)
from ._params import expires_after_problem, is_count
from ._store_errors import StoreUnavailable
from ._stores import FileObject

__all__ = ["file_routes"]


async def upload(request: Request) -> Response:
    """``POST /v1/files``: a multipart upload, held against the upload budget."""
    # The body streams through the multipart parser, which spools the file
    # to a temporary file; the store reads it from there a piece at a time.
    # Not straight from the socket: the form's fields may follow the file,
    # and a store writing a file in one transaction (SQLite's writer)
    # must not wait on a slow client.
    budget = context_of(request).budget
    declared = declared_length(request, MAX_UPLOAD_BYTES)
    held = size = 0

    async def receive() -> Message:
        nonlocal held, size
        message = await request.receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > MAX_UPLOAD_BYTES:
                raise too_large(MAX_UPLOAD_BYTES)
            if size > held:
                budget.take(held, size - held)
                held = size
        return message

    try:
        if declared:
            budget.take(0, declared)
            held = declared
        return await _store_upload(Request(request.scope, receive))
    finally:
        budget.held -= held


def _required(form: FormData, name: str, kind: type) -> Any:
    value = form.get(name)
    if not isinstance(value, kind):
        raise ApiError(
            400,
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )
    return value


def _expires_after(form: FormData) -> int | None:
    """The form's ``expires_after[seconds]``, read as the JSON object would be."""
    seconds = form.get("expires_after[seconds]")
    if seconds is None:
        return None
    count = int(seconds) if isinstance(seconds, str) and is_count(seconds) else None
    given = {
        "anchor": form.get("expires_after[anchor]"),
        "seconds": seconds if count is None else count,
    }
    problem = expires_after_problem("expires_after", given)
    if problem is not None:
        raise refuse(problem)
    return count


async def _store_upload(request: Request) -> Response:
    try:
        form = await request.form(
            max_files=1, max_fields=8, max_part_size=MAX_FIELD_BYTES
        )
    except (HTTPException, ValueError, AssertionError) as exc:
        raise ApiError(
            400,
            f"Could not parse the multipart form: {getattr(exc, 'detail', exc)}",
        ) from None
    try:
        file: UploadFile = _required(form, "file", UploadFile)
        purpose: str = _required(form, "purpose", str)
        expires_after = _expires_after(form)
        context = context_of(request)
        # The temporary file as it stands (at its start), read in the
        # thread: a memory store's copy too is no work for the event loop.
        created = await context.in_thread(
            context.emulator.create_file,
            file.file,
            file.filename or "upload.jsonl",
            purpose,
            expires_after,
            project=project_of(request),
        )
    finally:
        await form.close()
    return JSONResponse(created.to_dict())


def list_files(request: Request) -> Response:
    """``GET /v1/files``: a page of files."""
    query = request.query_params
    page = context_of(request).emulator.list_files(
        after=query.get("after"),
        limit=query.get("limit"),
        order=query.get("order"),
        purpose=query.get("purpose"),
        project=project_of(request),
    )
    return JSONResponse(page)


def get_file(request: Request) -> Response:
    """``GET /v1/files/{file_id}``: one file's object."""
    emulator = context_of(request).emulator
    file_id = request.path_params["file_id"]
    file = emulator.retrieve_file(file_id, project=project_of(request))
    return JSONResponse(file.to_dict())


def delete_file(request: Request) -> Response:
    """``DELETE /v1/files/{file_id}``: the file, deleted."""
    emulator = context_of(request).emulator
    file_id = request.path_params["file_id"]
    return JSONResponse(emulator.delete_file(file_id, project=project_of(request)))


class _StoreGoneError(Exception):
    """The store became unavailable while a file was being read in pieces."""


class _FileDownload(StreamingResponse):
    """A file's content, streamed; cut off in one log line if it cannot go on."""

    async def stream_response(self, send: Send) -> None:
        # Its Content-Length promised more: nothing honest can end this
        # answer, so it stays unfinished and the server closes the
        # connection (the client sees a short body), no traceback.
        try:
            await super().stream_response(send)
        except FileGoneError as exc:
            log.info("a download of %s was cut off: the file was deleted", exc)
        except _StoreGoneError as exc:
            log.info("a download of %s was cut off: the store is unavailable", exc)


async def file_content(request: Request) -> Response:
    """``GET /v1/files/{file_id}/content``: the file's bytes, streamed."""
    # Streamed: read from the store a piece at a time as the client takes
    # it (uvicorn's send waits while the socket's buffer is full), so a
    # download holds one piece, whatever the file's size.
    context = context_of(request)
    file = await context.call(
        context.emulator.retrieve_file,
        request.path_params["file_id"],
        project=project_of(request),
    )
    return _FileDownload(
        _download(context, file),
        media_type="application/octet-stream",
        headers={"content-length": str(file.bytes)},
    )


async def _download(context: AppContext, file: FileObject) -> AsyncIterator[bytes]:
    pieces = read_pieces(context.emulator.files, file)
    try:
        while (piece := await context.call(next, pieces, None)) is not None:
            yield piece
    except StoreUnavailable as exc:  # the answer began: too late for a 503
        context.emulator.outage.failed(exc)
        raise _StoreGoneError(file.id) from None


def file_routes() -> list[BaseRoute]:
    """The Files API's routes."""
    return [
        Route("/v1/files", endpoint(upload), methods=["POST"]),
        Route("/v1/files", endpoint(list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", endpoint(get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", endpoint(delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", endpoint(file_content), methods=["GET"]),
    ]
