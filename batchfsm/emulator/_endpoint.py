"""The HTTP app's shared state, and the guard every route's handler runs in.

A route's handler is a small function of the request: it parses, calls the
emulator, renders. :func:`endpoint` wraps it with what every route does the
same way: the API key (and so the caller's project, :func:`project_of`), the
API's error body for every refusal, 503 while the store is away, 500 (with
the API's body, and one log line) for a bug. The state the handlers share
(the emulator, the store threads, the upload budget, the keys) is one
:class:`AppContext`, reached from ``request.app.state.context``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ._api_error import ApiError
from ._engine import Emulator
from ._http import JSONResponse, error_response
from ._outage import RETRY_AFTER_SECONDS
from ._projects import DEFAULT_PROJECT, ApiKeys
from ._store_errors import StoreUnavailable
from ._stores import MemoryBatchStore, MemoryFileStore

__all__ = [
    "AppContext",
    "Endpoint",
    "Handler",
    "context_of",
    "endpoint",
    "project_of",
]

Endpoint = Callable[[Request], Awaitable[Response]]
#: A route's handler: a plain function runs whole in a store thread (on a
#: database), a coroutine function on the event loop.
Handler = Callable[[Request], Response | Awaitable[Response]]
T = TypeVar("T")

log = logging.getLogger("batchfsm.emulator")


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


def _in_memory(emulator: Emulator) -> bool:
    # Exactly the memory stores: a subclass, like any other store, may wait.
    return (
        type(emulator.batches) is MemoryBatchStore
        and type(emulator.files) is MemoryFileStore
    )


class UploadBudget:
    """The bytes the uploads in flight hold, bounded by ``limit`` together.

    An upload takes its declared length when it starts, or its bytes as they
    arrive; it is refused only while other uploads hold some, so one alone
    always passes (its own limit is ``MAX_UPLOAD_BYTES``). One event loop
    runs the app, so no lock is needed.
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


class AppContext:
    """What the routes of one app share: the emulator and the bounds around it."""

    def __init__(
        self,
        emulator: Emulator,
        *,
        api_keys: ApiKeys | None,
        upload_bytes_in_flight: int,
        store_threads: int,
    ) -> None:
        self.emulator = emulator
        #: The keys a request may carry, each with its project; None: any
        #: request passes, in the default project.
        self.api_keys = api_keys
        self.budget = UploadBudget(upload_bytes_in_flight)
        #: This event loop's limiter of store threads.
        self.threads = _limiter(store_threads)
        self.in_memory = _in_memory(emulator)

    async def in_thread(
        self, function: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """``function(*args, **kwargs)`` in a store thread."""
        bound = functools.partial(function, *args, **kwargs)
        return await anyio.to_thread.run_sync(bound, limiter=self.threads())

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the emulator: in a thread if its store may wait on a database."""
        if self.in_memory:
            return function(*args, **kwargs)
        return await self.in_thread(function, *args, **kwargs)

    def project_in(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The project ASGI ``headers`` are of; None where :meth:`authorize` refuses.

        For a lane that answers without a :class:`~starlette.requests.Request`.
        """
        given = [value for name, value in headers if name == b"authorization"]
        found = self._project([value.decode("latin-1") for value in given])
        return found if isinstance(found, str) else None

    def authorize(self, request: Request) -> str | Response:
        """The caller's project; the answer instead if its Authorization fails."""
        return self._project(request.headers.getlist("authorization"))

    def _project(self, given: list[str]) -> str | Response:
        """The project of the Authorization headers ``given``, or the refusal."""
        if len(given) > 1:
            # Which one counts would be a guess, and a proxy checking the
            # last one would guess otherwise than a server checking the first.
            return error_response(
                400,
                "The request has more than one Authorization header: "
                "send exactly one, 'Authorization: Bearer YOUR_API_KEY'.",
            )
        if self.api_keys is None:
            return DEFAULT_PROJECT
        project = self.api_keys.project(given[0] if given else "")
        if project is None:
            return error_response(
                401, "Incorrect API key provided.", code="invalid_api_key"
            )
        return project


def context_of(request: Request) -> AppContext:
    """The :class:`AppContext` of the app serving ``request``."""
    context: AppContext = request.app.state.context
    return context


def project_of(request: Request) -> str:
    """The project of the API key ``request`` carries (set by :func:`endpoint`)."""
    project: str = request.state.project
    return project


def unavailable(exc: StoreUnavailable) -> Response:
    """503 with ``Retry-After``: the store is away, the same call may pass later."""
    body = ApiError(503, f"The store is unavailable; retry in a moment. ({exc})").body
    body["error"]["type"] = "server_error"
    return JSONResponse(
        body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def _bug() -> Response:
    """500 with the API's error body: the emulator's own bug (logged by the caller)."""
    body = ApiError(500, "The emulator failed to answer: its bug.").body
    body["error"]["type"] = "server_error"
    return JSONResponse(body, status_code=500)


def endpoint(handler: Handler) -> Endpoint:
    """``handler`` as a route's endpoint: the key checked, every refusal answered.

    A plain function runs in a store thread (or on the loop, on the memory
    store); a coroutine function runs on the event loop and calls the emulator
    through :meth:`AppContext.call` itself.
    """
    is_async = inspect.iscoroutinefunction(handler)

    async def guarded(request: Request) -> Response:
        context = context_of(request)
        project = context.authorize(request)
        if isinstance(project, Response):
            return project
        request.state.project = project
        try:
            if is_async:
                result = handler(request)
            else:  # a route that only calls the emulator: all of it
                result = await context.call(handler, request)
            if not isinstance(result, Response):
                result = await result
        except ApiError as exc:
            return JSONResponse(exc.body, status_code=exc.status_code)
        except StoreUnavailable as exc:
            context.emulator.outage.failed(exc)
            return unavailable(exc)
        except ClientDisconnect:
            log.info(
                "%s %s: the client went away before its request was read",
                request.method,
                request.url.path,
            )
            return Response(status_code=400)  # nobody is left to read it
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return _bug()
        context.emulator.outage.ok()
        return result

    return guarded
