"""The web view's live updates: server-sent events, bounded.

``GET /ui/live?batch=ID...`` streams one ``batch`` event (the fields of
:func:`._web.live_fields`, as JSON) each time one of the named batches of the
key's project changes; a batch of another project, like an unknown one, is
never sent. The stream looks at its batches every :data:`LIVE_SECONDS` on
the server, and the streams share what they see: however many tabs show a
batch, the store is asked for it at most once per :data:`LIVE_SECONDS`
(:class:`Snapshots`); at most
``WebView.max_live`` streams are open at once per app (503 and a one-line
reason beyond, which the page shows), and ``retry: 5000`` keeps a dropped
stream from coming back in a storm. While the store is away, a stream sends
nothing and keeps trying; a stopping server ends it (see ``_protocol``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .._json_io import to_dict
from ._api_error import ApiError
from ._endpoint import AppContext, context_of
from ._protocol import ENDLESS
from ._store_errors import StoreUnavailable
from ._web import HEADERS, PAGE_SIZE, WebView, live_fields

__all__ = ["KEEPALIVE_SECONDS", "LIVE_SECONDS", "Snapshots", "live_view"]

#: How often a live view looks at its batches, in seconds.
LIVE_SECONDS = 0.5
#: A comment sent this often keeps proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0


class Snapshots:
    """What the live streams of one app last saw of each batch, shared by them.

    A batch's fields (None: unknown to that project) are asked of the store
    again once they are :data:`LIVE_SECONDS` old, whichever stream asks; at
    most ``bound`` are kept (the oldest go first).

    Example:
        >>> snapshots = Snapshots(bound=2)
        >>> snapshots.get("p", "batch_1", lambda: {"id": "batch_1"})
        {'id': 'batch_1'}
        >>> snapshots.get("p", "batch_1", lambda: {"id": "changed"})  # fresh still
        {'id': 'batch_1'}
        >>> snapshots.get("p", "batch_2", dict), snapshots.get("p", "batch_3", dict)
        ({}, {})
        >>> snapshots.get("p", "batch_1", lambda: {"id": "asked again"})  # it went
        {'id': 'asked again'}
    """

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    def get(
        self,
        project: str,
        batch_id: str,
        fetch: Callable[[], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """The batch's fields as last seen, fetched anew if they are stale."""
        key, now = (project, batch_id), time.monotonic()
        with self._lock:  # the streams of a SQL store ask from threads
            held = self._seen.get(key)
        if held is not None and now - held[0] < LIVE_SECONDS:
            return held[1]
        fields = fetch()
        with self._lock:
            self._seen.pop(key, None)  # re-inserted last: the dict is oldest first
            self._seen[key] = (now, fields)
            while len(self._seen) > self.bound:
                del self._seen[next(iter(self._seen))]
        return fields


class _LiveStream(StreamingResponse):
    """A live view's stream: gives its seat back however it ends."""

    def __init__(self, view: WebView, content: AsyncIterator[str]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={**HEADERS, "X-Accel-Buffering": "no"},
        )
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ENDLESS] = True  # a stopping server ends it (see _protocol)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.view.live -= 1


async def live_view(request: Request, view: WebView, project: str) -> Response:
    """Server-sent events: each shown batch of ``project`` as it changes."""
    ids = request.query_params.getlist("batch")[:PAGE_SIZE]
    if view.live >= view.max_live:
        return Response(
            f"Too many live views: at most {view.max_live} at once. "
            "Close one, then reload this page.",
            503,
            headers={**HEADERS, "Retry-After": "30"},
        )
    view.live += 1
    events = _events(context_of(request), view.snapshots, ids, project)
    return _LiveStream(view, events)


async def _events(
    context: AppContext, snapshots: Snapshots, ids: list[str], project: str
) -> AsyncIterator[str]:
    sent: dict[str, dict[str, Any]] = {}
    quiet = 0.0
    yield "retry: 5000\n\n"  # a dropped stream comes back slowly, not in a storm
    while True:
        try:
            changed = await context.call(
                _changed, context, snapshots, ids, sent, project
            )
        except StoreUnavailable as exc:  # the answer began: nothing to tell but wait
            context.emulator.outage.failed(exc)
            changed = []
        for fields in changed:
            yield f"event: batch\ndata: {json.dumps(fields)}\n\n"
        quiet = 0.0 if changed else quiet + LIVE_SECONDS
        if quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": still here\n\n"
        await asyncio.sleep(LIVE_SECONDS)


def _changed(
    context: AppContext,
    snapshots: Snapshots,
    ids: list[str],
    sent: dict[str, dict[str, Any]],
    project: str,
) -> list[dict[str, Any]]:
    def fetch(batch_id: str) -> dict[str, Any] | None:
        try:
            batch = context.emulator.retrieve_batch(batch_id, project=project)
        except ApiError:  # unknown, or another project's: never shown
            return None
        return live_fields(to_dict(batch))

    changed = []
    for batch_id in ids:
        fields = snapshots.get(project, batch_id, functools.partial(fetch, batch_id))
        if fields is not None and sent.get(batch_id) != fields:
            sent[batch_id] = fields
            changed.append(fields)
    return changed
