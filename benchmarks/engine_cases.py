"""The engine's figures: cost per call with batches in flight, creating many
batches at one instant, a files list's cost with many files stored, latency
over HTTP while a big batch runs, peak memory while it runs and while serve
takes a 200 MiB upload, and a soak of concurrent clients.

Each function returns ``(lines, figures)``: lines to print (a growth table or a
figure) and a dict for the JSON file. Runnable alone against any checkout::

    python -m benchmarks.engine_cases [--soak-seconds 60]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2

import batchfsm as bf
from batchfsm.emulator import Emulator, FileObject, SQLiteStore, make_input_file

ENDPOINT = "/v1/chat/completions"
SIZES = (0, 1_000, 10_000, 100_000)
T0 = 1_700_000_000
Figures = dict[str, Any]


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    # As timeit does: a collection landing in one size's loop is noise.
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _in_flight(n: int) -> tuple[Emulator, str]:
    """An emulator with ``n`` unfinished batches (created, nothing due yet)."""
    emu = Emulator(validation_seconds=3_600)
    upload = emu.create_file(make_input_file(1), "in.jsonl", "batch")
    batch_id = ""
    for _ in range(max(n, 1)):
        batch_id = emu.create_batch(input_file_id=upload.id, endpoint=ENDPOINT).id
    return emu, batch_id


def retrieve_in_flight(sizes: tuple[int, ...] = SIZES) -> tuple[list[str], Figures]:
    """Microseconds per retrieve with 0 / 1k / 10k / 100k batches in flight."""
    figures: Figures = {}
    for n in sizes:
        emu, batch_id = _in_flight(n)
        runs = []
        with _no_gc():
            for _ in range(7):  # the best of seven: the machine is shared
                calls, start = 0, time.perf_counter()
                while calls < 2_000 and time.perf_counter() - start < 0.5:
                    emu.retrieve_batch(batch_id)
                    calls += 1
                runs.append((time.perf_counter() - start) / calls * 1e6)
        figures[str(n)] = min(runs)
    base = figures[str(sizes[0])]
    lines = ["retrieve with batches in flight (flat is the goal, <= 2x at 100k):"]
    lines += [
        f"  {int(n):>7,} in flight: {us:8.2f} µs/retrieve  ({us / base:5.2f}x)"
        for n, us in figures.items()
    ]
    return lines, {"retrieve_us_by_in_flight": figures}


def create_at_one_instant(
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000),
) -> tuple[list[str], Figures]:
    """Creating N batches at one instant of the clock: total and per batch."""
    figures: Figures = {}
    for n in sizes:
        emu = Emulator()
        upload = emu.create_file(make_input_file(1), "in.jsonl", "batch")
        with _no_gc():
            start = time.perf_counter()
            for _ in range(n):
                emu.create_batch(input_file_id=upload.id, endpoint=ENDPOINT)
            total = time.perf_counter() - start
        figures[str(n)] = {"seconds": total, "us_per_batch": total / n * 1e6}
    base = figures[str(sizes[0])]["us_per_batch"]
    lines = ["creating N batches at one instant (linear: per batch flat, <= 2x):"]
    lines += [
        f"  {int(n):>7,}: {f['seconds']:8.2f} s, {f['us_per_batch']:7.1f} µs/batch "
        f"({f['us_per_batch'] / base:5.2f}x)"
        for n, f in figures.items()
    ]
    return lines, {"create_at_one_instant": figures}


def _with_files(kind: str, n: int, folder: str) -> Emulator:
    """An emulator whose file store (memory or SQLite) holds ``n`` small files."""
    if kind == "memory":
        emu = Emulator()
    else:
        store = SQLiteStore(f"{folder}/files-{n}.sqlite")
        emu = Emulator(store=store, files=store.files, ids=store.ids())
    purposes = ("batch", "user_data")
    for i in range(n):
        emu.files.add(
            FileObject(
                id=f"file-{i:022x}", bytes=2, created_at=T0 + i, filename="a.jsonl",
                purpose=purposes[i % 2],
            ),
            b"{}",
        )  # fmt: skip
    return emu


def list_files_cost(sizes: tuple[int, ...] = SIZES) -> tuple[list[str], Figures]:
    """Microseconds per ``GET /v1/files?limit=1`` (and ``purpose``, ``after``,
    ``asc``) with 0 / 1k / 10k / 100k files stored, memory and SQLite."""
    figures: Figures = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("memory", "sqlite"):
            for n in sizes:
                emu = _with_files(kind, n, folder)
                middle = f"file-{n // 2:022x}" if n else None
                queries: list[dict[str, Any]] = [
                    {"limit": "1"},
                    {"limit": "1", "order": "asc", "purpose": "batch"},
                    {"limit": "1", "after": middle},
                ]
                runs = []
                with _no_gc():
                    for _ in range(5):  # the best of five: the machine is shared
                        calls, start = 0, time.perf_counter()
                        while calls < 600 and time.perf_counter() - start < 0.3:
                            emu.list_files(**queries[calls % 3])
                            calls += 1
                        runs.append((time.perf_counter() - start) / calls * 1e6)
                figures[f"{kind}:{n}"] = min(runs)
                closing = getattr(emu.batches, "close", None)
                if closing is not None:
                    closing()
    lines = ["GET /v1/files?limit=1 with N files stored (flat is the goal):"]
    for kind in ("memory", "sqlite"):
        base = figures[f"{kind}:{sizes[0]}"]
        lines += [
            f"  {kind:>6} {n:>7,} files: {figures[f'{kind}:{n}']:9.1f} µs/list  "
            f"({figures[f'{kind}:{n}'] / base:6.2f}x)"
            for n in sizes
        ]
    return lines, {"list_files_us_by_files": figures}


# -- over HTTP -------------------------------------------------------------------------


def started(
    command: list[str], what: str, **popen: Any
) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``command --port P`` on a free loopback port P; return once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    process = subprocess.Popen([*command, "--port", str(port)], **popen)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/v1/batches")
            return process, port
        except httpx2.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.02)


class _Server:
    """``batchfsm serve`` in a subprocess on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.process, self.port = started(
            [sys.executable, "-m", "batchfsm", "serve", *args], "batchfsm serve"
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def rss_peak_kib(self, field: str = "VmHWM:") -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
        return 0  # pragma: no cover

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _upload(http: httpx2.Client, content: bytes) -> str:
    answer = http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def _create(http: httpx2.Client, file_id: str) -> dict[str, Any]:
    answer = http.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
        },
    )
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def latency_while_a_big_batch_runs(
    lines_in_batch: int = 50_000, speed: str = "20000"
) -> tuple[list[str], Figures]:
    """p50/p99 of another batch's retrieve over HTTP while a 50,000-line batch runs."""
    server = _Server("--speed", speed)
    try:
        with httpx2.Client(base_url=server.base, timeout=120) as http:
            small = _create(http, _upload(http, make_input_file(1)))
            big = _create(http, _upload(http, make_input_file(lines_in_batch)))
            latencies: list[float] = []
            started = time.perf_counter()
            status = "validating"
            while status not in ("completed", "failed", "expired", "cancelled"):
                t0 = time.perf_counter()
                http.get(f"/v1/batches/{small['id']}").raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1e3)
                if len(latencies) % 20 == 0:
                    status = http.get(f"/v1/batches/{big['id']}").json()["status"]
                if time.perf_counter() - started > 600:
                    break
            ran = time.perf_counter() - started
        figures = {
            "p50_ms": _percentile(latencies, 0.5),
            "p99_ms": _percentile(latencies, 0.99),
            "max_ms": max(latencies),
            "calls": len(latencies),
            "batch_seconds": ran,
            "batch_status": status,
            "server_peak_rss_mib": server.rss_peak_kib() / 1024,
        }
    finally:
        server.close()
    return [
        f"retrieve over HTTP while a {lines_in_batch:,}-line batch runs "
        f"(--speed {speed}, goal p99 < 50 ms): p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms over "
        f"{figures['calls']:,} calls; the batch took {ran:.1f} s ({status})"
    ], {"http_latency_while_big_batch": figures}


