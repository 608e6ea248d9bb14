"""The emulator over HTTP: an ASGI app with the Batch API's routes and errors.

Routes: ``POST /v1/files`` (multipart), ``GET /v1/files``, ``GET``/``DELETE
/v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST``/``GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. Every error answers
the API's body ``{"error": {"message", "type", "param", "code"}}``; malformed
input is a 4xx, never a 5xx, and never changes a stored batch. Bodies over the
limits are refused with 413 before they are read whole; an upload streams
through the multipart parser into a temporary file (on disk past 1 MiB),
then from there into the store a piece at a time, in a worker thread, never
held whole; uploads in flight together hold at most
:data:`MAX_UPLOAD_BYTES_IN_FLIGHT` (429 beyond, unless it is the only one;
``upload_bytes_in_flight``, ``serve --upload-budget``); a JSON body must say
``Content-Type: application/json`` (415 otherwise, so that no web page can post
one without a CORS preflight). A client that goes away mid-request is logged
in one line; a bug of the emulator answers 500 with the API's error body; a
store that is unavailable (connection lost, database restarting, disk full),
503 with ``Retry-After`` and the same body (``type`` ``server_error``), told
in the log once as it goes and once as it comes back (:class:`._outage.Outage`).

On a store other than the memory one (a database), each call of the emulator
runs in a worker thread (at most :data:`STORE_THREADS` at once per event
loop and app; ``store_threads``, ``serve --store-threads``), so that a call
waiting on the database never holds up another client's; on the memory store
a call costs less than the hop to a thread and runs on the event loop (but
for an upload, which copies the file).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Send

from .._json import encode
from .._json_io import to_dict
from ._api_error import ApiError, refuse
from ._engine import Emulator
from ._files import MAX_FILE_BYTES, FileGoneError, read_pieces
from ._metrics import HttpMetrics, metrics_registry, scrape
from ._outage import RETRY_AFTER_SECONDS
from ._params import expires_after_problem, is_count
from ._request_id import RequestIdMiddleware
from ._store_errors import StoreUnavailable
from ._stores import FileObject, MemoryBatchStore, MemoryFileStore
from ._web import MAX_LIVE_VIEWS, web_routes

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_BYTES_IN_FLIGHT",
    "STORE_THREADS",
    "create_app",
]

#: An upload may hold a 512 MB file plus its multipart framing.
MAX_UPLOAD_BYTES = MAX_FILE_BYTES + 64 * 1024
#: The bytes all uploads in flight may hold together (our choice: the API
#: states no such bound). An upload that would pass it while others are in
#: flight is refused with 429 ``rate_limit_exceeded``; one alone is never
#: refused by it, so every upload up to :data:`MAX_UPLOAD_BYTES` can pass.
MAX_UPLOAD_BYTES_IN_FLIGHT = 2 * MAX_UPLOAD_BYTES
#: An upload's fields other than the file (a purpose, a number of seconds).
MAX_FIELD_BYTES = 64 * 1024
#: A JSON request body (create batch) is small.
MAX_JSON_BYTES = 1024 * 1024
#: What an API key may be: printable ASCII, no spaces, as a header carries it.
API_KEY = re.compile(r"[!-~]+")

#: At most this many calls of the emulator on a database run at once (per event
#: loop), by default; more wait their turn without holding up the loop.
STORE_THREADS = 8

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


def _limiter(threads: int) -> Callable[[], CapacityLimiter]:
    """The limiter of ``threads`` store threads, one per event loop that asks.

    A limiter belongs to the event loop it was made on, and an app may be run
    by several loops in turn (tests, a restarted server).
    """
    made: RunVar[CapacityLimiter] = RunVar("batchfsm_store_threads")

    def limiter() -> CapacityLimiter:
        try:
            return made.get()
        except LookupError:
            made.set(CapacityLimiter(threads))
            return made.get()

    return limiter


def check_api_key(key: str | None, name: str = "api_key") -> str | None:
    """``key`` if a request can carry it (or None); a one-line ValueError if not.

    A key is one or more printable ASCII characters without spaces: an empty
    one, or one with spaces or other characters, would refuse every request.
    The message names the setting ``name`` and never shows the key.
    """
    if key is not None and not API_KEY.fullmatch(key):
        what = "it is empty" if not key else "it holds other characters"
        raise ValueError(
            f"{name} must be one or more printable ASCII characters without "
            f"spaces: {what}"
        )
    return key


def _at_least_one(name: str, value: object) -> int:
    """``value`` if it is an int of at least 1; a ValueError naming ``name`` if not."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
    return value


