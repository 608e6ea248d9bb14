"""A small HTTP/1.1 load generator, run in a process of its own.

``python -m benchmarks._load --target PORT,PID,PATH[,HEADER] [--target ...]
[--connections 8] [--warmup 1] [--rounds 6] [--seconds 1.5]
[--expect-file PATH ...] < EXPECTED_BODY``

Each target gets ``--connections`` keep-alive connections, each sending ``GET
PATH`` and reading the whole answer before sending the next (no pipelining).
Targets take turns, a round at a time, in the order A B B A A B ... so that a
machine busier now than later weighs on each alike; each is warmed up first.
For each round it counts the answers and the CPU time the server (``PID``)
used meanwhile, and prints one JSON object: per target, its rounds (answers a
second, server CPU µs an answer) and how many answers were wrong (not 200, not
exactly the expected body, or without the ``HEADER`` named). The expected
body is read from stdin, the same for every target, unless ``--expect-file``
is given once per target (servers answering different batches).

Plain asyncio on raw sockets: an answer costs this client far less than any
server here, so the figure is the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["cpu_seconds", "main"]


class _Target:
    """One server: where to ask, what to check, and what it answered."""

    def __init__(self, spec: str) -> None:
        port, pid, self.path, *header = spec.split(",")
        self.port, self.pid = int(port), int(pid)
        self.header = header[0].lower().encode() + b":" if header else None
        self.answers = self.wrong = 0
        self.active = asyncio.Event()
        self.rounds: list[dict[str, float]] = []


async def _connection(target: _Target, expect: bytes, stop: asyncio.Event) -> None:
    request = f"GET {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    writer = None
    try:
        while not stop.is_set():
            await target.active.wait()
            if writer is None:  # (again: an idle connection may have timed out)
                reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # closed while idle: reconnect
                writer.close()
                writer = None
                continue
            lines = head.lower().split(b"\r\n")
            length = 0
            for line in lines:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            target.answers += 1
            if not (
                lines[0].startswith(b"http/1.1 200 ")
                and body == expect
                and (
                    target.header is None
                    or any(x.startswith(target.header) for x in lines)
                )
            ):
                target.wrong += 1
    finally:
        if writer is not None:
            writer.close()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """CPU time (user and system) process ``pid`` has used so far; 0 if unknown.

    ``children``: with that of its children that ended (a database server's
    backends, say).
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:  # not Linux, or the process is gone
        return 0.0
    used = fields[11:15] if children else fields[11:13]
    return sum(map(int, used)) / os.sysconf("SC_CLK_TCK")


async def _round(target: _Target, seconds: float) -> dict[str, float]:
    target.active.set()
    answers, cpu = target.answers, cpu_seconds(target.pid)
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    target.active.clear()
    elapsed = time.perf_counter() - start
    answered = target.answers - answers
    used = cpu_seconds(target.pid) - cpu
    return {
        "per_second": answered / elapsed,
        "server_cpu_us": used / max(answered, 1) * 1e6,
    }


async def _run(args: argparse.Namespace, expect: list[bytes]) -> dict[str, object]:
    targets = [_Target(spec) for spec in args.target]
    stop = asyncio.Event()
    connections = [
        asyncio.create_task(_connection(target, body, stop))
        for target, body in zip(targets, expect, strict=True)
        for _ in range(args.connections)
    ]
    for target in targets:
        await _round(target, args.warmup)
    order = [
        targets[(i + 1) // 2 % len(targets)] for i in range(len(targets) * args.rounds)
    ]
    for target in order:  # A B B A A B B A ...
        target.rounds.append(await _round(target, args.seconds))
    stop.set()
    for target in targets:
        target.active.set()  # let the idle ones see the stop
    await asyncio.gather(*connections)
    return {
        "targets": [
            {"rounds": t.rounds, "answers": t.answers, "wrong": t.wrong}
            for t in targets
        ]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._load")
    parser.add_argument(
        "--target", action="append", required=True, help="PORT,PID,PATH[,HEADER]"
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=6, help="per target")
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument(
        "--expect-file", action="append", help="a target's expected body (each)"
    )
    args = parser.parse_args(argv)
    if args.expect_file:
        if len(args.expect_file) != len(args.target):
            parser.error("give --expect-file once per --target")
        expect = [Path(path).read_bytes() for path in args.expect_file]
    else:
        expect = [sys.stdin.buffer.read()] * len(args.target)
    print(json.dumps(asyncio.run(_run(args, expect))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
