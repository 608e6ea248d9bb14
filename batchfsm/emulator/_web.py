"""The web view ``serve`` shows at ``/ui``: the batches, one batch, live updates.

Routes (:func:`web_routes`, named in ``_app.ROUTE_BUILDERS``):

- ``GET /ui``: the batches of the key's project, newest first, a page of
  :data:`PAGE_SIZE` read through the store's paged list (its cost is one
  page's, however many batches are stored), filtered by ``?status=``, paged
  by ``?after=``;
- ``GET /ui/batches/{id}``: one batch's timeline, the lifecycle diagram
  (the transition table's SVG, :mod:`batchfsm._diagram`) with its status
  highlighted, its errors, links to its files;
- ``GET /ui/files/{id}``: a file's content, streamed, as an attachment;
- ``GET /ui/live?batch=ID...``: server-sent events, one ``batch`` event each
  time a shown batch changes (:mod:`._web_live`);
- ``GET``/``POST /ui/login`` and ``POST /ui/logout``.

The key and its project: with API keys, the view asks for one once (a form
posted to ``/ui/login``) and keeps it in an HttpOnly, SameSite=Strict cookie
on ``/ui``, never in a URL. Each request is judged by the API's own keys
(:class:`._projects.ApiKeys`), and sees only the files and batches of the
key's project, read through the same project-filtered calls as the API's: a
wrong key sees the form only, and another project's batch or file answers
exactly as an unknown one. While the store is away, a page answers 503
with ``Retry-After``, as the API does.

Templates are Jinja2's (autoescaped, template inheritance for one layout,
a filter for times; Starlette's ``Jinja2Templates`` is a thin wrapper over
the same library, not needed here), shipped in ``web/templates`` with a
small script and a style sheet in ``web/static``: no build step, nothing
fetched from elsewhere (the pages' Content-Security-Policy says ``'self'``).
The view is on unless ``create_app(ui=False)`` (``serve --no-ui``): then
its routes answer 404 as unknown URLs do.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .._diagram import render
from .._json_io import to_dict
from .._model import BatchStatus
from ._api_error import ApiError
from ._endpoint import AppContext, Endpoint, context_of
from ._http import error_response
from ._outage import RETRY_AFTER_SECONDS
from ._projects import DEFAULT_PROJECT
from ._routes_files import _download, _FileDownload
from ._store_errors import StoreUnavailable

__all__ = [
    "HEADERS",
    "MAX_LIVE_VIEWS",
    "PAGE_SIZE",
    "WebView",
    "live_fields",
    "timeline",
    "web_routes",
]

#: Batches on one page of the list.
PAGE_SIZE = 50
#: A filtered page reads at most this many pages of the store's list to fill
#: itself: its cost stays bounded whatever the store holds (it may show fewer
#: rows, and links to the next part).
SCAN_PAGES = 4
#: Live views (server-sent event streams) open at once per app, at most.
MAX_LIVE_VIEWS = 32
COOKIE = "batchfsm_key"
STAMPS = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
_HERE = Path(__file__).parent / "web"
#: Every answer of the view says these: no framing, no referrer, no cache.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_LOGIN_BYTES = 4096
_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

log = logging.getLogger("batchfsm.emulator")

#: A page's handler: the request, the view, the caller's project.
Page = Callable[[Request, "WebView", str], Awaitable[Response]]


def _time(stamp: int | None) -> str:
    if stamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def _duration(seconds: int) -> str:
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m {s:02d}s" if hours else f"{m}m {s:02d}s"


def timeline(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's stamps in time order, each with the time since the one before.

    Example:
        >>> [(s["name"], s["since"]) for s in timeline(
        ...     {"created_at": 10, "in_progress_at": 75, "failed_at": None})]
        [('created_at', ''), ('in_progress_at', '1m 05s')]
    """
    stamps = sorted(
        (
            (batch[name], i, name)
            for i, name in enumerate(STAMPS)
            if batch.get(name) is not None
        ),
    )
    rows, before = [], None
    for at, _, name in stamps:
        since = "" if before is None else _duration(at - before)
        rows.append({"name": name, "at": at, "time": _time(at), "since": since})
        before = at
    return rows