def _in_memory(emulator: Emulator) -> bool:
    # Exactly the memory stores: a subclass, like any other store, may wait.
    return (
        type(emulator.batches) is MemoryBatchStore
        and type(emulator.files) is MemoryFileStore
    )


log = logging.getLogger("batchfsm.emulator")


def _unavailable(exc: StoreUnavailable) -> Response:
    """503 with ``Retry-After``: the store is away, the same call may pass later."""
    body = ApiError(503, f"The store is unavailable; retry in a moment. ({exc})").body
    body["error"]["type"] = "server_error"
    return JSONResponse(
        body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


class JSONResponse(_StarletteJSON):
    """A JSON answer written by batchfsm's one JSON engine (``batchfsm._json``).

    Compact, non-ASCII as raw UTF-8, as the library's :func:`batchfsm.dumps`.
    """

    def render(self, content: Any) -> bytes:
        return encode(content)


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    return JSONResponse(ApiError(status, message, param=param, code=code).body, status)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body too large: the limit is {limit} bytes.")


def _declared(request: Request, limit: int) -> int | None:
    """The Content-Length, refused (400, 413) if it is no count or passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and not is_count(declared):
        raise ApiError(400, "Invalid Content-Length header.")
    if declared is not None and int(declared) > limit:
        raise _too_large(limit)
    return None if declared is None else int(declared)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass ``limit``."""
    _declared(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class _UploadBudget:
    """The bytes the uploads in flight hold, bounded by ``limit`` together.

    An upload takes its declared length when it starts, or its bytes as they
    arrive; it is refused only while other uploads hold some, so one alone
    always passes (its own limit is :data:`MAX_UPLOAD_BYTES`). One event
    loop runs the app, so no lock is needed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, mine: int, more: int) -> None:
        """Take ``more`` bytes for an upload holding ``mine``; 429 if over."""
        if self.held > mine and self.held + more > self.limit:
            busy = ApiError(
                429,
                "Too many uploads in flight: together they may hold "
                f"{self.limit} bytes. Try again when they are done.",
                code="rate_limit_exceeded",
            )
            busy.body["error"]["type"] = "requests"  # as the API's rate limits say
            raise busy
        self.held += more


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _charset(request: Request) -> str | None:
    """The ``charset`` parameter of the Content-Type, unquoted, if there is one."""
    for parameter in request.headers.get("content-type", "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"')
    return None


def _is_utf_8(charset: str) -> bool:
    # UTF-8's registered name (and the alias many clients send); no codec
    # lookup, which would take Python's own names for other things too.
    return charset.lower() in ("utf-8", "utf8")


async def _json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "(none)")[:100]
    if _media_type(request) != "application/json":
        raise ApiError(
            415,
            f"Unsupported content type {content_type!r}: "
            "the body must be JSON, sent as 'Content-Type: application/json'.",
        )
    charset = _charset(request)
    if charset is not None and not _is_utf_8(charset):
        raise ApiError(
            415,
            f"Unsupported content type {content_type!r}: "
            "a JSON body must be UTF-8 (charset=utf-8, or no charset).",
        )
    body = await _read_body(request, MAX_JSON_BYTES)
    try:
        # JSON exchanged between systems is UTF-8 (RFC 8259): json.loads of
        # bytes would also guess UTF-16 and UTF-32.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request: it is not UTF-8 "
            f"(byte {exc.start}). The body must be a JSON object in UTF-8.",
        ) from None
    try:
        # The standard library's parser keeps lone surrogates, so that the
        # refusal can name the parameter that holds one.
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The body must be a "
            "JSON object.",
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body of your request must be a JSON object.")
    return data


class _FileDownload(StreamingResponse):
    """A file's content, streamed; cut off in one log line if the file goes midway."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except FileGoneError as exc:
            # Its Content-Length promised more: nothing honest can end this
            # answer, so it stays unfinished and the server closes the
            # connection (the client sees a short body), no traceback.
            log.info("a download of %s was cut off: the file was deleted", exc)


def create_app(
    emulator: Emulator | None = None,
    *,
    api_key: str | None = None,
    upload_bytes_in_flight: int = MAX_UPLOAD_BYTES_IN_FLIGHT,
    store_threads: int = STORE_THREADS,
    ui: bool = True,
    max_live_views: int = MAX_LIVE_VIEWS,
) -> Starlette:
    """An ASGI app serving ``emulator`` (a new one on the system clock if None).

    An emulator of the app's own runs its batches in the background while an
    ASGI server runs the app's lifespan.

    With ``api_key``, every route demands ``Authorization: Bearer <api_key>``.
    ``upload_bytes_in_flight`` bounds the bytes of all uploads in flight
    together: one that would pass it while others are in flight gets 429.
    ``store_threads`` bounds the calls of the emulator that run at once in
    worker threads (on a database store; and uploads, on any). ``ui``: the
    web view at ``/ui`` (:mod:`._web`), behind the same key, with at most
    ``max_live_views`` live streams open at once. ``GET /metrics``
    answers in the Prometheus text format (:mod:`._metrics`).

    Raises:
        ValueError: ``api_key`` is empty or holds a space or a character
            other than printable ASCII; ``upload_bytes_in_flight`` or
            ``store_threads`` is not an integer of at least 1.

    Example:
        >>> from batchfsm.emulator import Emulator, create_app
        >>> app = create_app(Emulator())
        >>> sorted({route.path for route in app.routes})[:2]
        ['/v1/batches', '/v1/batches/{batch_id}']
    """
    check_api_key(api_key)
    budget = _UploadBudget(
        _at_least_one("upload_bytes_in_flight", upload_bytes_in_flight)
    )
    threads = _limiter(_at_least_one("store_threads", store_threads))
    owned = emulator is None
    if emulator is None:
        from ._clock import SystemClock

        emulator = Emulator(clock=SystemClock())
    emu = emulator
    in_memory = _in_memory(emu)

    def key_ok(key: str | None) -> bool:
        """Whether ``key`` opens the API (and the web view): the one key check."""
        return api_key is None or (
            key is not None and secrets.compare_digest(key.encode(), api_key.encode())
        )

    async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        bound = functools.partial(function, *args, **kwargs)
        return await anyio.to_thread.run_sync(bound, limiter=threads())

    async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the emulator: in a thread if its store may wait on a database."""
        if in_memory:
            return function(*args, **kwargs)
        return await in_thread(function, *args, **kwargs)

    def guarded(
        handler: Callable[[Request], Response | Awaitable[Response]],
    ) -> Endpoint:
        is_async = inspect.iscoroutinefunction(handler)

        async def endpoint(request: Request) -> Response:
            given = request.headers.getlist("authorization")
            if len(given) > 1:
                # Which one counts would be a guess, and a proxy checking the
                # last one would guess otherwise than a server checking the first.
                return _error(
                    400,
                    "The request has more than one Authorization header: "
                    "send exactly one, 'Authorization: Bearer YOUR_API_KEY'.",
                )
            bearer = given[0] if given and given[0].startswith("Bearer ") else None
            if not key_ok(None if bearer is None else bearer[len("Bearer ") :]):
                return _error(
                    401, "Incorrect API key provided.", code="invalid_api_key"
                )
            try:
                if is_async:
                    result = handler(request)
                else:  # a route that only calls the emulator: all of it
                    result = await call(handler, request)
                if not isinstance(result, Response):
                    result = await result
            except ApiError as exc:
                return JSONResponse(exc.body, status_code=exc.status_code)
            except StoreUnavailable as exc:
                emu.outage.failed(exc)
                return _unavailable(exc)
            except ClientDisconnect:
                log.info(
                    "%s %s: the client went away before its request was read",
                    request.method,
                    request.url.path,
                )
                return Response(status_code=400)  # nobody is left to read it
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                body = ApiError(500, "The emulator failed to answer: its bug.").body
                body["error"]["type"] = "server_error"
                return JSONResponse(body, status_code=500)
            emu.outage.ok()
            return result

        return endpoint  # fmt: skip

    async def upload(request: Request) -> Response:
        # The body streams through the multipart parser, which spools the file
        # to a temporary file; the store reads it from there a piece at a time.
        # Not straight from the socket: the form's fields may follow the file,
        # and a store writing a file in one transaction (SQLite's writer)
        # must not wait on a slow client.
        declared = _declared(request, MAX_UPLOAD_BYTES)
        held = size = 0

        async def receive() -> Message:
            nonlocal held, size
            message = await request.receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > MAX_UPLOAD_BYTES:
                    raise _too_large(MAX_UPLOAD_BYTES)
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
            file, purpose = form.get("file"), form.get("purpose")
            if not isinstance(file, UploadFile):
                raise ApiError(
                    400,
                    "Missing required parameter: 'file'.",
                    param="file",
                    code="missing_required_parameter",
                )
            if not isinstance(purpose, str):
                raise ApiError(
                    400,
                    "Missing required parameter: 'purpose'.",
                    param="purpose",
                    code="missing_required_parameter",
                )
            expires_after = None
            seconds = form.get("expires_after[seconds]")
            if seconds is not None:  # the form's text, read as the JSON object
                count = (
                    int(seconds)
                    if isinstance(seconds, str) and is_count(seconds)
                    else None
                )
                given = {
                    "anchor": form.get("expires_after[anchor]"),
                    "seconds": seconds if count is None else count,
                }
                problem = expires_after_problem("expires_after", given)
                if problem is not None:
                    raise refuse(problem)
                expires_after = count
            # The temporary file as it stands (at its start), read in the
            # thread: a memory store's copy too is no work for the event loop.
            created = await in_thread(
                emu.create_file,
                file.file,
                file.filename or "upload.jsonl",
                purpose,
                expires_after,
            )
        finally:
            await form.close()
        return JSONResponse(created.to_dict())  # fmt: skip

    def list_files(request: Request) -> Response:
        query = request.query_params
        page = emu.list_files(
            after=query.get("after"),
            limit=query.get("limit"),
            order=query.get("order"),
            purpose=query.get("purpose"),
        )
        return JSONResponse(page)

    def get_file(request: Request) -> Response:
        return JSONResponse(emu.retrieve_file(request.path_params["file_id"]).to_dict())

    def delete_file(request: Request) -> Response:
        return JSONResponse(emu.delete_file(request.path_params["file_id"]))

    async def file_content(request: Request) -> Response:
        # Streamed: read from the store a piece at a time as the client takes
        # it (uvicorn's send waits while the socket's buffer is full), so a
        # download holds one piece, whatever the file's size.
        file = await call(emu.retrieve_file, request.path_params["file_id"])
        return _FileDownload(
            _download(file),
            media_type="application/octet-stream",
            headers={"content-length": str(file.bytes)},
        )

    async def _download(file: FileObject) -> AsyncIterator[bytes]:
        pieces = read_pieces(emu.files, file)
        while (piece := await call(next, pieces, None)) is not None:
            yield piece

    async def create_batch(request: Request) -> Response:
        data = await _json(request)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if name not in data:
                raise ApiError(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        batch = await call(
            emu.create_batch,
            input_file_id=data["input_file_id"],
            endpoint=data["endpoint"],
            completion_window=data["completion_window"],
            metadata=data.get("metadata"),
            output_expires_after=data.get("output_expires_after"),
        )
        return JSONResponse(to_dict(batch))  # fmt: skip

    def list_batches(request: Request) -> Response:
        query = request.query_params
        page = emu.list_batches(after=query.get("after"), limit=query.get("limit"))
        return JSONResponse(page)  # fmt: skip

    def get_batch(request: Request) -> Response:
        return JSONResponse(
            to_dict(emu.retrieve_batch(request.path_params["batch_id"]))
        )

    def cancel_batch(request: Request) -> Response:
        return JSONResponse(to_dict(emu.cancel_batch(request.path_params["batch_id"])))

    routes: list[BaseRoute] = [
        # First the route clients poll: a request tries the routes in order.
        Route("/v1/batches/{batch_id}", guarded(get_batch), methods=["GET"]),
        Route("/v1/files", guarded(upload), methods=["POST"]),
        Route("/v1/files", guarded(list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", guarded(get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", guarded(delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", guarded(file_content), methods=["GET"]),
        Route("/v1/batches", guarded(create_batch), methods=["POST"]),
        Route("/v1/batches", guarded(list_batches), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", guarded(cancel_batch), methods=["POST"]),
    ]

    registry = metrics_registry(emu)
    metrics = guarded(lambda _: scrape(registry))
    routes.append(Route("/metrics", metrics, methods=["GET"]))
    if ui:
        live = _at_least_one("max_live_views", max_live_views)
        routes += web_routes(emu, key_ok=key_ok, call=call, max_live=live)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return _error(404, f"Invalid URL ({request.method} {request.url.path})")
        return _error(exc.status_code, str(exc.detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # An emulator of the app's own, served by an ASGI server: its batches
        # move in the background. One passed in stays as its owner runs it.
        if owned:
            emu.start()
        try:
            yield
        finally:
            if owned:
                emu.stop()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(HttpMetrics, registry=registry),
        ],
    )
    app.router.redirect_slashes = False  # "/v1/batches/" is no route: 404, no redirect
    app.state.emulator = emu
    # This event loop's limiter of store threads (its statistics() say how
    # many calls run in threads and how many wait), for whoever watches.
    app.state.store_threads = threads
    return app
