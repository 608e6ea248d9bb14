"""``batchfsm serve``: the emulator behind uvicorn, with a server's own defences.

- Settings are checked and the socket bound before anything is announced:
  a host that does not resolve or a port in use is one line and exit 2.
- Every connection must deliver each whole request (headers and body) within
  :data:`REQUEST_SECONDS` of opening or of its previous answer, and read each
  answer within :data:`REQUEST_SECONDS` of its being ready (a client that
  never reads would otherwise pin the answer in memory for ever); a streamed
  answer (a file's content) waits while the socket's buffer is full, and a
  client that takes nothing of it for :data:`REQUEST_SECONDS` is cut off; idle
  connections close after :data:`KEEP_ALIVE_SECONDS`; at most
  :data:`MAX_CONNECTIONS` are open at once (more are closed on arrival), and a
  request head is at most :data:`MAX_HEAD_BYTES`.
- Batches move in the emulator's background worker, never on the event loop.
- One access log line per request (stdout); a client that goes away, one line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._json import encode
from ._api_error import ApiError
from ._app import MAX_UPLOAD_BYTES_IN_FLIGHT, STORE_THREADS, create_app
from ._engine import Emulator

__all__ = [
    "KEEP_ALIVE_SECONDS",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "REQUEST_SECONDS",
    "ServeError",
    "bind",
    "config",
    "serve",
]

#: A whole request must arrive within this many seconds.
REQUEST_SECONDS = 30.0
#: An idle connection closes after this many seconds.
KEEP_ALIVE_SECONDS = 5
#: Connections open at once; more are closed as they arrive.
MAX_CONNECTIONS = 512
#: The request line and headers together.
MAX_HEAD_BYTES = 64 * 1024

log = logging.getLogger("batchfsm.emulator")


class ServeError(Exception):
    """A setting ``serve`` cannot work with; the message is one line."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; :class:`ServeError` if there is none.

    Example:
        >>> sock = bind("127.0.0.1", 0)
        >>> sock.getsockname()[0]
        '127.0.0.1'
        >>> sock.close()
    """
    try:
        found = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ServeError(f"cannot resolve host {host!r}: {exc}") from None
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sock


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request and a connection bound."""

    request_seconds = REQUEST_SECONDS
    max_connections = MAX_CONNECTIONS
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning(
                "closing a new connection: %d are open already", self.max_connections
            )
            transport.close()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def pause_writing(self) -> None:
        # An answer streamed to a client that stopped reading: its clock runs
        # (the app waits meanwhile, holding no more than this buffer).
        super().pause_writing()
        self._watch()

    def resume_writing(self) -> None:
        # It reads again: a fresh deadline for what is left in the buffer.
        super().resume_writing()
        self._disarm()
        self._watch()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a request HTTP cannot parse in plain text: answer with
        # the API's error body instead, as every other answer does.
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # Garbage after this request was answered (a body refused early):
            # nothing more can be said on this connection.
            log.info("closing a connection: %s", msg)
            self.transport.close()
            return
        body = encode(ApiError(400, msg).body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _watch(self) -> None:
        # Waiting for a request (or the rest of one), or for the client to take
        # its answer: the clock runs. Once a request is all in, what follows is
        # the server's time, not the client's.
        waiting = not self.transport.is_closing() and self.conn.their_state in (
            h11.IDLE,
            h11.SEND_BODY,
        )
        if not waiting and not self.transport.get_write_buffer_size():
            self._disarm()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.request_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        where = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if self.transport.get_write_buffer_size():
            # close() would wait for the client to read it all: it may never.
            log.info(
                "closing the connection of %s: it did not read its answer in %g s",
                where,
                self.request_seconds,
            )
            self.transport.abort()
        elif not self.transport.is_closing():
            log.info(
                "closing the connection of %s: no whole request in %g s",
                where,
                self.request_seconds,
            )
            self.transport.close()


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("batchfsm: %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # Its warnings would reach stderr bare, one per malformed upload, which
    # the 400 answer already explains.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)


def config(
    emulator: Emulator,
    *,
    api_key: str | None = None,
    store_threads: int = STORE_THREADS,
    upload_budget: int = MAX_UPLOAD_BYTES_IN_FLIGHT,
    protocol: type[GuardedH11Protocol] = GuardedH11Protocol,
) -> uvicorn.Config:
    """The uvicorn settings ``serve`` runs ``emulator`` with.

    ``store_threads`` and ``upload_budget`` are :func:`create_app`'s
    ``store_threads`` and ``upload_bytes_in_flight``.
    """
    app = create_app(
        emulator,
        api_key=api_key,
        store_threads=store_threads,
        upload_bytes_in_flight=upload_budget,
    )
    made = uvicorn.Config(
        app,
        http=protocol,
        ws="none",  # an upgraded connection would escape the deadlines and the bound
        lifespan="off",
        log_level="warning",
        access_log=True,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return made


def serve(
    emulator: Emulator,
    sock: socket.socket,
    *,
    api_key: str | None,
    store_threads: int,
    upload_budget: int,
) -> None:
    """Serve ``emulator`` on the bound ``sock`` until interrupted.

    Its worker runs in the background meanwhile. The keywords are
    :func:`config`'s.
    """
    _logging()
    # The worker thread computes while the event loop answers: hand the GIL
    # over every millisecond (not every five) so that answers stay prompt.
    sys.setswitchinterval(0.001)
    server = uvicorn.Server(
        config(
            emulator,
            api_key=api_key,
            store_threads=store_threads,
            upload_budget=upload_budget,
        )
    )
    emulator.start()
    try:
        server.run(sockets=[sock])
    finally:
        emulator.stop()
