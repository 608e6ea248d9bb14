"""A full ``batchfsm conform`` run against the built-in emulator.

The target: under 10 s. Measured as a user runs it and waits for it: the wall
time of ``python -m batchfsm conform --base-url URL`` (process start-up
included) against a fresh ``batchfsm serve`` at real speed, whose batches take
real seconds (validation, each request and finalizing a second each); the
server's own start is not counted. Beside it, the same command in-process on
a virtual clock (no ``--base-url``), where no wait is real. Every run must
pass.

``python -m benchmarks.conform_cases`` prints the figures alone, with the
requests and waits of one run.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx2

from batchfsm.conformance import run

from ._harness import Case, sized
from .engine_cases import _Server

#: The target of a full run against the built-in emulator, in seconds.
LIMIT = 10.0


def _timed(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "batchfsm", "conform", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"conform failed:\n{done.stdout}\n{done.stderr}")
    return took


def against_serve() -> float:
    """Seconds of a full ``conform`` run against a fresh ``serve``."""
    server = _Server()
    try:
        return _timed("--base-url", server.base)
    finally:
        server.close()


def in_process() -> float:
    """Seconds of a full ``conform`` run in-process, on a virtual clock."""
    return _timed()


def conform_cases() -> list[Case]:
    return [
        Case(
            "conform run vs serve",
            against_serve,
            "the same, in-process, virtual clock",
            in_process,
            1.0,
            limit=LIMIT,
            unit="s",
            rounds=sized(3, quick=1),
            clock="wall",  # its waits are real: the time a user waits
        )
    ]


def counts() -> str:
    """Requests and waits of one run against a fresh ``serve``."""
    server = _Server()
    requests = 0
    waits: list[float] = []

    def count(_: httpx2.Request) -> None:
        nonlocal requests
        requests += 1

    def wait(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    try:
        with httpx2.Client(base_url=server.base, timeout=60) as http:
            http.event_hooks["request"].append(count)
            report = run(http, wait=wait)
    finally:
        server.close()
    assert report.passed, report.to_dict()
    return (
        f"conform against serve: {len(report.results)} checks, {requests} "
        f"requests, {len(waits)} waits ({sum(waits):.2f} s of sleep)"
    )


def main() -> int:
    from ._harness import run as measure
    from ._harness import table

    print(table([measure(case) for case in conform_cases()]))
    print(counts())
    return 0


if __name__ == "__main__":
    sys.exit(main())
