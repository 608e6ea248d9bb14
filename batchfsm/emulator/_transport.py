"""Talk to an ASGI app (the emulator) in-process, with no socket.

:class:`EmulatorTransport` is a *synchronous* ``httpx2`` transport, so that the
synchronous ``openai`` client works over it unchanged::

    transport = EmulatorTransport(create_app(Emulator()))
    client = openai.OpenAI(api_key="test", base_url="http://emulator/v1",
                           http_client=httpx2.Client(transport=transport))

The app runs on an asyncio event loop in a daemon helper thread, started on
first use and stopped by :meth:`EmulatorTransport.close` (a transport never
closed does not keep the interpreter from exiting).
:class:`AsyncEmulatorTransport` is its asynchronous twin, for
``openai.AsyncOpenAI``. Both honour the client's read timeout (a request
held longer, see :meth:`~batchfsm.emulator.Emulator.stall_next`, raises
``httpx2.ReadTimeout``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx2

__all__ = ["AsyncEmulatorTransport", "EmulatorTransport", "legacy_transport"]

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class _ASGIBridge:
    """Runs an ASGI app on an event loop in a daemon thread.

    The body both transports share: httpx2's and legacy httpx's requests have
    the same API.
    """

    _response: Any = httpx2.Response
    _timeout: Any = httpx2.ReadTimeout

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever,
                    name="batchfsm-emulator-transport",
                    daemon=True,
                )
                self._thread.start()
            return self._loop

    def handle_request(self, request: Any) -> Any:
        """Run ``request`` through the app and return its answer."""
        url = request.url
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,  # already percent-decoded
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "client": ("127.0.0.1", 50000),
        }
        body = request.read()
        status_headers: list[Any] = []
        chunks: list[bytes] = []

        async def call() -> None:
            sent = False

            async def receive() -> MutableMapping[str, Any]:
                nonlocal sent
                if sent:  # nothing more will come: wait to be cancelled
                    await asyncio.Event().wait()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status_headers.extend(
                        [message["status"], message.get("headers", [])]
                    )
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            await self.app(scope, receive, send)

        future = asyncio.run_coroutine_threadsafe(call(), self._get_loop())
        try:
            future.result(timeout=_read_timeout(request))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._timeout("timed out", request=request) from None
        status, headers = status_headers
        return self._response(
            status, headers=headers, content=b"".join(chunks), request=request
        )

    def close(self) -> None:
        """Stop the helper thread's event loop."""
        with self._lock:
            if self._loop is not None and self._thread is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()
                self._loop, self._thread = None, None


def _read_timeout(request: Any) -> float | None:
    """The read timeout the client set on ``request`` (None: none)."""
    timeout = request.extensions.get("timeout") or {}
    read = timeout.get("read")
    return None if read is None else float(read)


class EmulatorTransport(_ASGIBridge, httpx2.BaseTransport):
    """A synchronous httpx2 transport that calls an ASGI app in-process.

    Example:
        >>> import httpx2
        >>> from batchfsm.emulator import Emulator, EmulatorTransport, create_app
        >>> with httpx2.Client(transport=EmulatorTransport(create_app(Emulator())),
        ...                    base_url="http://emulator") as http:
        ...     http.get("/v1/batches").json()["object"]
        'list'
    """


def legacy_transport(app: ASGIApp) -> Any:
    """The same transport for a legacy ``httpx.Client`` (needs ``httpx``).

    The official ``openai`` client also accepts an ``httpx.Client``.

    Example:
        >>> import httpx
        >>> from batchfsm.emulator import Emulator, create_app, legacy_transport
        >>> with httpx.Client(transport=legacy_transport(create_app(Emulator())),
        ...                   base_url="http://emulator") as http:
        ...     http.get("/v1/batches").status_code
        200
    """
    import httpx

    class LegacyEmulatorTransport(_ASGIBridge, httpx.BaseTransport):
        _response = httpx.Response
        _timeout = httpx.ReadTimeout

    return LegacyEmulatorTransport(app)


class AsyncEmulatorTransport(httpx2.ASGITransport):
    """An asynchronous httpx2 transport that calls an ASGI app in-process.

    For ``openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=...))``:
    the app runs on the caller's own event loop.

    Example:
        >>> import asyncio, httpx2
        >>> from batchfsm.emulator import AsyncEmulatorTransport, Emulator, create_app
        >>> async def main() -> str:
        ...     transport = AsyncEmulatorTransport(create_app(Emulator()))
        ...     async with httpx2.AsyncClient(transport=transport,
        ...                                   base_url="http://emulator") as http:
        ...         return (await http.get("/v1/batches")).json()["object"]
        >>> asyncio.run(main())
        'list'
    """

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app=app, client=("127.0.0.1", 50000))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Run ``request`` through the app, within the client's read timeout."""
        import anyio

        timeout = _read_timeout(request)
        try:
            with anyio.fail_after(timeout):
                return await super().handle_async_request(request)
        except TimeoutError:
            raise httpx2.ReadTimeout("timed out", request=request) from None
