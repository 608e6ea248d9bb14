"""``batchfsm serve`` beside a bare Starlette app answering the same bytes.

The target: serve's retrieve requests/s at least 0.8x those of a bare Starlette
app whose one route answers the same bytes. Both run as users run them, each
in a fresh process: ``python -m batchfsm serve`` (its one batch created over
HTTP and left to complete) and ``python -m uvicorn benchmarks._bare:app`` with
the uvicorn settings serve has that bear on an answer's cost (h11, the loop
uvicorn picks, one worker, the access log on). One load generator
(:mod:`benchmarks._load`, a process of its own) drives both with eight
keep-alive connections each, by turns (serve, bare, bare, serve, ...: a moment
when the shared machine is busy weighs on both alike), checking that every
answer is a 200 with exactly the batch's bytes (and, from serve, an
``x-request-id``). The ratio is the median of the ratios of rounds taken one
after the other; it also notes the CPU time each server used an answer,
steadier than a rate on a shared machine.

``python -m benchmarks.serve_cases`` prints both stores' figures alone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2

from batchfsm.emulator import make_input_file
from batchfsm.emulator._server import KEEP_ALIVE_SECONDS

from ._harness import Case, run
from .engine_cases import _create, _Server, _upload, started

ROOT = Path(__file__).resolve().parent.parent
#: The bare app's uvicorn command line: serve's settings that bear on an answer.
BARE = (
    "-m", "uvicorn", "benchmarks._bare:app", "--host", "127.0.0.1",
    "--http", "h11", "--loop", "auto", "--workers", "1", "--lifespan", "off",
    "--ws", "none", "--timeout-keep-alive", str(KEEP_ALIVE_SECONDS),
)  # fmt: skip
#: The target: at least this share of the bare app's requests/s.
TARGET = 0.8


def _completed_batch(base: str) -> tuple[str, bytes]:
    """A batch made over HTTP and run to completion: its path and its bytes."""
    with httpx2.Client(base_url=base, timeout=60) as http:
        batch = _create(http, _upload(http, make_input_file(1)))
        path = f"/v1/batches/{batch['id']}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = http.get(path)
            if answer.json()["status"] == "completed":
                return path, answer.content
            time.sleep(0.1)
    raise RuntimeError("the batch did not complete")  # pragma: no cover


class _Bare:
    """The bare app under uvicorn in a subprocess, answering ``body``."""

    def __init__(self, body: bytes) -> None:
        self.process, self.port = started(
            [sys.executable, *BARE],
            "the bare app",
            cwd=ROOT,
            env={**os.environ, "BATCHFSM_BENCH_BODY": body.hex()},
        )

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _drive(
    body: bytes, *targets: tuple[int, int, str, str | None]
) -> list[list[dict[str, float]]]:
    """The load generator's rounds for each target, every answer checked."""
    specs = []
    for port, pid, path, header in targets:
        spec = f"{port},{pid},{path}" + ("" if header is None else f",{header}")
        specs += ["--target", spec]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._load", *specs],
        input=body,
        capture_output=True,
        check=True,
        cwd=ROOT,
    )
    found: dict[str, Any] = json.loads(done.stdout)
    for target in found["targets"]:
        if target["wrong"]:
            raise RuntimeError(
                f"{target['wrong']} of {target['answers']} answers were not the batch"
            )
    return [target["rounds"] for target in found["targets"]]


