"""pytest fixtures for testing against the emulator (loaded by pytest on its own).

Installed with batchfsm, this plugin gives every test suite:

- ``batch_emulator``: a fresh :class:`~batchfsm.emulator.Emulator` on a
  :class:`~batchfsm.emulator.VirtualClock` (move time with
  ``batch_emulator.clock.advance(seconds)``);
- ``batch_emulator_options``: override it to pass options to the emulator;
- ``batch_emulator_http``: an ``httpx2.Client`` talking to it in-process;
- ``batch_emulator_openai``: the official ``openai`` client talking to it;
- ``batch_emulator_url``: a real ``http://127.0.0.1:PORT/v1`` serving it, for
  code that makes its own client (one server per session, pointed at each
  test's fresh emulator);
- ``batch_emulator_webhooks``: a real webhook receiver (an HTTP server on a loopback
  port) that ``batch_emulator`` delivers its batch events to, signed with a
  fresh secret: ``batch_emulator_webhooks.events()`` are the events the test's code
  caused, verified; ``batch_emulator_webhooks.url`` and ``.secret`` to hand to code
  under test.
- ``batch_emulator_env``: that server in ``OPENAI_BASE_URL`` and a key in
  ``OPENAI_API_KEY`` for the test's duration, so that every
  ``openai.OpenAI()`` the code under test builds with no arguments talks to
  the emulator (which the fixture returns);
- ``batch_emulator_async_http`` and ``batch_emulator_async_openai``: an
  ``httpx2.AsyncClient`` and ``openai.AsyncOpenAI`` talking to it
  in-process.

The emulator logs what it receives and fails on command
(``batch_emulator.assert_called(...)``, ``batch_emulator.fail_next(...)``);
see "Recipes" in the docs.

A fixture whose optional dependency is missing is an error naming the
``pip install 'batchfsm[...]'`` to run, never a skip.

Disable it with ``-p no:batchfsm``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .._extras import missing_extra
from ._clock import VirtualClock
from ._engine import Emulator
from ._receiver import WebhookReceiver
from ._webhooks import WebhookEndpoint

if TYPE_CHECKING:
    import httpx2
    import openai

#: The API key the fixtures' clients send (the emulator asks for none).
API_KEY = "sk-batchfsm-emulator"

#: The base URL the in-process clients use (no socket is ever opened).
BASE_URL = "http://batchfsm.emulator"


@contextlib.contextmanager
def _require(extra: str) -> Iterator[None]:
    """Turn an ImportError into one line naming what to install, as a test error."""
    try:
        yield
    except ImportError as exc:
        # pytest.fail's own exception, raised ``from None``: one line, no chain.
        raise pytest.fail.Exception(missing_extra(exc, extra), pytrace=False) from None


@pytest.fixture
def batch_emulator_options() -> dict[str, Any]:
    """Options for ``batch_emulator``; override this fixture to change them."""
    return {}


@pytest.fixture
def batch_emulator(batch_emulator_options: dict[str, Any]) -> Emulator:
    """A fresh emulator on a virtual clock."""
    options = {"clock": VirtualClock(), **batch_emulator_options}
    return Emulator(**options)


@pytest.fixture
def batch_emulator_http(batch_emulator: Emulator) -> Iterator[httpx2.Client]:
    """An ``httpx2.Client`` for the emulator's HTTP API, in-process."""
    with _require("server"):
        import httpx2

        from ._app import create_app
        from ._transport import EmulatorTransport

    transport = EmulatorTransport(create_app(batch_emulator))
    with httpx2.Client(transport=transport, base_url=BASE_URL) as client:
        yield client
    transport.close()


@pytest.fixture
def batch_emulator_openai(batch_emulator_http: httpx2.Client) -> openai.OpenAI:
    """The official ``openai`` client, talking to the emulator in-process."""
    with _require("openai"):
        import openai
    client: openai.OpenAI = openai.OpenAI(
        api_key=API_KEY,
        base_url=f"{BASE_URL}/v1",
        http_client=batch_emulator_http,
        max_retries=0,
    )
    return client


