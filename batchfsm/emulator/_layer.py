"""The one ASGI layer around the app's routes: what every HTTP answer gets.

Each answer carries ``x-request-id`` (:mod:`._request_id`) and is counted
and timed for ``/metrics`` (:class:`._metrics.HttpStats`); each request but
those the log leaves out (:func:`._doubles.unlogged`) first meets the
emulator's faults on command, then goes in its request log, before its
answer's last byte leaves (:mod:`._doubles`). In that order, as three
middlewares stacked did: the id and the counts cover injected faults too.

One layer, and one wrapper of ``send``, for all three: each middleware of
its own cost a coroutine and a closure a message. The route clients poll,
``GET /v1/batches/{id}``, has a lane here (:func:`._routes_batches.poll_lane`):
its 200s are sent from here, past Starlette's router, request and response
objects, with the same bytes, headers, log entry and counts; anything else
(a refusal, a fault, a read that must wait) goes to the route.
``tests/test_layer.py`` holds the lane's answers to the route's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._doubles import LOGGED_BODY_BYTES, Call, _Fault, answer_fault, sleep, unlogged
from ._metrics import HttpStats, route_of
from ._request_id import request_id_header
from ._routes_batches import Poll

if TYPE_CHECKING:
    from ._engine import Emulator

__all__ = ["HttpLayer"]


class HttpLayer:
    """ASGI middleware: the request id, the HTTP metrics, the request log and faults.

    Example:
        >>> from batchfsm.emulator import Emulator, create_app
        >>> app = create_app(Emulator())
        >>> [m.cls.__name__ for m in app.user_middleware]
        ['HttpLayer']
    """

    def __init__(
        self,
        app: ASGIApp,
        emulator: Emulator,
        stats: HttpStats,
        poll: Poll | None = None,
    ) -> None:
        self.app = app
        self.emulator = emulator
        self.stats = stats
        #: The lane of the route clients poll (:func:`._routes_batches.poll_lane`).
        self.poll = poll

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing on the coroutine it picked: no coroutine
        # of its own to run an answer.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        if unlogged(scope["path"]):
            return self._answer(scope, receive, send)
        start = time.perf_counter()
        fault = self.emulator._take_fault(scope["method"], scope["path"])
        if fault is None and self.poll is not None:
            content = self.poll(scope)
            if content is not None:
                return self._polled(scope, send, content, start)
        return self._logged(scope, receive, send, fault, start)

    async def _polled(
        self, scope: Scope, send: Send, content: bytes, start: float
    ) -> None:
        """The poll lane's 200 (``content``): :meth:`_logged`'s steps, inline.

        The head and body a Starlette ``JSONResponse`` sends, with the id.
        """
        method, route = scope["method"], route_of(scope)
        headers = [*_json_headers(content), request_id_header()]
        call = Call(method, scope["path"], _query(scope), 200, b"")
        logged = False
        try:
            self.stats.timed(route, method, time.perf_counter() - start)
            await send(
                {"type": "http.response.start", "status": 200, "headers": headers}
            )
            self.emulator._log(call)  # before the last byte leaves, as _logged
            logged = True
            await send({"type": "http.response.body", "body": content})
        finally:
            if not logged:
                self.emulator._log(call)
            self.stats.answered(route, method, 200)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's answer with its id, counted and timed."""
        start, code = time.perf_counter(), 500
        header = request_id_header()

        async def sending(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
                seconds = time.perf_counter() - start
                self.stats.timed(route_of(scope), scope["method"], seconds)
                message = _with(message, header)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.stats.answered(route_of(scope), scope["method"], code)

    async def _logged(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        fault: _Fault | None,
        start: float,
    ) -> None:
        """:meth:`_answer`, ``fault`` (if any) in place of the app's, logged."""
        emulator, method, path, code = (
            self.emulator,
            scope["method"],
            scope["path"],
            500,
        )
        header = request_id_header()
        body = bytearray()
        logged = False

        def log() -> None:
            nonlocal logged
            if not logged:
                logged = True
                emulator._log(Call(method, path, _query(scope), code, bytes(body)))

        async def logged_receive() -> MutableMapping[str, Any]:
            message = await receive()
            room = LOGGED_BODY_BYTES - len(body)
            if message["type"] == "http.request" and room > 0:
                body.extend(message.get("body", b"")[:room])
            return message

        async def sending(message: Message) -> None:
            nonlocal code
            kind = message["type"]
            if kind == "http.response.start":
                code = message["status"]
                seconds = time.perf_counter() - start
                self.stats.timed(route_of(scope), method, seconds)
                message = _with(message, header)
            elif kind == "http.response.body" and not message.get("more_body", False):
                # Logged before the answer's last byte leaves: a client that
                # has its answer finds its request in the log (over a socket,
                # the server's thread would otherwise race the test's).
                log()
            await send(message)

        try:
            await self._run(scope, logged_receive, sending, fault)
        finally:
            log()
            self.stats.answered(route_of(scope), method, code)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, fault: _Fault | None
    ) -> None:
        """The app's answer, or ``fault``'s: held first if it stalls."""
        if fault is not None and fault.delay:
            await sleep(fault.delay)
        if fault is not None and fault.status is not None:
            await answer_fault(fault, send)
        elif (
            # Without a fault, __call__ tried the lane already.
            fault is None or self.poll is None or (content := self.poll(scope)) is None
        ):
            await self.app(scope, receive, send)
        else:  # a stall on command held it: the lane answers now
            await _answer_json(content, send)


async def _answer_json(content: bytes, send: Send) -> None:
    """200 with ``content``: the head and body a Starlette ``JSONResponse`` sends."""
    headers = _json_headers(content)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _json_headers(content: bytes) -> list[tuple[bytes, bytes]]:
    """The head a Starlette ``JSONResponse`` of ``content`` sends."""
    length = str(len(content)).encode()
    return [(b"content-length", length), (b"content-type", b"application/json")]


def _query(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    return query.decode("latin-1")


def _with(message: Message, header: tuple[bytes, bytes]) -> Message:
    """The answer's head with ``header`` in place of any of its name."""
    headers = [h for h in message.get("headers", []) if h[0] != header[0]]
    return {**message, "headers": [*headers, header]}