class Duel:
    """``batchfsm serve [serve_args]`` and the bare app, driven by turns.

    Each call of :meth:`serve` starts both afresh (serve first, for the bytes
    the bare app answers), drives them round by round in turn and returns
    serve's median µs an answer; :meth:`bare` then returns the bare app's from
    the same run (the harness calls them in that order). :meth:`figures`
    sums up every round measured.
    """

    def __init__(self, *serve_args: str) -> None:
        self.serve_args = serve_args
        self.rounds: dict[str, list[dict[str, float]]] = {"serve": [], "bare": []}
        self._bare_us = 0.0

    def serve(self) -> float:
        with tempfile.TemporaryDirectory() as folder:
            args = [a.replace("{folder}", folder) for a in self.serve_args]
            server = _Server(*args)
            try:
                path, body = _completed_batch(server.base)
                bare = _Bare(body)
                try:
                    ours, theirs = _drive(
                        body,
                        (server.port, server.process.pid, path, "x-request-id"),
                        (bare.port, bare.process.pid, path, None),
                    )
                finally:
                    bare.close()
            finally:
                server.close()
        self.rounds["serve"] += ours
        self.rounds["bare"] += theirs
        self._bare_us = statistics.median(1e6 / r["per_second"] for r in theirs)
        return statistics.median(1e6 / r["per_second"] for r in ours)

    def bare(self) -> float:
        if not self._bare_us:
            self.serve()
        return self._bare_us

    def figures(self) -> dict[str, float]:
        """Median requests/s and server CPU µs an answer, each side; ratios.

        The ratio of requests/s is the median of the ratios of rounds run one
        after the other (serve's, then the bare app's, or the reverse).
        """
        serve, bare = self.rounds["serve"], self.rounds["bare"]
        rate = {
            k: statistics.median(r["per_second"] for r in v)
            for k, v in self.rounds.items()
        }
        cpu = {
            k: statistics.median(r["server_cpu_us"] for r in v)
            for k, v in self.rounds.items()
        }
        return {
            "serve_per_second": rate["serve"],
            "bare_per_second": rate["bare"],
            "ratio": statistics.median(
                s["per_second"] / b["per_second"]
                for s, b in zip(serve, bare, strict=True)
            ),
            "serve_cpu_us": cpu["serve"],
            "bare_cpu_us": cpu["bare"],
            "cpu_ratio": cpu["bare"] / cpu["serve"] if cpu["serve"] else 0.0,
            "rounds": len(serve),
        }


#: The duel of the default store; its case is in the table, its rounds below.
DEFAULT = Duel()


def serve_cases() -> list[Case]:
    return [
        Case(
            "serve retrieve /request",
            DEFAULT.serve,
            "bare Starlette app, same bytes",
            DEFAULT.bare,
            1 / TARGET,  # µs an answer: 1.25x the time is 0.8x the requests/s
        )
    ]


def _line(store: str, f: dict[str, float]) -> str:
    return (
        f"  {store:<7} {f['serve_per_second']:8,.0f} /s vs {f['bare_per_second']:8,.0f}"
        f" /s = {f['ratio']:4.2f}x   CPU an answer {f['serve_cpu_us']:4.0f} vs "
        f"{f['bare_cpu_us']:4.0f} µs = {f['cpu_ratio']:4.2f}x"
    )


def serve_figures(
    stores: tuple[str, ...] = ("memory", "sqlite"),
) -> tuple[list[str], dict[str, Any]]:
    """Lines and figures for each store: serve's requests/s against the bare app's.

    The memory store's duel is the table's (measured already if it ran);
    SQLite's is measured here, interleaved as the harness does.
    """
    figures: dict[str, Any] = {}
    for store in stores:
        duel = DEFAULT if store == "memory" else Duel("--db", "{folder}/db.sqlite")
        if not duel.rounds["serve"]:
            run(Case(store, duel.serve, "bare", duel.bare, 1 / TARGET))
        figures[store] = duel.figures()
    lines = [
        "batchfsm serve beside a bare Starlette app answering the same bytes "
        f"(goal: >= {TARGET}x its requests/s, default store; medians of "
        f"{figures[stores[0]]['rounds']} rounds each, taken in turns, "
        "8 keep-alive connections):",
        *(_line(store, f) for store, f in figures.items()),
    ]
    return lines, {"serve_vs_bare": figures}


def main() -> int:
    lines, _ = serve_figures()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
