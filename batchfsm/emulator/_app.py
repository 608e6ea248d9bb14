"""The emulator over HTTP: an ASGI app with the Batch API's routes and errors.

Routes: ``POST /v1/files`` (multipart), ``GET /v1/files``, ``GET``/``DELETE
/v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST``/``GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``: small handlers in
``_routes_files`` and ``_routes_batches``, each wrapped by
``_endpoint.endpoint``, sharing one ``_endpoint.AppContext``
(``app.state.context``); ``GET /metrics`` (``_metrics``) and the web view
under ``/ui`` (``_web``, ``_web_live``; ``app.state.web``, None when it is
off) are route modules of their own. Every error answers the API's body ``{"error":
{"message", "type", "param", "code"}}``; malformed input is a 4xx, never a
5xx, and never changes a stored batch. Bodies over the limits are refused with
413 before they are read whole; uploads in flight together hold at most
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

To add routes, write a module whose function builds its
``starlette.routing.Route`` objects (or a ``Mount``) from the emulator, its
handlers wrapped by ``_endpoint.endpoint``, and name it in
:data:`ROUTE_BUILDERS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from starlette import formparsers
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ._endpoint import AppContext, endpoint
from ._engine import Emulator
from ._http import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, error_response, json_body
from ._kit_routes import kit_routes
from ._layer import HttpLayer
from ._metrics import HttpStats, metrics_registry, metrics_routes
from ._model_routes import model_routes
from ._projects import API_KEY, DEFAULT_PROJECT, ApiKeys, check_api_key
from ._routes_batches import batch_routes, poll_lane
from ._routes_files import file_routes
from ._web import MAX_LIVE_VIEWS, WebView, web_routes

if getattr(formparsers, "multipart", None) is None:
    # Starlette starts without it and then refuses every upload with 400:
    # better no app at all, in one line naming the extra (see missing_extra).
    raise ModuleNotFoundError(
        "No module named 'python_multipart'", name="python-multipart"
    )

__all__ = [
    "API_KEY",
    "MAX_JSON_BYTES",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_BYTES_IN_FLIGHT",
    "ROUTE_BUILDERS",
    "STORE_THREADS",
    "check_api_key",
    "create_app",
]

#: The bytes all uploads in flight may hold together (our choice: the API
#: states no such bound). An upload that would pass it while others are in
#: flight is refused with 429 ``rate_limit_exceeded``; one alone is never
#: refused by it, so every upload up to :data:`MAX_UPLOAD_BYTES` can pass.
MAX_UPLOAD_BYTES_IN_FLIGHT = 2 * MAX_UPLOAD_BYTES

#: At most this many calls of the emulator on a database run at once (per event
#: loop), by default; more wait their turn without holding up the loop.
STORE_THREADS = 8

RouteBuilder = Callable[[Emulator], Sequence[BaseRoute]]

#: The app's routes, module by module, each built from the emulator served.
#: A request tries them in order: the Batches API's come first, as the
#: route clients poll is among them. Another module's routes: one line here.
ROUTE_BUILDERS: tuple[RouteBuilder, ...] = (
    lambda emulator: batch_routes(),
    lambda emulator: file_routes(),
    lambda emulator: model_routes(
        endpoint,
        json_body,
        lambda: (emulator.models, emulator.any_model),
        emulator._now,
        lambda: emulator.embedding_dimensions,
    ),
    lambda emulator: metrics_routes(),
    lambda emulator: web_routes(),
)


def _keys(api_key: str | None, api_keys: Mapping[str, str] | None) -> ApiKeys | None:
    """The keys the app accepts: ``api_key`` (default project) and ``api_keys``."""
    check_api_key(api_key)
    keys = dict(api_keys or {})
    if api_key is not None and keys.setdefault(api_key, DEFAULT_PROJECT) != (
        DEFAULT_PROJECT
    ):
        raise ValueError("api_key is bound to another project in api_keys")
    return ApiKeys(keys) if keys else None


def _at_least_one(name: str, value: object) -> int:
    """``value`` if it is an int of at least 1; a ValueError naming ``name`` if not."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
    return value


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"Invalid URL ({request.method} {request.url.path})")
    return error_response(exc.status_code, str(exc.detail))


