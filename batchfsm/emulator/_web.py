"""The web view ``serve`` shows at ``/ui``: the batches, one batch, live updates.

Routes (:func:`web_routes`):

- ``GET /ui``: the batches, newest first, a page of :data:`PAGE_SIZE` read
  through the store's paged list (its cost is one page's, however many
  batches are stored), filtered by ``?status=``, paged by ``?after=``;
- ``GET /ui/batches/{id}``: one batch's timeline, the lifecycle diagram
  (the transition table's SVG, :mod:`batchfsm._diagram`) with its status
  highlighted, its errors, links to its files;
- ``GET /ui/files/{id}``: a file's content, streamed, as an attachment;
- ``GET /ui/live?batch=ID...``: server-sent events, one ``batch`` event each
  time a shown batch changes; at most :data:`MAX_LIVE_VIEWS` at once per app
  (503 and a one-line reason beyond, which the page shows);
- ``GET``/``POST /ui/login`` and ``POST /ui/logout``.

The key: with an API key, the view asks for it once (a form posted to
``/ui/login``) and keeps it in an HttpOnly, SameSite=Strict cookie on
``/ui``, never in a URL; every request is judged by the same check as the
API's ``Authorization: Bearer`` header (``key_ok``). A wrong key sees the
form only.

Templates are Jinja2's, autoescaped, shipped in ``web/templates`` with a
small script and a style sheet in ``web/static``: no build step, nothing
fetched from elsewhere (the pages' Content-Security-Policy says ``'self'``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .._diagram import render
from .._json_io import to_dict
from .._model import BatchStatus
from ._api_error import ApiError
from ._engine import Emulator
from ._files import read_pieces
from ._protocol import ENDLESS
from ._stores import FileObject

__all__ = ["LIVE_SECONDS", "MAX_LIVE_VIEWS", "PAGE_SIZE", "web_routes"]

#: Batches on one page of the list.
PAGE_SIZE = 50
#: A filtered page reads at most this many pages of the store's list to fill
#: itself: its cost stays bounded whatever the store holds (it may show fewer
#: rows, and links to the next part).
SCAN_PAGES = 4
#: Live views (server-sent event streams) open at once per app, at most.
MAX_LIVE_VIEWS = 32
#: How often a live view looks at its batches, in seconds.
LIVE_SECONDS = 0.5
#: A comment sent this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0
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
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_LOGIN_BYTES = 4096
_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

T = TypeVar("T")
Call = Callable[..., Awaitable[Any]]


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
    return RedirectResponse(url, 303, headers=_HEADERS)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["time"] = _time
    return env


class _LiveStream(StreamingResponse):
    """A live view's stream: gives its seat back however it ends."""

    def __init__(self, views: _Views, content: AsyncIterator[str]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self.views = views

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ENDLESS] = True  # a stopping server ends it (see _protocol)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.views.live -= 1


