"""The emulator's cases: input validation, memory per batch, HTTP, and growth."""

from __future__ import annotations

import io
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Final

import httpx2
import openai

import batchfsm as bf
from batchfsm.emulator import (
    Emulator,
    EmulatorTransport,
    MemoryBatchStore,
    VirtualClock,
    Work,
    create_app,
    make_input_file,
    validate_input,
)

from ._harness import Case, bytes_per_item, per_call, sized
from .cases import _trace

ENDPOINT: Final = "/v1/chat/completions"


def _stored(store: MemoryBatchStore) -> Callable[[int], object]:
    def make(i: int) -> object:
        batch = bf.new_batch(
            id=f"batch_{i:032x}",
            input_file_id="file-7Yq1hGQm2WcDx9sPZt4kLn",
            endpoint=ENDPOINT,
            created_at=1_764_073_668,
        )
        store.insert(batch, Work(due_at=batch.created_at + 1))
        return None  # the store holds it

    return make


def emulator_cases(peer_memory: Callable[[int], object]) -> list[Case]:
    content = make_input_file(50_000)
    lines = content.splitlines()
    return [
        Case(
            "validate 50,000 lines",
            per_call(lambda: validate_input(content, ENDPOINT), repeat=3),
            "json.loads of every line alone",
            per_call(lambda: [json.loads(line) for line in lines], repeat=3),
            1.5,
            unit="µs",
            rounds=sized(5, quick=3),
        ),
        Case(
            "memory per batch (emulator)",
            lambda: bytes_per_item(_stored(MemoryBatchStore()))(),
            "transitions model, shared machine",
            bytes_per_item(peer_memory),
            1.0,
            limit=1536,
            unit="B",
            rounds=sized(3, quick=2),  # bytes: the same each round
        ),
    ]


# -- figures with no peer ------------------------------------------------------------


def growth() -> list[str]:
    """Per-item cost at 1k, 10k and 100k: linear growth keeps these flat."""
    lines = ["growth (per item; flat means linear):"]
    for n in (1_000, 10_000, 100_000):
        memory = bytes_per_item(_stored(MemoryBatchStore()), n=n)()
        trace = _trace(n)
        start = time.perf_counter()
        bf.check_trace(trace)
        per_snapshot = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        validate_input(make_input_file(n // 2), ENDPOINT)
        per_line = (time.perf_counter() - start) / (n // 2) * 1e6
        lines.append(
            f"  {n:>7,}: {memory:7.0f} B/batch stored, check_trace "
            f"{per_snapshot:5.2f} µs/snapshot, validation {per_line:5.2f} µs/line"
        )
    return lines


def openai_client_200_batches() -> str:
    """The official client runs 200 small batches to completion, in-process."""
    clock = VirtualClock()
    emulator = Emulator(clock=clock)
    http = httpx2.Client(transport=EmulatorTransport(create_app(emulator)))
    client = openai.OpenAI(api_key="sk", base_url="http://e/v1", http_client=http)
    start = time.perf_counter()
    ids = []
    for _ in range(200):
        upload = client.files.create(
            file=("in.jsonl", io.BytesIO(make_input_file(3))), purpose="batch"
        )
        ids.append(
            client.batches.create(
                input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h"
            ).id
        )
    clock.advance(60)
    done = sum(client.batches.retrieve(i).status == "completed" for i in ids)
    elapsed = time.perf_counter() - start
    http.close()
    return (
        f"openai client, 200 small batches to completion (in-process): "
        f"{elapsed:.2f} s, {done} completed"
    )


def http_retrieve_rps(requests: int = 2_000) -> str:
    """Retrieve requests per second against `batchfsm serve` over loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "batchfsm", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        ready = time.perf_counter()
        while True:
            try:
                httpx2.get(f"{base}/v1/batches")
                break
            except httpx2.TransportError:
                time.sleep(0.01)
        started = time.perf_counter() - ready
        with httpx2.Client(base_url=base) as http:
            upload = http.post(
                "/v1/files",
                files={"file": ("in.jsonl", make_input_file(1))},
                data={"purpose": "batch"},
            ).json()
            batch = http.post(
                "/v1/batches",
                json={
                    "input_file_id": upload["id"],
                    "endpoint": ENDPOINT,
                    "completion_window": "24h",
                },
            ).json()
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(requests):
                    http.get(f"/v1/batches/{batch['id']}")
                runs.append(requests / (time.perf_counter() - start))
        return (
            f"batchfsm serve: ready in {started:.2f} s; retrieve "
            f"{statistics.median(runs):,.0f} requests/s (one client, loopback)"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
