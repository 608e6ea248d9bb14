"""Uploads over HTTP: streamed, bounded each (413) and together (429).

The app is driven as an ASGI server would drive it, one upload held open
mid-body while others arrive: no timing, the order of events is fixed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from batchfsm.emulator import Emulator, create_app
from batchfsm.emulator._app import MAX_UPLOAD_BYTES

Receive = Callable[[], Awaitable[dict[str, Any]]]
BOUNDARY = "xyzzy"


def multipart(content: bytes, purpose: str = "batch") -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\n'
            f"{purpose}\r\n"
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def post(
    app: Any, receive: Receive, length: int | None
) -> tuple[int, dict[str, Any]]:
    """POST /v1/files through the ASGI app; its status and JSON answer (or {})."""
    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/files", "raw_path":
        b"/v1/files", "root_path": "", "query_string": b"", "headers": headers,
        "server": ("test", 80), "client": ("127.0.0.1", 1),
    }  # fmt: skip
    answer: dict[str, Any] = {"body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], json.loads(answer["body"]) if answer["body"] else {}


def whole(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # never: the app must not read past the end
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class Held:
    """A body whose first half arrives at once and the rest only when released."""

    def __init__(self, body: bytes) -> None:
        self.parts = [body[: len(body) // 2], body[len(body) // 2 :]]
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> dict[str, Any]:
        more = len(self.parts) == 2
        if more:
            self.started.set()
        else:
            await self.release.wait()
        return {"type": "http.request", "body": self.parts.pop(0), "more_body": more}


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


BUSY = {
    "error": {
        "message": "Too many uploads in flight: together they may hold 1000 bytes. "
        "Try again when they are done.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


def test_uploads_in_flight_together_are_bounded_and_429_beyond() -> None:
    async def scenario() -> None:
        app = create_app(Emulator(), upload_bytes_in_flight=1_000)
        body = multipart(b'{"a": 1}\n' * 60)
        small = multipart(b"{}\n")
        # Half of one and a whole other pass the bound; a small one does not.
        assert len(body) // 2 + len(body) > 1_000 >= len(body) + len(small)
        for declared in (True, False):  # by Content-Length, or as bytes arrive
            held = Held(body)
            length = len(body) if declared else None
            first = asyncio.create_task(post(app, held, length))
            await held.started.wait()  # the first half is in, the rest held back
            assert await post(app, whole(body), len(body)) == (429, BUSY)
            assert await post(app, whole(body), None) == (429, BUSY)
            status, made = await post(app, whole(small), len(small))
            assert status == 200 and made["bytes"] == 3  # within the bound: passes
            held.release.set()
            status, made = await first
            assert status == 200 and made["bytes"] == 540
            # Every byte came back: the next one passes again.
            status, _ = await post(app, whole(body), len(body))
            assert status == 200

    run(scenario)


def test_one_upload_alone_passes_whatever_the_bound() -> None:
    async def scenario() -> None:
        app = create_app(Emulator(), upload_bytes_in_flight=10)
        body = multipart(b'{"a": 1}\n' * 50)
        for length in (len(body), None):
            status, made = await post(app, whole(body), length)
            assert status == 200 and made["bytes"] == 450

    run(scenario)


def test_refused_and_failed_uploads_give_their_bytes_back() -> None:
    async def scenario() -> None:
        app = create_app(Emulator(), upload_bytes_in_flight=1_000)
        body = multipart(b'{"a": 1}\n' * 60)
        held = Held(body)
        first = asyncio.create_task(post(app, held, len(body)))
        await held.started.wait()
        for _ in range(3):
            assert (await post(app, whole(body), len(body)))[0] == 429
            bad = multipart(b"{}", purpose="nope")
            assert (await post(app, whole(bad), len(bad)))[0] == 400
            garbage = b"--" + BOUNDARY.encode() + b"\r\nnot a part"
            assert (await post(app, whole(garbage), len(garbage)))[0] == 400
        held.release.set()
        assert (await first)[0] == 200
        # Nothing leaked: an upload that fits only beside exactly one in flight.
        held = Held(body)
        first = asyncio.create_task(post(app, held, len(body)))
        await held.started.wait()
        small = multipart(b"x" * (1_000 - len(body) - len(multipart(b""))))
        assert len(body) + len(small) == 1_000
        assert (await post(app, whole(small), len(small)))[0] == 200
        held.release.set()
        assert (await first)[0] == 200

    run(scenario)


def test_a_declared_length_over_the_limit_is_413_before_any_byte_is_read() -> None:
    async def scenario() -> None:
        app = create_app(Emulator())

        async def unread() -> dict[str, Any]:
            raise AssertionError("the body was read")

        status, answer = await post(app, unread, MAX_UPLOAD_BYTES + 1)
        assert (status, answer) == (
            413,
            {
                "error": {
                    "message": "Request body too large: the limit is "
                    f"{MAX_UPLOAD_BYTES} bytes.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    run(scenario)