class _Views:
    """The web view's endpoints over one emulator (see the module's docs)."""

    def __init__(
        self,
        emulator: Emulator,
        key_ok: Callable[[str | None], bool],
        call: Call,
        max_live: int,
    ) -> None:
        self.emu, self.key_ok, self.call = emulator, key_ok, call
        self.max_live, self.live = max_live, 0
        self.env = _environment()
        self.diagram = render("svg")

    # -- the key ----------------------------------------------------------------------

    def _key(self, request: Request) -> str | None:
        held = request.cookies.get(COOKIE)
        if held is None:
            return None
        try:
            return base64.urlsafe_b64decode(held.encode("ascii")).decode("ascii")
        except (binascii.Error, UnicodeError, ValueError):
            return None

    def _allowed(self, request: Request) -> bool:
        return self.key_ok(self._key(request))

    def _page(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=code, headers=_HEADERS)

    def _refused(self, exc: ApiError) -> HTMLResponse:
        message = exc.body["error"]["message"]
        return self._page("error.html", exc.status_code, message=message)

    def _login_form(self, message: str | None = None) -> HTMLResponse:
        return self._page("login.html", 401, message=message)

    async def login(self, request: Request) -> Response:
        """The key form (GET), or the key posted from it (POST)."""
        if request.method == "GET":
            if self._allowed(request):
                return _redirect("/ui")
            return self._login_form()
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _LOGIN_BYTES:
                return self._login_form("The form is too large.")
        try:
            key = parse_qs(body.decode("ascii")).get("key", [""])[0].strip()
        except UnicodeError:
            key = ""
        if not key or not self.key_ok(key):
            return self._login_form("Incorrect API key provided.")
        answer = _redirect("/ui")
        answer.set_cookie(
            COOKIE,
            base64.urlsafe_b64encode(key.encode("ascii")).decode("ascii"),
            path="/ui",
            httponly=True,
            samesite="strict",
        )
        return answer

    async def logout(self, request: Request) -> Response:
        """Forget the key: the cookie is cleared."""
        answer = _redirect("/ui/login")
        answer.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return answer

    # -- pages ------------------------------------------------------------------------

    async def batches(self, request: Request) -> Response:
        """The list: a page of batches, newest first, maybe filtered by status."""
        if not self._allowed(request):
            return _redirect("/ui/login")
        status = request.query_params.get("status") or None
        if status is not None and status not in BatchStatus._value2member_map_:
            return self._page("error.html", 400, message=f"No status {status!r}.")
        try:
            rows, after = await self.call(
                self._scan, request.query_params.get("after"), status
            )
        except ApiError as exc:
            return self._refused(exc)
        query = {"status": status} if status else {}
        return self._page(
            "batches.html",
            batches=[{**b, **live_fields(b)} for b in rows],
            statuses=[s.value for s in BatchStatus],
            status=status,
            next=None if after is None else "?" + urlencode({**query, "after": after}),
            live="/ui/live?" + urlencode([("batch", b["id"]) for b in rows]),
        )

    def _scan(
        self, after: str | None, status: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page's rows and where the next page starts (None: at the end)."""
        rows: list[dict[str, Any]] = []
        for _ in range(SCAN_PAGES if status else 1):
            page = self.emu.list_batches(after=after, limit=PAGE_SIZE)
            rows += [b for b in page["data"] if status in (None, b["status"])]
            after = page["last_id"] if page["has_more"] else None
            if after is None or len(rows) >= PAGE_SIZE:
                break
        return rows, after

    async def batch(self, request: Request) -> Response:
        """One batch: timeline, diagram, errors, files."""
        if not self._allowed(request):
            return _redirect("/ui/login")
        try:
            found = await self.call(
                self.emu.retrieve_batch, request.path_params["batch_id"]
            )
        except ApiError as exc:
            return self._refused(exc)
        batch = to_dict(found)
        errors = (batch.get("errors") or {}).get("data") or []
        return self._page(
            "batch.html",
            batch={**batch, **live_fields(batch)},
            errors=errors,
            diagram=self.diagram,
            live="/ui/live?" + urlencode({"batch": batch["id"]}),
        )

    async def download(self, request: Request) -> Response:
        """A file's content, streamed as an attachment."""
        if not self._allowed(request):
            return Response("Incorrect API key provided.", 401)
        try:
            file_id = request.path_params["file_id"]
            file = await self.call(self.emu.retrieve_file, file_id)
        except ApiError as exc:
            return Response(exc.body["error"]["message"], exc.status_code)
        name = _FILENAME.sub("_", file.filename) or f"{file.id}.jsonl"
        return StreamingResponse(
            self._pieces(file),
            media_type="application/octet-stream",
            headers={
                "content-length": str(file.bytes),
                "content-disposition": f'attachment; filename="{name}"',
                **_HEADERS,
            },
        )

    async def _pieces(self, file: FileObject) -> AsyncIterator[bytes]:
        pieces = read_pieces(self.emu.files, file)
        while (piece := await self.call(next, pieces, None)) is not None:
            yield piece

    # -- live updates -----------------------------------------------------------------

    async def live_view(self, request: Request) -> Response:
        """Server-sent events: each shown batch as it changes."""
        if not self._allowed(request):
            return Response("Incorrect API key provided.", 401)
        ids = request.query_params.getlist("batch")[:PAGE_SIZE]
        if self.live >= self.max_live:
            return Response(
                f"Too many live views: at most {self.max_live} at once. "
                "Close one, then reload this page.",
                503,
                headers={"Retry-After": "30"},
            )
        self.live += 1
        return _LiveStream(self, self._events(ids))

    async def _events(self, ids: list[str]) -> AsyncIterator[str]:
        sent: dict[str, dict[str, Any]] = {}
        quiet = 0.0
        yield "retry: 5000\n\n"  # a dropped stream comes back slowly, not in a storm
        while True:
            changed = await self.call(self._changed, ids, sent)
            for fields in changed:
                yield f"event: batch\ndata: {json.dumps(fields)}\n\n"
            quiet = 0.0 if changed else quiet + LIVE_SECONDS
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": still here\n\n"
            await asyncio.sleep(LIVE_SECONDS)

    def _changed(
        self, ids: list[str], sent: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        changed = []
        for batch_id in ids:
            try:
                fields = live_fields(to_dict(self.emu.retrieve_batch(batch_id)))
            except ApiError:
                continue
            if sent.get(batch_id) != fields:
                sent[batch_id] = fields
                changed.append(fields)
        return changed


def web_routes(
    emulator: Emulator,
    *,
    key_ok: Callable[[str | None], bool],
    call: Call,
    max_live: int = MAX_LIVE_VIEWS,
) -> list[BaseRoute]:
    """The web view's routes over ``emulator`` (see the module's docs).

    ``key_ok`` is the API's own key check (True: this key may see); ``call``
    runs a call of the emulator the way the app does (a thread on a database).
    """
    views = _Views(emulator, key_ok, call, max_live)
    return [
        Route("/ui", views.batches, methods=["GET"]),
        Route("/ui/login", views.login, methods=["GET", "POST"]),
        Route("/ui/logout", views.logout, methods=["POST"]),
        Route("/ui/batches/{batch_id}", views.batch, methods=["GET"]),
        Route("/ui/files/{file_id}", views.download, methods=["GET"]),
        Route("/ui/live", views.live_view, methods=["GET"]),
        Mount("/ui/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