class _Dispatch:
    """An ASGI app that forwards to whichever app the current test set."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self.target is None:
            from starlette.responses import JSONResponse

            body = {
                "error": {
                    "message": "No emulator is attached (the test ended).",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        await self.target(scope, receive, send)


class _Server:
    """A uvicorn server on a free loopback port, in a daemon thread."""

    def __init__(self) -> None:
        with _require("server"):
            import uvicorn

        self.dispatch = _Dispatch()
        config = uvicorn.Config(
            self.dispatch, host="127.0.0.1", port=0, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator's HTTP server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class BatchWebhooks:
    """The webhook events a test's emulator delivered to a real receiver.

    Attributes:
        url: the receiver's URL (``http://127.0.0.1:PORT/webhooks``).
        secret: the ``whsec_`` secret the events are signed with.
        receiver: the receiver itself (every request it got: ``received``;
            the status it answers: ``status``, 200 unless a test sets another).
    """

    def __init__(self, emulator: Emulator, receiver: WebhookReceiver) -> None:
        self._emulator = emulator
        self.receiver = receiver
        self.url = receiver.url
        self.secret = receiver.secret

    def events(self) -> list[dict[str, Any]]:
        """The events delivered so far (signatures verified), in order of arrival.

        Runs the emulator's due work first, so the events due by its clock
        are delivered.
        """
        self._emulator.run()
        events: list[dict[str, Any]] = self.receiver.events()
        return events


@pytest.fixture
def batch_emulator_webhooks(batch_emulator: Emulator) -> Iterator[BatchWebhooks]:
    """A real receiver that ``batch_emulator`` delivers its batch events to."""
    with _require("server"):
        import standardwebhooks  # noqa: F401 - needed to sign and verify

    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    with WebhookReceiver(secret) as receiver:
        batch_emulator.add_webhook(WebhookEndpoint(receiver.url, secret))
        yield BatchWebhooks(batch_emulator, receiver)


@pytest.fixture(scope="session")
def batch_emulator_server() -> Iterator[_Server]:
    """The session's HTTP server for ``batch_emulator_url``."""
    server = _Server()
    yield server
    server.stop()


@pytest.fixture
def batch_emulator_url(
    batch_emulator: Emulator, batch_emulator_server: _Server
) -> Iterator[str]:
    """The base URL (``http://127.0.0.1:PORT/v1``) of this test's emulator."""
    with _require("server"):
        from ._app import create_app

    batch_emulator_server.dispatch.target = create_app(batch_emulator)
    yield batch_emulator_server.url
    batch_emulator_server.dispatch.target = None


@pytest.fixture
def batch_emulator_env(
    batch_emulator: Emulator, batch_emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> Emulator:
    """``OPENAI_BASE_URL``/``OPENAI_API_KEY`` set to this test's emulator; it.

    Code under test that builds ``openai.OpenAI()`` (or ``AsyncOpenAI()``)
    with no arguments reaches the emulator through a real loopback socket.
    ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID`` are unset meanwhile.
    """
    monkeypatch.setenv("OPENAI_BASE_URL", batch_emulator_url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    for name in ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    return batch_emulator


@pytest.fixture
def batch_emulator_async_http(batch_emulator: Emulator) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` for the emulator's HTTP API, in-process.

    Closing it is left to the test's event loop (``async with`` it, or
    ``await client.aclose()``); left open, it holds nothing but memory.
    """
    with _require("server"):
        import httpx2

        from ._app import create_app
        from ._transport import AsyncEmulatorTransport

    transport = AsyncEmulatorTransport(create_app(batch_emulator))
    return httpx2.AsyncClient(transport=transport, base_url=BASE_URL)


@pytest.fixture
def batch_emulator_async_openai(
    batch_emulator_async_http: httpx2.AsyncClient,
) -> openai.AsyncOpenAI:
    """The official ``openai.AsyncOpenAI`` client, on the emulator in-process."""
    with _require("openai"):
        import openai
    client: openai.AsyncOpenAI = openai.AsyncOpenAI(
        api_key=API_KEY,
        base_url=f"{BASE_URL}/v1",
        http_client=batch_emulator_async_http,
        max_retries=0,
    )
    return client