def peak_memory_of_an_upload(megabytes: int = 200) -> tuple[list[str], Figures]:
    """Peak RSS growth of ``batchfsm serve`` taking one upload, against its size.

    Without ``--db`` (the memory store keeps the bytes: 1x is the floor) and
    with ``--db`` on SQLite (the bytes go to disk).
    """
    figures: Figures = {}
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/upload.jsonl"
        line = b'{"custom_id": "r", "method": "POST", "url": "/v1/embeddings"}\n'
        with open(path, "wb") as out:
            for _ in range(megabytes * 2**20 // len(line)):
                out.write(line)
        size = len(line) * (megabytes * 2**20 // len(line))
        for store, args in (("memory", ()), ("sqlite", ("--db", f"{folder}/db"))):
            server = _Server(*args)
            try:
                before = server.rss_peak_kib("VmRSS:")
                with (
                    httpx2.Client(base_url=server.base, timeout=600) as http,
                    open(path, "rb") as content,
                ):
                    answer = http.post(
                        "/v1/files",
                        files={"file": ("in.jsonl", content)},
                        data={"purpose": "batch"},
                    )
                    answer.raise_for_status()
                peak = server.rss_peak_kib()
            finally:
                server.close()
            growth = (peak - before) * 1024
            figures[store] = {
                "upload_bytes": size,
                "before_kib": before,
                "peak_kib": peak,
                "growth_over_upload": growth / size,
            }
            lines.append(
                f"peak RSS of serve taking a {size / 2**20:.0f} MiB upload ({store}"
                f" store): +{growth / 2**20:.0f} MiB = {growth / size:.2f}x the upload"
            )
    return lines, {"peak_rss_upload": figures}


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from batchfsm.emulator import Emulator, SQLiteStore, make_input_file

    def rss_kib(field="VmRSS:"):
        # VmHWM, not ru_maxrss: the latter keeps the parent's peak across exec.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])

    content = make_input_file(int(sys.argv[1]))
    if sys.argv[2] == "memory":
        emu = Emulator()
    else:
        store = SQLiteStore(sys.argv[2])
        emu = Emulator(store=store, files=store.files, ids=store.ids())
    upload = emu.create_file(content, "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
    try:  # the peak so far is making the input, not running it
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass
    before = rss_kib()
    emu.clock.advance(200_000)
    done = emu.retrieve_batch(batch.id)
    peak = rss_kib("VmHWM:")
    output = len(emu.file_content(done.output_file_id))
    print(json.dumps({"input_bytes": len(content), "before_kib": before,
                      "peak_kib": peak, "status": done.status.value,
                      "output_bytes": output}))
    """
)


def _big_batch_in_serve(lines_in_batch: int, *args: str) -> dict[str, Any]:
    """Upload and run a big batch in ``batchfsm serve``; its RSS before and peak."""
    content = make_input_file(lines_in_batch)
    server = _Server("--speed", "1000000", *args)
    try:
        with httpx2.Client(base_url=server.base, timeout=120) as http:
            file_id = _upload(http, content)
            refs = f"/proc/{server.process.pid}/clear_refs"
            with contextlib.suppress(OSError), open(refs, "w") as forget:
                forget.write("5")  # the peak so far is taking the upload
            before = server.rss_peak_kib("VmRSS:")
            batch = _create(http, file_id)
            while batch["status"] not in ("completed", "failed", "expired"):
                time.sleep(0.05)
                batch = http.get(f"/v1/batches/{batch['id']}").json()
            peak = server.rss_peak_kib()
            output = len(
                http.get(f"/v1/files/{batch['output_file_id']}/content").content
            )
    finally:
        server.close()
    return {"input_bytes": len(content), "before_kib": before, "peak_kib": peak,
            "status": batch["status"], "output_bytes": output}  # fmt: skip


def peak_memory_of_a_big_batch(
    lines_in_batch: int = 50_000,
) -> tuple[list[str], Figures]:
    """Peak RSS growth while a 50,000-line batch runs, against its input's size.

    Each in a fresh process, from the RSS once the input is stored to the
    peak while it runs: the emulator in-process on the memory store (the
    goal's figure) and on SQLite, and ``batchfsm serve`` taking the upload and
    running it over HTTP, on each store.
    """
    figures: Figures = {}
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        for how, store in (
            ("in-process", "memory"), ("in-process", "sqlite"),
            ("serve", "memory"), ("serve", "sqlite"),
        ):  # fmt: skip
            db = f"{folder}/{how}.sqlite"
            if how == "serve":
                found = _big_batch_in_serve(
                    lines_in_batch, *(("--db", db) if store == "sqlite" else ())
                )
            else:
                found = json.loads(
                    subprocess.run(
                        [sys.executable, "-c", _RSS_SCRIPT, str(lines_in_batch),
                         "memory" if store == "memory" else db],
                        capture_output=True, text=True, check=True,
                    ).stdout
                )  # fmt: skip
            growth = (found["peak_kib"] - found["before_kib"]) * 1024
            found["growth_over_input"] = growth / found["input_bytes"]
            figures[f"{how}:{store}"] = found
            peak, before = found["peak_kib"] / 1024, found["before_kib"] / 1024
            lines.append(
                f"  {how:<10} {store:<6}: +{growth / 2**20:5.1f} MiB = "
                f"{found['growth_over_input']:.2f}x (peak {peak:.0f} MiB, from "
                f"{before:.0f} MiB)"
            )
    size = figures["in-process:memory"]
    return [
        f"peak RSS while a {lines_in_batch:,}-line batch runs, over the RSS once "
        f"its {size['input_bytes'] / 2**20:.1f} MiB input is stored (goal < 4x the "
        f"input, in-process on the memory store; its output file is "
        f"{size['output_bytes'] / 2**20:.1f} MiB):",
        *lines,
    ], {"peak_rss_big_batch": figures}


def soak(
    clients: int = 50, seconds: float = 60.0, speed: str = "50"
) -> tuple[list[str], Figures]:
    """Many clients at once for a while: zero 5xx and a trace with no violation."""
    server = _Server("--speed", speed)
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    snapshots: dict[str, list[dict[str, Any]]] = {}
    errors: list[str] = []

    def client(k: int) -> None:
        rng = random.Random(k)
        mine: list[str] = []
        trace: dict[str, list[dict[str, Any]]] = {}
        with httpx2.Client(base_url=server.base, timeout=60) as http:

            def note(answer: httpx2.Response) -> httpx2.Response:
                # Only the batch's own client records it: one client's calls
                # are in order, answers racing to several clients are not.
                with lock:
                    statuses[answer.status_code] = (
                        statuses.get(answer.status_code, 0) + 1
                    )
                if answer.status_code == 200 and answer.url.path.startswith(
                    "/v1/batches"
                ):
                    data = answer.json()
                    page = data["data"] if data.get("object") == "list" else [data]
                    for item in page:
                        if item["id"] in mine or answer.request.method == "POST":
                            trace.setdefault(item["id"], []).append(item)
                return answer

            try:
                while time.monotonic() < stop:
                    roll = rng.random()
                    if roll < 0.15 or not mine:
                        content = make_input_file(rng.randint(1, 20))
                        if rng.random() < 0.1:
                            content += b"{oops\n"
                        note(
                            http.post(
                                "/v1/files",
                                files={"file": ("in.jsonl", content)},
                                data={"purpose": "batch"},
                            )
                        )
                        file_id = http.get("/v1/files").json()["data"][0]["id"]
                        made = note(
                            http.post(
                                "/v1/batches",
                                json={
                                    "input_file_id": file_id,
                                    "endpoint": ENDPOINT,
                                    "completion_window": "24h",
                                },
                            )
                        )
                        if made.status_code == 200:
                            mine.append(made.json()["id"])
                    elif roll < 0.2:
                        note(http.post(f"/v1/batches/{rng.choice(mine)}/cancel"))
                    elif roll < 0.3:
                        note(http.get("/v1/batches", params={"limit": 10}))
                    else:
                        note(http.get(f"/v1/batches/{rng.choice(mine)}"))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                with lock:
                    errors.append(repr(exc))
        with lock:
            snapshots.update(trace)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.close()
    ordered = [s for trace in snapshots.values() for s in trace]
    violations = bf.check_trace(ordered)
    fivexx = sum(n for code, n in statuses.items() if code >= 500)
    requests = sum(statuses.values())
    figures = {
        "clients": clients,
        "seconds": seconds,
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "5xx": fivexx,
        "check_trace_violations": len(violations),
        "batches": len(snapshots),
        "client_errors": errors[:5],
    }
    return [
        f"soak: {clients} clients for {seconds:g} s: {requests:,} requests "
        f"({requests / seconds:,.0f}/s), {len(snapshots):,} batches, "
        f"{fivexx} 5xx, {len(violations)} check_trace violations, "
        f"{len(errors)} client errors; statuses {figures['statuses']}"
    ], {"soak": figures}


def engine_figures(soak_seconds: float = 60.0) -> tuple[list[str], Figures]:
    """Every figure of this module, in order."""
    lines: list[str] = []
    figures: Figures = {}
    for measure in (
        retrieve_in_flight,
        create_at_one_instant,
        list_files_cost,
        latency_while_a_big_batch_runs,
        peak_memory_of_a_big_batch,
        peak_memory_of_an_upload,
        lambda: soak(seconds=soak_seconds),
    ):
        more_lines, more = measure()
        print("\n".join(more_lines), flush=True)
        lines += more_lines
        figures |= more
    return lines, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_cases")
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--only", action="append", help="a function of this module")
    parser.add_argument(
        "--max-size", type=int, default=100_000, help="skip larger N (slow engines)"
    )
    args = parser.parse_args(argv)
    if args.only:
        figures: Figures = {}
        for name in args.only:
            fn = globals()[name]
            if name == "soak":
                lines, more = fn(seconds=args.soak_seconds)
            elif name in ("retrieve_in_flight", "list_files_cost"):
                lines, more = fn(tuple(n for n in SIZES if n <= args.max_size))
            elif name == "create_at_one_instant":
                lines, more = fn(tuple(n for n in SIZES[1:] if n <= args.max_size))
            else:
                lines, more = fn()
            print("\n".join(lines), flush=True)
            figures |= more
    else:
        _, figures = engine_figures(args.soak_seconds)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
