"""200 client flows through the official client: the fast lane beside llmock.

One flow is what a test suite's client code does: upload a 3-line input file,
create a batch, retrieve it until it is terminal (a 50 ms wait between polls
that find it running), download its output. Both servers run as users run
them, each in a process of its own on loopback, under uvicorn with h11 and the
loop uvicorn picks, the access log on: ``python -m batchfsm serve
--finish-on-retrieve`` (memory store) and llmock's app
(:mod:`benchmarks._llmock_app`, its batch delay 0). The same client process
drives both by turns (ours, llmock, ours, ...), 200 flows a round. Each
side's polls per flow are checked: one retrieve each, or the comparison would
not be like for like.

The figure is the server's CPU time a flow (its process's user + system time,
from ``/proc``): a flow in the fast lane waits for nothing, so it is CPU-bound,
and on a shared machine (2 cores, many tenants) its wall time swings with the
other tenants' load far more than with either server. The wall time and the
client's CPU time a flow are reported beside it (:func:`beside`): the client's
is larger against batchfsm, whose Batch objects carry every field the API's do
(``usage`` and its details, ``model``), which the client validates. The
target: at most 1.0x llmock's.

``python -m benchmarks.llmock_cases`` prints the figure alone.
"""

from __future__ import annotations

import atexit
import importlib.util
import io
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from batchfsm.emulator import make_input_file

from ._harness import Case, run, table
from .engine_cases import started

__all__ = ["beside", "llmock_cases"]

ROOT = Path(__file__).resolve().parent.parent
FLOWS = 200
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
CONTENT = make_input_file(3)
UVICORN = (
    "-m", "uvicorn", "benchmarks._llmock_app:app", "--host", "127.0.0.1",
    "--http", "h11", "--loop", "auto", "--workers", "1", "--lifespan", "off",
    "--ws", "none",
)  # fmt: skip


class _Side:
    """One server in a subprocess, started at first use, and a client of it."""

    def __init__(self, command: list[str], what: str) -> None:
        self.command, self.what = command, what
        self.client: Any = None
        self.process: subprocess.Popen[bytes] | None = None
        self.polls: list[int] = []
        #: Per round, ms a flow: wall time, the client's CPU time.
        self.wall: list[float] = []
        self.client_cpu: list[float] = []

    def flows(self) -> float:
        """The server's CPU milliseconds a flow, over one round of FLOWS flows."""
        if self.client is None:
            self._start()
        assert self.process is not None
        server, client = _cpu(self.process.pid), time.process_time()
        begin = time.perf_counter()
        for _ in range(FLOWS):
            self.polls.append(_flow(self.client))
        self.wall.append((time.perf_counter() - begin) / FLOWS * 1e3)
        self.client_cpu.append((time.process_time() - client) / FLOWS * 1e3)
        if self.polls[-FLOWS:] != [1] * FLOWS:
            raise RuntimeError(f"{self.what}: polls a flow {set(self.polls)}, not 1")
        return (_cpu(self.process.pid) - server) / FLOWS * 1e3

    def _start(self) -> None:
        import openai

        self.process, port = started(self.command, self.what, cwd=ROOT)
        atexit.register(self.close)
        self.client = openai.OpenAI(
            api_key="sk-bench", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        )

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the process ``pid`` has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _flow(client: Any) -> int:
    """Upload, create, retrieve until terminal, download; the retrieves made."""
    upload = client.files.create(
        file=("in.jsonl", io.BytesIO(CONTENT)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    polls = 0
    while True:
        batch = client.batches.retrieve(batch.id)
        polls += 1
        if batch.status in TERMINAL:
            break
        time.sleep(0.05)
    if batch.status != "completed" or batch.output_file_id is None:
        raise RuntimeError(f"a flow's batch ended {batch.status}")
    lines = client.files.content(batch.output_file_id).text.splitlines()
    if len(lines) != 3:
        raise RuntimeError(f"a flow's output holds {len(lines)} lines, not 3")
    return polls


#: The two sides, once made: batchfsm's, then llmock's.
_SIDES: list[_Side] = []


def llmock_cases() -> list[Case]:
    """The fast lane beside llmock; none when llmock is not installed."""
    if importlib.util.find_spec("llmock") is None:
        print("llmock is not installed (the bench extra has it): "
              "no fast-lane figure", file=sys.stderr)  # fmt: skip
        return []
    from importlib.metadata import version

    _SIDES[:] = [
        _Side(
            [sys.executable, "-m", "batchfsm", "serve", "--finish-on-retrieve"],
            "batchfsm serve --finish-on-retrieve",
        ),
        _Side([sys.executable, *UVICORN], "llmock"),
    ]
    ours, peer = _SIDES
    return [
        Case(
            f"{FLOWS} flows, server CPU",
            ours.flows,
            f"llmock {version('llmock')} (fast lane)",
            peer.flows,
            target=1.0,
            unit="ms",
        )
    ]


def beside() -> str:
    """The wall time and the client's CPU a flow, each side, as measured."""
    if len(_SIDES) < 2 or not _SIDES[0].wall:
        return "fast lane beside llmock: not measured"
    ours, peer = _SIDES
    wall = [o / p for o, p in zip(ours.wall, peer.wall, strict=True)]
    client = [o / p for o, p in zip(ours.client_cpu, peer.client_cpu, strict=True)]
    return (
        f"{FLOWS} client flows, fast lane beside llmock (median of per-round ratios, "
        f"min-max): wall time {statistics.median(wall):.2f}x "
        f"({min(wall):.2f}-{max(wall):.2f}; {statistics.median(ours.wall):.1f} vs "
        f"{statistics.median(peer.wall):.1f} ms a flow), the client's CPU "
        f"{statistics.median(client):.2f}x ({min(client):.2f}-{max(client):.2f})"
    )


if __name__ == "__main__":
    print(table([run(case) for case in llmock_cases()]))
    print(beside())
