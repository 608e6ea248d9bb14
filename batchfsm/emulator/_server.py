"""``batchfsm serve``: the emulator behind uvicorn, with a server's own defences.

- Settings are checked and the socket bound before anything is announced:
  a host that does not resolve or a port in use is one line and exit 2;
  listening beyond loopback without an API key is a WARNING.
- Each connection is held to :class:`~batchfsm.emulator._protocol.Limits`
  (see :mod:`batchfsm.emulator._protocol`): connections open at once, and
  from one address; deadlines for the request head, the whole request and
  the reading of each answer; the size of a request head; idle connections
  close after :data:`KEEP_ALIVE_SECONDS`.
- Batches move in the emulator's background worker, never on the event loop.
- One access log line per request (stdout); a client that goes away, one line.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Mapping
from types import FrameType

import uvicorn

from ._app import MAX_UPLOAD_BYTES_IN_FLIGHT, STORE_THREADS, create_app
from ._engine import Emulator
from ._protocol import (
    HEAD_SECONDS,
    KEEP_ALIVE_SECONDS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_HEAD_BYTES,
    REQUEST_SECONDS,
    GuardedH11Protocol,
    Limits,
    quiet_uvicorn,
)

__all__ = [
    "HEAD_SECONDS",
    "KEEP_ALIVE_SECONDS",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "MAX_HEAD_BYTES",
    "REQUEST_SECONDS",
    "Limits",
    "ServeError",
    "bind",
    "config",
    "serve",
    "warn_if_open",
]

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


def _logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("batchfsm: %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # Its warnings would reach stderr bare, one per malformed upload, which
    # the 400 answer already explains.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)


def warn_if_open(sock: socket.socket, api_key: object) -> bool:
    """Log a WARNING if ``sock`` listens beyond loopback and no key is asked.

    Returns whether it did.

    Example:
        >>> sock = bind("127.0.0.1", 0)
        >>> warn_if_open(sock, None)
        False
        >>> sock.close()
    """
    host = str(sock.getsockname()[0])
    try:
        loopback = ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:  # not an IP address: a Unix socket, say
        loopback = True
    if loopback or api_key:
        return False
    log.warning(
        "listening on %s without an API key: anyone who can reach this address "
        "can list, read and delete its files and batches; set --api-key KEY (or "
        "BATCHFSM_API_KEY), or listen on 127.0.0.1",
        f"[{host}]" if ":" in host else host,
    )
    return True


def config(
    emulator: Emulator,
    *,
    api_key: str | None = None,
    store_threads: int = STORE_THREADS,
    upload_budget: int = MAX_UPLOAD_BYTES_IN_FLIGHT,
    limits: Limits | None = None,
    api_keys: Mapping[str, str] | None = None,
    admin: bool = False,
    ui: bool = True,
) -> uvicorn.Config:
    """The uvicorn settings ``serve`` runs ``emulator`` with.

    ``store_threads`` and ``upload_budget`` are :func:`create_app`'s
    ``store_threads`` and ``upload_bytes_in_flight``, ``api_key`` and
    ``api_keys`` its own; ``limits`` bound each connection (:class:`Limits`'
    defaults if None); ``admin`` adds the admin routes; ``ui`` serves the web
    view.
    """
    limits = limits or Limits()
    app = create_app(
        emulator,
        api_key=api_key,
        api_keys=api_keys,
        store_threads=store_threads,
        upload_bytes_in_flight=upload_budget,
        admin=admin,
        ui=ui,
    )
    made = uvicorn.Config(
        app,
        http=GuardedH11Protocol.bound(limits),
        ws="none",  # an upgraded connection would escape the deadlines and the bound
        lifespan="off",
        log_level="warning",
        access_log=True,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=limits.max_head_bytes,
    )
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    logging.getLogger("uvicorn.error").addFilter(quiet_uvicorn)  # once: a set
    return made


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGTERM in one log line and exit status 0.

    uvicorn raises a SIGTERM again once it has shut down, so the process
    ends by the signal (143) without a word; a service manager or a
    container stopping ``serve`` asked for exactly this stop.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            if not self.should_exit:
                log.info("SIGTERM: stopping (open requests are finished first)")
            self.should_exit = True
            return
        super().handle_exit(sig, frame)


def serve(
    emulator: Emulator,
    sock: socket.socket,
    *,
    api_key: str | None,
    store_threads: int,
    upload_budget: int,
    limits: Limits | None = None,
    api_keys: Mapping[str, str] | None = None,
    admin: bool = False,
    ui: bool = True,
) -> None:
    """Serve ``emulator`` on the bound ``sock`` until interrupted.

    Its worker runs in the background meanwhile. The keywords are
    :func:`config`'s.
    """
    _logging()
    warn_if_open(sock, api_key is not None or bool(api_keys))
    # The worker thread computes while the event loop answers: hand the GIL
    # over every millisecond (not every five) so that answers stay prompt.
    sys.setswitchinterval(0.001)
    server = _Server(
        config(
            emulator,
            api_key=api_key,
            store_threads=store_threads,
            upload_budget=upload_budget,
            limits=limits,
            api_keys=api_keys,
            admin=admin,
            ui=ui,
        )
    )
    emulator.start()
    try:
        server.run(sockets=[sock])
    finally:
        emulator.stop()
