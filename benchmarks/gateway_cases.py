"""``serve --upstream``: a 20,000-line batch against a local upstream.

The target: the gateway's request throughput at least 0.9x that of a plain
asyncio client (``httpx2.AsyncClient``, the same concurrency) sending the
same 20,000 requests to the same upstream. The upstream
(:mod:`benchmarks._upstream_app`, a process of its own) times both alike:
from the first request it received to the last. Rounds alternate (plain,
gateway, gateway, plain, ...) so that a busy moment of the shared machine
weighs on both; the ratio is the median of the rounds' ratios.

Also: the gateway's overhead a request (its time less the plain client's,
over the requests), the gateway process's CPU time a request, and its peak
resident memory (``VmHWM``) with the 20,000-line batch, beside the input
file's size.

``python -m benchmarks.gateway_cases [--rounds N] [--lines N]`` prints them alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

import httpx2

from .engine_cases import started

__all__ = ["gateway_figures", "main"]

#: The requests of the batch, and how many are in flight at once.
LINES, CONCURRENCY = 20_000, 64
#: The target: at least this share of the plain client's requests/s.
TARGET = 0.9
CHAT = "/v1/chat/completions"


def _body(i: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Say {i}."}],
    }


def _input(lines: int) -> bytes:
    return "\n".join(
        json.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": _body(i)}
        )
        for i in range(lines)
    ).encode()


class _Upstream:
    def __init__(self, latency: float = 0.0) -> None:
        pace = ["--latency", str(latency)] if latency else []
        self.process, port = started(
            [sys.executable, "-m", "benchmarks._upstream_app", *pace], "the upstream"
        )
        self.base = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx2.get(f"{self.base}/stats").json()
        return data

    def reset(self) -> None:
        httpx2.get(f"{self.base}/reset")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _seconds(upstream: _Upstream, lines: int) -> float:
    stats = upstream.stats()
    if stats["count"] != lines:
        raise RuntimeError(f"the upstream saw {stats['count']} requests, not {lines}")
    return float(stats["last"] - stats["first"])


async def _plain(base: str, lines: int) -> None:
    limits = httpx2.Limits(max_connections=CONCURRENCY)
    async with httpx2.AsyncClient(limits=limits, timeout=600) as client:
        queue = iter(range(lines))

        async def lane() -> None:
            for i in queue:
                answer = await client.post(base + CHAT, json=_body(i))
                answer.raise_for_status()
                answer.json()

        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))


def _proc(pid: int) -> tuple[float, int]:
    """CPU seconds used so far and peak resident bytes of process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as status:
        peak = next(int(x.split()[1]) * 1024 for x in status if x.startswith("VmHWM:"))
    return cpu, peak


def _gateway(upstream: _Upstream, data: bytes, lines: int) -> tuple[float, float, int]:
    """One batch through a fresh gateway: upstream seconds, CPU seconds, peak RSS."""
    process, port = started(
        [sys.executable, "-m", "batchfsm", "serve", "--speed", "1000",
         "--upstream", upstream.base, "--upstream-concurrency", str(CONCURRENCY)],
        "batchfsm serve --upstream",
    )  # fmt: skip
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=600) as http:
            file_id = http.post(
                "/files",
                files={"file": ("in.jsonl", data)},
                data={"purpose": "batch"},
            ).json()["id"]
            cpu_before, _ = _proc(process.pid)
            batch = http.post(
                "/batches",
                json={
                    "input_file_id": file_id,
                    "endpoint": CHAT,
                    "completion_window": "24h",
                },
            ).json()
            while batch["status"] not in (
                "completed",
                "failed",
                "expired",
                "cancelled",
            ):
                time.sleep(0.05)
                batch = http.get(f"/batches/{batch['id']}").json()
            if batch["request_counts"]["completed"] != lines:
                raise RuntimeError(
                    f"the gateway's batch ended {batch['request_counts']}"
                )
            cpu_after, peak = _proc(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return _seconds(upstream, lines), cpu_after - cpu_before, peak


def gateway_figures(
    rounds: int = 2, lines: int = LINES
) -> tuple[list[str], dict[str, Any]]:
    """The figures' lines, and their values for the JSON."""
    data = _input(lines)
    upstream = _Upstream()
    plain: list[float] = []
    gateway: list[float] = []
    cpu: list[float] = []
    peak = 0
    try:
        for turn in range(rounds * 2):
            upstream.reset()
            if turn % 4 in (0, 3):
                asyncio.run(_plain(upstream.base, lines))
                plain.append(_seconds(upstream, lines))
            else:
                seconds, used, rss = _gateway(upstream, data, lines)
                gateway.append(seconds)
                cpu.append(used)
                peak = max(peak, rss)
    finally:
        upstream.close()
    ratios = [p / g for p, g in zip(plain, gateway, strict=True)]
    ratio = statistics.median(ratios)
    overhead = (statistics.median(gateway) - statistics.median(plain)) / lines
    values = {
        "lines": lines,
        "concurrency": CONCURRENCY,
        "plain_rps": [lines / s for s in plain],
        "gateway_rps": [lines / s for s in gateway],
        "ratio": ratio,
        "overhead_us": overhead * 1e6,
        "gateway_cpu_us_per_request": statistics.median(cpu) / lines * 1e6,
        "peak_rss_bytes": peak,
        "input_bytes": len(data),
    }
    verdict = "meets" if ratio >= TARGET else "misses"
    gateway_rps = statistics.median(lines / s for s in gateway)
    plain_rps = statistics.median(lines / s for s in plain)
    out = [
        f"gateway, {lines:,} lines, {CONCURRENCY} at once: "
        f"{gateway_rps:,.0f} requests/s vs a plain asyncio "
        f"client's {plain_rps:,.0f}: {ratio:.2f}x "
        f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}; {verdict} >= {TARGET})",
        f"gateway overhead a request: {overhead * 1e6:,.0f} us wall, "
        f"{values['gateway_cpu_us_per_request']:,.0f} us CPU of the serve process",
        f"gateway peak RSS: {peak / 1e6:,.0f} MB "
        f"with a {len(data) / 1e6:,.1f} MB input",
    ]
    return out, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_cases")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lines", type=int, default=LINES)
    args = parser.parse_args(argv)
    lines, _ = gateway_figures(args.rounds, args.lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