def live_fields(batch: dict[str, Any]) -> dict[str, Any]:
    """What a page shows of a batch that may change: sent by the live stream."""
    counts = batch.get("request_counts") or {"total": 0, "completed": 0, "failed": 0}
    return {
        "id": batch["id"],
        "status": batch["status"],
        "request_counts": counts,
        "model": batch.get("model"),
        "timeline": timeline(batch),
        "output_file_id": batch.get("output_file_id"),
        "error_file_id": batch.get("error_file_id"),
    }


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers=HEADERS)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["time"] = _time
    return env


class WebView:
    """One app's web view: its templates, the diagram, its live streams open.

    Args:
        max_live: live streams open at once, at most.
    """

    def __init__(self, max_live: int = MAX_LIVE_VIEWS) -> None:
        from ._web_live import Snapshots

        self.max_live, self.live = max_live, 0
        self.snapshots = Snapshots(bound=max_live * PAGE_SIZE)
        self.env = _environment()
        self.diagram = render("svg")

    def page(
        self,
        name: str,
        code: int = 200,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> HTMLResponse:
        """The template ``name`` rendered, with the view's headers."""
        html = self.env.get_template(name).render(**kw)
        return HTMLResponse(
            html, status_code=code, headers={**HEADERS, **(headers or {})}
        )

    def refused(self, exc: ApiError) -> HTMLResponse:
        """The API's refusal (404 for an unknown id, ...) as a page, word for word."""
        return self.page(
            "error.html", exc.status_code, message=exc.body["error"]["message"]
        )

    def login_form(self, message: str | None = None) -> HTMLResponse:
        """The form asking for the key (401)."""
        return self.page("login.html", 401, message=message)


def _cookie_key(request: Request) -> str | None:
    held = request.cookies.get(COOKIE)
    if held is None:
        return None
    try:
        return base64.urlsafe_b64decode(held.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        return None


def _project(context: AppContext, key: str | None) -> str | None:
    """The project ``key`` opens (the API's own check); None: it opens none."""
    if context.api_keys is None:
        return DEFAULT_PROJECT
    return None if key is None else context.api_keys.project(f"Bearer {key}")


def _off(request: Request) -> Response:
    return error_response(404, f"Invalid URL ({request.method} {request.url.path})")


def guarded(page: Page, *, to_form: bool = True) -> Endpoint:
    """``page`` as a route's endpoint: the key's project, every refusal a page.

    No key (or a wrong one): to the key form (``to_form``; else 401, for what
    a script reads, not a person). A refusal of the emulator: its
    message, with its status. The store away: 503 with ``Retry-After``, as the
    API answers. A bug: 500 and one log line, never a traceback.
    """

    async def endpoint(request: Request) -> Response:
        view: WebView | None = request.app.state.web
        if view is None:
            return _off(request)
        context = context_of(request)
        project = _project(context, _cookie_key(request))
        if project is None:
            if to_form:
                return _redirect("/ui/login")
            return Response("Incorrect API key provided.", 401, headers=HEADERS)
        try:
            answer = await page(request, view, project)
        except ApiError as exc:
            return view.refused(exc)
        except StoreUnavailable as exc:
            context.emulator.outage.failed(exc)
            message = f"The store is unavailable; retry in a moment. ({exc})"
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            return view.page("error.html", 503, retry, message=message)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            message = "The emulator failed to answer: its bug."
            return view.page("error.html", 500, message=message)
        context.emulator.outage.ok()
        return answer

    return endpoint


# -- the key --------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """The key form (GET), or the key posted from it (POST)."""
    view: WebView | None = request.app.state.web
    if view is None:
        return _off(request)
    context = context_of(request)
    if request.method == "GET":
        if _project(context, _cookie_key(request)) is not None:
            return _redirect("/ui")
        return view.login_form()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _LOGIN_BYTES:
            return view.login_form("The form is too large.")
    try:
        key = parse_qs(body.decode("ascii")).get("key", [""])[0].strip()
    except UnicodeError:
        key = ""
    if not key or _project(context, key) is None:
        return view.login_form("Incorrect API key provided.")
    answer = _redirect("/ui")
    answer.set_cookie(
        COOKIE,
        base64.urlsafe_b64encode(key.encode("ascii")).decode("ascii"),
        path="/ui",
        httponly=True,
        samesite="strict",
    )
    return answer


async def logout(request: Request) -> Response:
    """Forget the key: the cookie is cleared."""
    if request.app.state.web is None:
        return _off(request)
    answer = _redirect("/ui/login")
    answer.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
    return answer


# -- pages ----------------------------------------------------------------------------


async def batches(request: Request, view: WebView, project: str) -> Response:
    """The list: a page of the project's batches, newest first, maybe filtered."""
    status = request.query_params.get("status") or None
    if status is not None and status not in BatchStatus._value2member_map_:
        return view.page("error.html", 400, message=f"No status {status!r}.")
    context = context_of(request)
    after = request.query_params.get("after")
    rows, after = await context.call(_scan, context, after, status, project)
    query = {"status": status} if status else {}
    return view.page(
        "batches.html",
        batches=[{**b, **live_fields(b)} for b in rows],
        statuses=[s.value for s in BatchStatus],
        status=status,
        next=None if after is None else "?" + urlencode({**query, "after": after}),
        live="/ui/live?" + urlencode([("batch", b["id"]) for b in rows]),
    )


def _scan(
    context: AppContext, after: str | None, status: str | None, project: str
) -> tuple[list[dict[str, Any]], str | None]:
    """A page's rows and where the next page starts (None: at the end)."""
    rows: list[dict[str, Any]] = []
    for _ in range(SCAN_PAGES if status else 1):
        page = context.emulator.list_batches(
            after=after, limit=PAGE_SIZE, project=project
        )
        rows += [b for b in page["data"] if status in (None, b["status"])]
        after = page["last_id"] if page["has_more"] else None
        if after is None or len(rows) >= PAGE_SIZE:
            break
    return rows, after


async def batch(request: Request, view: WebView, project: str) -> Response:
    """One batch of the project: timeline, diagram, errors, files."""
    context = context_of(request)
    found = await context.call(
        context.emulator.retrieve_batch,
        request.path_params["batch_id"],
        project=project,
    )
    shown = to_dict(found)
    errors = (shown.get("errors") or {}).get("data") or []
    return view.page(
        "batch.html",
        batch={**shown, **live_fields(shown)},
        errors=errors,
        diagram=view.diagram,
        live="/ui/live?" + urlencode({"batch": shown["id"]}),
    )


async def download(request: Request, view: WebView, project: str) -> Response:
    """A file of the project, streamed as an attachment."""
    context = context_of(request)
    file = await context.call(
        context.emulator.retrieve_file, request.path_params["file_id"], project=project
    )
    name = _FILENAME.sub("_", file.filename) or f"{file.id}.jsonl"
    return _FileDownload(
        _download(context, file),
        media_type="application/octet-stream",
        headers={
            "content-length": str(file.bytes),
            "content-disposition": f'attachment; filename="{name}"',
            **HEADERS,
        },
    )


def web_routes() -> list[BaseRoute]:
    """The web view's routes (see the module's docs); its state is ``app.state.web``."""
    from ._web_live import live_view

    return [
        Route("/ui", guarded(batches), methods=["GET"]),
        Route("/ui/login", login, methods=["GET", "POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/batches/{batch_id}", guarded(batch), methods=["GET"]),
        Route("/ui/files/{file_id}", guarded(download), methods=["GET"]),
        Route("/ui/live", guarded(live_view, to_form=False), methods=["GET"]),
        Mount("/ui/static", _Static(), name="static"),
    ]


class _Static:
    """The view's script and style sheet; 404 as an unknown URL when it is off."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=_HERE / "static")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["app"].state.web is None:
            await _off(Request(scope))(scope, receive, send)
            return
        await self.files(scope, receive, send)