def _lifespan(
    emulator: Emulator, owned: bool
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # An emulator of the app's own, served by an ASGI server: its batches
        # move in the background. One passed in stays as its owner runs it.
        if owned:
            emulator.start()
        try:
            yield
        finally:
            if owned:
                emulator.stop()

    return lifespan


def _context(
    emulator: Emulator | None,
    keys: ApiKeys | None,
    upload_bytes_in_flight: int,
    store_threads: int,
) -> AppContext:
    """The app's shared state, its sizes checked; a new emulator if None."""
    upload_bytes_in_flight = _at_least_one(
        "upload_bytes_in_flight", upload_bytes_in_flight
    )
    store_threads = _at_least_one("store_threads", store_threads)
    if emulator is None:
        from ._clock import SystemClock

        emulator = Emulator(clock=SystemClock())
    return AppContext(
        emulator,
        api_keys=keys,
        upload_bytes_in_flight=upload_bytes_in_flight,
        store_threads=store_threads,
    )


def create_app(
    emulator: Emulator | None = None,
    *,
    api_key: str | None = None,
    upload_bytes_in_flight: int = MAX_UPLOAD_BYTES_IN_FLIGHT,
    store_threads: int = STORE_THREADS,
    api_keys: Mapping[str, str] | None = None,
    admin: bool = False,
    ui: bool = True,
    max_live_views: int = MAX_LIVE_VIEWS,
) -> Starlette:
    """An ASGI app serving ``emulator`` (a new one on the system clock if None).

    An emulator of the app's own runs its batches in the background while an
    ASGI server runs the app's lifespan.

    With ``api_key``, every route demands ``Authorization: Bearer <api_key>``.
    ``api_keys`` maps more keys to their projects (``api_key``'s is
    ``"proj_default"``): each request sees and changes only the files and
    batches of its key's project, and another project's id answers as an
    unknown one. Without keys, every request is in the default project.
    ``upload_bytes_in_flight`` bounds the bytes of all uploads in flight
    together: one that would pass it while others are in flight gets 429.
    ``store_threads`` bounds the calls of the emulator that run at once in
    worker threads (on a database store; and uploads, on any). ``admin``
    adds the admin routes (faults, the request log, the clock, reset; see
    :mod:`._kit_routes`), behind the key as every route. ``ui``: the web
    view at ``/ui`` (:mod:`._web`), behind the same keys and projects, with
    at most ``max_live_views`` live streams open at once. ``GET /metrics``
    answers in the Prometheus text format (:mod:`._metrics`).

    Raises:
        ValueError: ``api_key`` (or a key of ``api_keys``) is empty or holds a
            space or a character other than printable ASCII; a project's name
            is not 1 to 64 letters, digits, ``_`` or ``-``;
            ``upload_bytes_in_flight``, ``store_threads`` or
            ``max_live_views`` is not an integer of at least 1.

    Example:
        >>> from batchfsm.emulator import Emulator, create_app
        >>> app = create_app(Emulator())
        >>> sorted({route.path for route in app.routes if "v1/b" in route.path})
        ['/v1/batches', '/v1/batches/{batch_id}', '/v1/batches/{batch_id}/cancel']
    """
    owned = emulator is None
    context = _context(
        emulator, _keys(api_key, api_keys), upload_bytes_in_flight, store_threads
    )
    emulator = context.emulator
    live = _at_least_one("max_live_views", max_live_views)
    metrics = metrics_registry(emulator)
    stats = HttpStats()
    metrics.register(stats)
    routes = [
        *(route for build in ROUTE_BUILDERS for route in build(emulator)),
        *kit_routes(emulator, endpoint, context.in_thread, admin=admin),
    ]
    poll = poll_lane(context, routes[0])
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        lifespan=_lifespan(emulator, owned),
        # The request id, the HTTP metrics, the request log and faults: one
        # layer (see _layer), not a middleware each.
        # The route clients poll, its 200s in a lane of their own (poll_lane).
        middleware=[Middleware(HttpLayer, emulator=emulator, stats=stats, poll=poll)],
    )
    app.router.redirect_slashes = False  # "/v1/batches/" is no route: 404, no redirect
    app.state.context = context
    app.state.emulator = emulator
    app.state.metrics = metrics
    app.state.web = WebView(live) if ui else None  # None: its routes answer 404
    # This event loop's limiter of store threads (its statistics() say how
    # many calls run in threads and how many wait), for whoever watches.
    app.state.store_threads = context.threads
    return app
