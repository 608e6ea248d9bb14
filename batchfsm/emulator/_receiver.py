"""A small real webhook receiver: an HTTP server in a thread that keeps what it got.

For tests of webhook delivery (the emulator's, or any server's) and for
``batchfsm conform --webhook-secret``: it listens on a loopback port, answers
every POST with :attr:`WebhookReceiver.status` (200, or whatever a test sets
to play an endpoint that is down), and keeps each request's headers and body.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

import attrs

__all__ = ["Received", "WebhookReceiver"]


@attrs.frozen
class Received:
    """One request the receiver got: its headers (lowercase names), body, path."""

    headers: dict[str, str]
    body: bytes
    answered: int
    #: The path it was sent to: any path under the receiver's is answered
    #: (``/webhooks/team_a``: one receiver for several endpoints).
    path: str = "/webhooks"

    def event(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class WebhookReceiver:
    """A webhook endpoint on ``host:port`` (a free port if 0), in a daemon thread.

    Args:
        secret: the ``whsec_`` secret :meth:`events` verifies signatures with.

    Example:
        >>> import httpx2
        >>> with WebhookReceiver() as receiver:
        ...     answer = httpx2.post(receiver.url, content=b"{}")
        ...     receiver.status = 503
        ...     down = httpx2.post(receiver.url, content=b"{}")
        >>> answer.status_code, down.status_code, len(receiver.received)
        (200, 503, 2)
    """

    def __init__(
        self, secret: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.secret = secret
        #: The status every POST is answered with from now on.
        self.status = 200
        #: Every request received, in order (answered or not).
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size)
                status = receiver.status
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._arrived:
                    receiver.received.append(Received(headers, body, status, self.path))
                    receiver._arrived.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: a test's output is its own

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="batchfsm-receiver", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The URL to deliver to: ``http://HOST:PORT/webhooks``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/webhooks"

    def events(self) -> list[Any]:
        """The bodies of the 2xx-answered requests whose signatures verify, as JSON.

        Raises:
            ValueError: no secret was given.
            standardwebhooks.WebhookVerificationError: a signature does not verify.
        """
        if self.secret is None:
            raise ValueError("the receiver has no secret to verify signatures with")
        from standardwebhooks import Webhook

        hook = Webhook(self.secret)
        with self._lock:
            got = [r for r in self.received if 200 <= r.answered < 300]
        return [hook.verify(r.body, r.headers) for r in got]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until ``count`` requests were answered 2xx (or ``timeout`` seconds).

        Returns those answered 2xx so far.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                ok = [r for r in self.received if 200 <= r.answered < 300]
                left = deadline - time.monotonic()
                if len(ok) >= count or left <= 0:
                    return ok
                self._arrived.wait(left)

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
