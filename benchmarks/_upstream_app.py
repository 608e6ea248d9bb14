"""A fast local upstream for the gateway benchmark (``benchmarks._upstream_app``).

A raw asyncio HTTP/1.1 server (keep-alive, no framework) answering every
``POST`` with one small chat completion, and ``GET /stats`` with how many
requests it answered and the monotonic times of the first and the last, so
that the gateway and a plain client are timed alike, by the upstream. ``GET
/reset`` starts the count again; any other ``GET`` answers ``{}``. It
listens on ``--port P``; with ``--latency S`` each ``POST`` is answered S
seconds after it came (a model's pace: then the gateways' concurrency, not
the CPU, bounds their throughput).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok"},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()


class Stats:
    count = 0
    first = 0.0
    last = 0.0


def _response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /stats"):
                stats = {"count": Stats.count, "first": Stats.first, "last": Stats.last}
                writer.write(_response(json.dumps(stats).encode()))
            elif head.startswith(b"GET /reset"):
                Stats.count, Stats.first, Stats.last = 0, 0.0, 0.0
                writer.write(_response(b"{}"))
            elif not head.startswith(b"POST"):
                writer.write(_response(b"{}"))
            else:
                now = time.monotonic()
                Stats.count += 1
                Stats.first = Stats.first or now
                Stats.last = now
                if LATENCY:
                    await asyncio.sleep(LATENCY)
                writer.write(_response(ANSWER))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


#: Seconds each POST waits before its answer (``--latency``).
LATENCY = 0.0


async def main(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        if "--latency" in sys.argv:
            LATENCY = float(sys.argv[sys.argv.index("--latency") + 1])
        asyncio.run(main(int(sys.argv[sys.argv.index("--port") + 1])))
    except KeyboardInterrupt:
        sys.exit(0)
