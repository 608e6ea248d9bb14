"""What ``batchfsm serve`` holds in memory for big content, on each store.

``python -m benchmarks.memory_cases [--json PATH]`` (also part of ``python -m
benchmarks``) starts ``serve`` on the memory store, on SQLite and on a
throwaway PostgreSQL cluster, and reads its resident memory from ``/proc``:

- **downloads**: a 120 MB file uploaded, then downloaded by four clients at
  once; the figure is the peak resident memory added over the moment before
  (the kernel's high-water mark, reset through ``clear_refs``). Goal: < 64 MB.
- **big batch**: an embeddings batch whose output is ≥ 250 MB (600 lines of
  16 inputs of 3,072 dimensions); the peak added while it runs (goal: < 200 MB)
  and what is still held 3 s after it ended (goal: within 20 MB of before).
- **huge lines**: the same with 5 lines of 2,000 inputs of 3,072 dimensions,
  each line's answer 56 MB of JSON (the most one request may ask for is
  2,048 inputs): the line is never held as Python floats, and each is
  stored in pieces of 1 MiB.

On the memory store the output file itself lives in memory, so its figures
count the file: the goals are for the database stores.

With ``--json PATH`` the lines and figures are written into the benchmarks
JSON the docs render (``docs/_data/benchmarks.json``), replacing this
module's earlier ones and keeping the rest of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2

from batchfsm._postgres_cluster import PostgresUnavailableError, cluster, new_database

from .engine_cases import _Server

__all__ = ["figures", "main"]

MB = 10**6
MiB = 1 << 20
#: The downloaded file, and how many download it at once.
DOWNLOAD_BYTES = 120 * MB
DOWNLOADS = 4
#: The big batch: lines, inputs a line, dimensions an input.
BATCH_LINES, INPUTS, DIMENSIONS = 600, 16, 3072
#: The batch of huge lines: lines, inputs a line (3,072 dimensions too).
HUGE_LINES, HUGE_INPUTS = 5, 2000
#: What a figure's first field says, so a rerun replaces its own lines.
HEADING = "content memory"


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # the high-water mark starts again from now


def _download(base: str, file_id: str, digests: list[str]) -> None:
    digest = hashlib.sha256()
    with (
        httpx2.Client(base_url=base, timeout=600) as http,
        http.stream("GET", f"/v1/files/{file_id}/content") as answer,
    ):
        answer.raise_for_status()
        for data in answer.iter_bytes(1 << 16):
            digest.update(data)
    digests.append(digest.hexdigest())


def downloads(args: list[str]) -> float:
    """MB of resident memory four concurrent downloads added to ``serve``."""
    server = _Server("--speed", "1", *args)
    try:
        pid = server.process.pid
        content = (b"0123456789abcdef" * (DOWNLOAD_BYTES // 16 + 1))[:DOWNLOAD_BYTES]
        expected = hashlib.sha256(content).hexdigest()
        with httpx2.Client(base_url=server.base, timeout=600) as http:
            answer = http.post(
                "/v1/files",
                files={"file": ("big.bin", content)},
                data={"purpose": "user_data"},
            )
            answer.raise_for_status()
        del content
        file_id = answer.json()["id"]
        time.sleep(1)
        before = _status(pid, "VmRSS:")
        _reset_peak(pid)
        digests: list[str] = []
        threads = [
            threading.Thread(target=_download, args=(server.base, file_id, digests))
            for _ in range(DOWNLOADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if digests != [expected] * DOWNLOADS:
            raise RuntimeError("a download did not answer the file")
        return (_status(pid, "VmHWM:") - before) / MB
    finally:
        server.close()


def _embeddings_input(lines: int, inputs: int) -> bytes:
    line = json.dumps(
        {
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {
                "model": "text-embedding-3-large",
                "input": ["a few words"] * inputs,
                "dimensions": DIMENSIONS,
            },
        }
    )
    return b"".join(
        f'{{"custom_id": "r{n}", {line[1:]}\n'.encode() for n in range(lines)
    )


def big_batch(
    args: list[str], lines: int = BATCH_LINES, inputs: int = INPUTS
) -> tuple[float, float, float]:
    """MB of output, peak MB added while it ran, MB still added 3 s after it ended."""
    server = _Server("--speed", "1000", *args)
    try:
        pid = server.process.pid
        with httpx2.Client(base_url=server.base, timeout=600) as http:
            answer = http.post(
                "/v1/files",
                files={"file": ("in.jsonl", _embeddings_input(lines, inputs))},
                data={"purpose": "batch"},
            )
            answer.raise_for_status()
            time.sleep(1)
            before = _status(pid, "VmRSS:")
            _reset_peak(pid)
            batch = http.post(
                "/v1/batches",
                json={
                    "input_file_id": answer.json()["id"],
                    "endpoint": "/v1/embeddings",
                    "completion_window": "24h",
                },
            ).json()
            while batch["status"] not in ("completed", "failed", "expired"):
                time.sleep(0.2)
                batch = http.get(f"/v1/batches/{batch['id']}").json()
            if batch["status"] != "completed" or not batch["output_file_id"]:
                raise RuntimeError(f"the big batch ended {batch['status']}")
            peak = _status(pid, "VmHWM:")
            output = http.get(f"/v1/files/{batch['output_file_id']}").json()["bytes"]
            time.sleep(3)
            after = _status(pid, "VmRSS:")
        return output / MB, (peak - before) / MB, (after - before) / MB
    finally:
        server.close()


@contextlib.contextmanager
def _stores() -> Iterator[list[tuple[str, Callable[[], list[str]] | str]]]:
    with tempfile.TemporaryDirectory() as folder:
        numbers = iter(range(1_000))
        stores: list[tuple[str, Callable[[], list[str]] | str]] = [
            ("memory", list),
            ("SQLite", lambda: ["--db", f"{folder}/{next(numbers)}.sqlite"]),
        ]
        try:
            with cluster() as server:
                stores.append(("PostgreSQL", lambda: ["--db", new_database(server)]))
                yield stores
        except PostgresUnavailableError as exc:
            stores.append(("PostgreSQL", f"unavailable ({exc})"))
            yield stores


def figures() -> tuple[list[str], dict[str, Any]]:
    """The report's lines and the figures (MB), per store."""
    lines = [
        f"{HEADING}: resident memory serve adds (MB; goals: downloads < 64, "
        "batch peak < 200, after < 20)",
        f"    {'store':<11} {DOWNLOADS} downloads of 120 MB   batch output   "
        "batch peak   after it ended",
    ]
    found: dict[str, Any] = {}
    with _stores() as stores:
        for name, make in stores:
            if isinstance(make, str):
                lines.append(f"    {name:<11} {make}")
                continue
            added = downloads(make())
            found[name] = {"downloads_added_mb": round(added, 1)}
            for key, shape in (
                ("batch", (BATCH_LINES, INPUTS)),
                ("huge_lines", (HUGE_LINES, HUGE_INPUTS)),
            ):
                output, peak, after = big_batch(make(), *shape)
                found[name] |= {
                    f"{key}_output_mb": round(output, 1),
                    f"{key}_peak_added_mb": round(peak, 1),
                    f"{key}_after_added_mb": round(after, 1),
                }
                shown = f"{added:>22.1f}" if key == "batch" else " " * 22
                label = name if key == "batch" else f"  {shape[0]} lines"
                lines.append(
                    f"    {label:<11} {shown}   {output:>12.1f}   {peak:>10.1f}"
                    f"   {after:>14.1f}"
                )
    lines.append(
        "    (the memory store keeps every file in memory: its batch figures "
        f"count the output file; '{HUGE_LINES} lines': {HUGE_INPUTS:,} inputs "
        "a line, 56 MB of output each)"
    )
    return lines, found


def record(path: Path, lines: list[str], found: dict[str, Any]) -> None:
    """Write ``lines`` and ``found`` into the run's JSON at ``path``, replacing ours."""
    data = json.loads(path.read_text(encoding="utf-8"))
    extras: list[str] = data.get("extras", [])
    start = next((i for i, x in enumerate(extras) if x.startswith(HEADING)), None)
    if start is not None:  # our block: the heading and its indented lines
        end = start + 1
        while end < len(extras) and extras[end].startswith("    "):
            end += 1
        del extras[start:end]
    data["extras"] = [*extras, *lines]
    data.setdefault("engine", {})["content_memory"] = found
    path.write_text(
        json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_cases")
    parser.add_argument("--json", metavar="PATH", help="record into this run's JSON")
    args = parser.parse_args(argv)
    lines, found = figures()
    print("\n".join(lines), flush=True)
    if args.json:
        record(Path(args.json), lines, found)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
