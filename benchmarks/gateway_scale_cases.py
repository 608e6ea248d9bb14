"""``serve --upstream`` on one PostgreSQL: one big batch, 1, 2 and 4 processes.

The target (issue #23): two processes run a big batch at least 1.6x as fast
as one when the upstream is not the bottleneck. Each round starts a fresh
database on a throwaway cluster, ``n`` gateways on it (64 requests at once
each), creates one batch of ``lines`` lines through the first and waits
for its end; the upstream (:mod:`benchmarks._upstream_app`, a process of its
own) times it from its first request to its last. Counts of processes
alternate within a round (1, 2, 4, then 4, 2, 1) so that a busy moment of the
shared machine weighs on each alike; each ratio is the median of the
rounds' ratios to one process.

Also: the upstream alone, driven by a plain asyncio client at 64 x 4
requests at once, as the ceiling (when the gateways reach it, the upstream
is the bottleneck and the ratios say nothing of the gateway).

``python -m benchmarks.gateway_scale_cases [--rounds N] [--lines N]
[--latency S] [--concurrency N]`` prints them alone; with ``--latency`` the
upstream answers each request S seconds after it came, as a model does, so
that each gateway's concurrency (not the shared machine's CPU) bounds its
throughput, and the processes' sharing of the batch shows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import httpx2

from batchfsm._postgres_cluster import PostgresUnavailableError, cluster, new_database

from .engine_cases import started
from .gateway_cases import CHAT, CONCURRENCY, _body, _input, _seconds, _Upstream

__all__ = ["main", "scale_figures"]

#: The batch's lines (quick), and the counts of processes compared.
LINES, PROCESSES = 4_000, (1, 2, 4)
#: The target: two processes at least this many times one.
TARGET = 1.6


def _run(
    db: str, upstream: _Upstream, data: bytes, lines: int, n: int, concurrency: int
) -> float:
    """The batch through ``n`` gateways on ``db``: the upstream's seconds."""
    command = [
        sys.executable, "-m", "batchfsm", "serve", "--db", db, "--speed", "100",
        "--upstream", upstream.base, "--upstream-concurrency", str(concurrency),
    ]  # fmt: skip
    gateways = [started(command, "batchfsm serve --upstream") for _ in range(n)]
    try:
        base = f"http://127.0.0.1:{gateways[0][1]}/v1"
        with httpx2.Client(base_url=base, timeout=600) as http:
            file_id = http.post(
                "/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
            ).json()["id"]
            body = {"input_file_id": file_id, "endpoint": CHAT}
            batch = http.post("/batches", json=body | {"completion_window": "24h"})
            batch_id = batch.json()["id"]
            while (done := http.get(f"/batches/{batch_id}").json())["status"] not in {
                "completed", "failed", "expired", "cancelled",
            }:  # fmt: skip
                time.sleep(0.05)
        if done["request_counts"]["completed"] != lines:
            raise RuntimeError(
                f"the batch through {n} gateway(s) ended {done['status']}, "
                f"{done['request_counts']}"
            )
    finally:
        for process, _ in gateways:
            process.terminate()
            process.wait(timeout=30)
    return _seconds(upstream, lines)


async def _ceiling(base: str, lines: int, lanes: int) -> None:
    limits = httpx2.Limits(max_connections=lanes)
    async with httpx2.AsyncClient(limits=limits, timeout=600) as client:
        queue = iter(range(lines))

        async def lane() -> None:
            for i in queue:
                (await client.post(base + CHAT, json=_body(i))).raise_for_status()

        await asyncio.gather(*(lane() for _ in range(lanes)))


def scale_figures(
    rounds: int = 1,
    lines: int = LINES,
    latency: float = 0.0,
    concurrency: int = CONCURRENCY,
) -> tuple[list[str], dict[str, Any]]:
    """The figures' lines, and their values for the JSON."""
    data = _input(lines)
    seconds: dict[int, list[float]] = {n: [] for n in PROCESSES}
    ceiling: list[float] = []
    try:
        with cluster() as server:
            upstream = _Upstream(latency)
            try:
                for turn in range(rounds):
                    order = PROCESSES if turn % 2 == 0 else PROCESSES[::-1]
                    for n in order:
                        upstream.reset()
                        db = new_database(server)
                        seconds[n].append(
                            _run(db, upstream, data, lines, n, concurrency)
                        )
                    upstream.reset()
                    asyncio.run(_ceiling(upstream.base, lines, concurrency * 4))
                    ceiling.append(_seconds(upstream, lines))
            finally:
                upstream.close()
    except PostgresUnavailableError as exc:
        return [f"gateway on PostgreSQL, 1/2/4 processes: not run ({exc})"], {}
    rps = {n: [lines / s for s in seconds[n]] for n in PROCESSES}
    ratios = {
        n: statistics.median(o / s for o, s in zip(seconds[1], seconds[n], strict=True))
        for n in PROCESSES
    }
    top = statistics.median(lines / s for s in ceiling)
    verdict = "meets" if ratios[2] >= TARGET else "misses"
    out = [
        f"gateway on PostgreSQL, one {lines:,}-line batch, {concurrency} at once "
        + (f"each, answers after {latency:g} s: " if latency else "each: ")
        + ", ".join(
            f"{n} process{'es' if n > 1 else ''} "
            f"{statistics.median(rps[n]):,.0f} requests/s ({ratios[n]:.2f}x)"
            for n in PROCESSES
        )
        + f"; {verdict} >= {TARGET} at 2; the upstream alone takes "
        f"{top:,.0f} requests/s",
    ]
    values = {
        "lines": lines, "rps": rps, "ratios": ratios, "upstream_rps": top,
        "latency": latency, "concurrency": concurrency,
    }  # fmt: skip
    return out, values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway_scale_cases")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args(argv)
    lines, _ = scale_figures(args.rounds, args.lines, args.latency, args.concurrency)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
