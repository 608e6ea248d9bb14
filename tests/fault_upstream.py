"""A tiny OpenAI-shaped upstream of the tests' own, with faults on demand.

A raw asyncio HTTP/1.1 server in a thread (raw, so that it can drop a
connection or trickle an answer a byte at a time). What it does with a chat
request is named by the last message's content:

- ``ok``: 200, a chat completion with usage (prompt 3, completion 2);
- ``429-once``: 429 with ``Retry-After: 0.05`` the first time, then as ``ok``;
- ``500``: 500 with an error body, every time;
- ``hang``: never answers (until the client gives up);
- ``drop``: closes the connection without answering, every time;
- ``drop-once``: as ``drop`` the first time, then as ``ok``;
- ``held``: as ``ok``, once :meth:`FaultUpstream.release` was called
  (``held_now`` says how many are held, ``held_most`` the most at once);
- ``trickle``: a 200 whose body comes a byte every 0.1 s, for ever;
- ``text``: a 200 whose body is not JSON;
- anything starting ``slow``: as ``ok``, after 20 ms (a real model's pace,
  so that a batch is caught mid-run); ``slower``: after 300 ms, and
  ``slowest``: after 6 s (answers that come out of order).

Every request is logged (``log``: the content and custom id header-less, as
``(content, n-th try of it)``), so that the tests can count the tries; with
``who`` set (a function of a connection's peer address), ``senders`` says
who sent each (its value for the request's connection, asked once).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["FaultUpstream", "fault_upstream"]


def _response(status: int, body: dict[str, Any], extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


def _ok(body: dict[str, Any]) -> bytes:
    return _response(
        200,
        {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "up"},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    )


SERVER_ERROR = {
    "error": {
        "message": "The upstream broke.",
        "type": "server_error",
        "param": None,
        "code": "upstream_broke",
    }
}


class FaultUpstream:
    """The server's state: its address and its request log."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.tries: Counter[str] = Counter()
        self.base = ""
        self.headers: list[dict[str, str]] = []
        self.who: Callable[[Any], object] | None = None
        self.senders: list[object] = []
        self.held_now = 0
        self.held_most = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._released = asyncio.Event()  # bound to the server's loop on use

    def release(self) -> None:
        """Answer the ``held`` requests, those held now and those to come."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._released.set)

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        sender = None if self.who is None else self.who(peer)
        try:
            while await self._one(reader, writer, sender):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sender: object = None,
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        body = json.loads(await reader.readexactly(int(headers["content-length"])))
        content = body["messages"][-1]["content"]
        self.tries[content] += 1
        self.log.append((content, self.tries[content]))
        self.senders.append(sender)
        self.headers.append(headers)
        first = self.tries[content] == 1
        if content == "hang":
            await asyncio.sleep(3600)
        if content == "held":
            self.held_now += 1
            self.held_most = max(self.held_most, self.held_now)
            await self._released.wait()
            self.held_now -= 1
        if content.startswith("slow"):
            pace = {"slowest": 6.0, "slower": 0.3}.get(content.split("-")[0], 0.02)
            await asyncio.sleep(pace)
        if content == "drop" or (content == "drop-once" and first):
            return False
        if content == "trickle":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)
        if content == "text":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif content == "500":
            writer.write(_response(500, SERVER_ERROR))
        elif content == "429-once" and first:
            writer.write(
                _response(
                    429, {"error": {"message": "slow down"}}, "Retry-After: 0.05\r\n"
                )
            )
        else:
            writer.write(_ok(body))
        await writer.drain()
        return True


@contextmanager
def fault_upstream() -> Iterator[FaultUpstream]:
    """Serve a :class:`FaultUpstream` on loopback, in a thread, while in use."""
    upstream = FaultUpstream()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def main() -> asyncio.AbstractServer:
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        upstream.base = f"http://127.0.0.1:{port}"
        return server

    server = loop.run_until_complete(main())
    upstream.loop = loop
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    ready.set()
    try:
        yield upstream
    finally:

        async def shut() -> None:
            server.close()  # on its own loop: asyncio is not thread-safe
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
