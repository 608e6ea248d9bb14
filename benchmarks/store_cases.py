"""The stores side by side: memory, SQLite, PostgreSQL; one vs two serve processes.

``python -m benchmarks.store_cases`` (also part of ``python -m benchmarks``)
prints, for each store, conditional transitions per second and a retrieve's
latency (p50/p99), each with its ratio to the memory store; then the work
throughput and the retrieve rate of one and of two ``serve`` processes on one
PostgreSQL database, as a ratio; then what leases cost: a heartbeat's renewal
and the look for dead processes, and how long after a ``kill -9`` another
``serve`` process takes the batch over (``python -m benchmarks.store_cases
leases`` prints only these). PostgreSQL runs in a throwaway cluster the
benchmark starts (as the tests do); where it cannot, its rows say why.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2

import batchfsm as bf
from batchfsm._postgres_cluster import (
    PostgresUnavailableError,
    cluster,
    new_database,
    server_processes,
)
from batchfsm.emulator import (
    BatchStore,
    Emulator,
    FileObject,
    FileStore,
    IdSource,
    MemoryBatchStore,
    MemoryIds,
    SQLiteStore,
    SystemClock,
    Work,
    make_input_file,
    open_store,
)

from ._load import cpu_seconds
from ._serving import Server, create, owner_pid, sql, upload

S = bf.BatchStatus
#: The cores of this machine: every process of a benchmark shares them.
CORES = os.cpu_count() or 1
T0 = 1_700_000_000


def _batch(i: int) -> bf.Batch:
    return bf.new_batch(
        id=f"batch_{i:032x}", input_file_id="file-in", endpoint="/v1/embeddings",
        created_at=T0,
    )  # fmt: skip


def transitions_per_second(store: BatchStore, n: int = 300) -> float:
    """Conditional writes a second: ``n`` batches started, finalized, completed."""
    batches = [_batch(i) for i in range(n)]
    for b in batches:
        store.insert(b, Work(due_at=T0 + 1))
    moves = []
    for b in batches:
        started = bf.advance(b, "start", at=T0 + 1)
        finalizing = bf.advance(started, "finalize", at=T0 + 2)
        done = bf.advance(finalizing, "complete", at=T0 + 3)
        moves.append((started, finalizing, done))
    begin = time.perf_counter()
    for started, finalizing, done in moves:
        # Each write moves the epoch on: 0, then 1, then 2.
        assert store.write(started, Work(due_at=T0 + 2), status=S.VALIDATING, epoch=0)
        assert store.write(
            finalizing, Work(due_at=T0 + 3), status=S.IN_PROGRESS, epoch=1
        )
        assert store.write(done, None, status=S.FINALIZING, epoch=2)
    return 3 * n / (time.perf_counter() - begin)


def retrieve_latency(
    store: BatchStore, files: FileStore, ids: IdSource, n: int = 2_000
) -> tuple[float, float]:
    """p50 and p99 µs of ``Emulator.retrieve_batch`` with its worker running."""
    emulator = Emulator(
        clock=SystemClock(1.0), store=store, files=files, ids=ids
    )  # the worker runs, as under serve: a retrieve only reads
    upload = emulator.create_file(make_input_file(5), "in.jsonl", "batch")
    made = [
        emulator.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
        for _ in range(20)
    ]
    emulator.start()
    try:
        times = []
        for i in range(n):
            batch_id = made[i % len(made)].id
            begin = time.perf_counter()
            emulator.retrieve_batch(batch_id)
            times.append((time.perf_counter() - begin) * 1e6)
    finally:
        emulator.stop()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def read_seconds_per_mb(files: FileStore, megabytes: int) -> float:
    """Seconds per MB to read a ``megabytes`` file in the engine's 64 KiB slices.

    The same at 4 and at 16 MB when a slice costs its size; growing with the
    file when each slice reads the whole stored value (quadratic in all).
    """
    content = make_input_file(megabytes * 1_024 * 1_024 // 167)
    file = FileObject(
        id=f"file-read-{megabytes}", bytes=len(content), created_at=T0,
        filename="in.jsonl", purpose="batch",
    )  # fmt: skip
    files.add(file, content)
    begin, offset = time.perf_counter(), 0
    while data := files.read(file.id, offset, 1 << 16):
        offset += len(data)
    assert offset == len(content)
    return (time.perf_counter() - begin) / (len(content) / 1e6)


@contextlib.contextmanager
def _postgres() -> Iterator[Callable[[], str] | str]:
    """A factory of new databases on a throwaway cluster, or why there is none."""
    try:
        with cluster() as server:
            yield lambda: new_database(server)
    except PostgresUnavailableError as exc:
        yield f"unavailable ({exc})"


def _stores(
    folder: Path, postgres: Callable[[], str] | str
) -> Iterator[tuple[str, Callable[[], tuple[BatchStore, FileStore, IdSource]] | str]]:
    def memory() -> tuple[BatchStore, FileStore, IdSource]:
        store = MemoryBatchStore()
        return store, store.files, MemoryIds()

    yield "memory", memory
    paths = iter(folder / f"{n}.sqlite" for n in range(1_000))

    def sqlite() -> tuple[BatchStore, FileStore, IdSource]:
        store = SQLiteStore(next(paths))
        return store, store.files, store.ids()

    yield "SQLite (WAL)", sqlite
    if isinstance(postgres, str):
        yield "PostgreSQL", postgres
        return
    make_db = postgres

    def pg() -> tuple[BatchStore, FileStore, IdSource]:
        store = open_store(make_db())
        return store, store.files, store.ids()

    yield "PostgreSQL", pg


def store_table(postgres: Callable[[], str] | str) -> list[str]:
    lines = [
        "stores (ratios against the memory store; PostgreSQL fsync=off):",
        f"    {'store':<14} {'transitions/s':>14} {'time ratio':>11}"
        f" {'retrieve p50':>13} {'p99':>10} {'p50 ratio':>10}",
    ]
    base: tuple[float, float] | None = None
    reads: list[tuple[str, Callable[[], tuple[BatchStore, FileStore, IdSource]]]] = []
    with tempfile.TemporaryDirectory() as folder:
        for name, make in _stores(Path(folder), postgres):
            if isinstance(make, str):
                lines.append(f"    {name:<14} {make}")
                continue
            rates, p50s, p99s = [], [], []
            for _ in range(3):
                store, files, ids = make()
                rates.append(transitions_per_second(store))
                store, files, ids = make()
                p50, p99 = retrieve_latency(store, files, ids)
                p50s.append(p50)
                p99s.append(p99)
            rate, p50, p99 = (statistics.median(x) for x in (rates, p50s, p99s))
            base = base or (rate, p50)
            lines.append(
                f"    {name:<14} {rate:>14,.0f} {base[0] / rate:>10,.0f}x"
                f" {p50:>10.0f} µs {p99:>7.0f} µs {p50 / base[1]:>9,.0f}x"
            )
            reads.append((name, make))
        lines.append("    reading a file in 64 KiB slices (ms per MB; flat: linear):")
        for name, make in reads:
            _, files, _ = make()
            small, large = (read_seconds_per_mb(files, mb) * 1e3 for mb in (4, 16))
            lines.append(
                f"    {name:<14} 4 MB {small:>8.2f}   16 MB {large:>8.2f}"
                f"   16 vs 4: {large / small:.1f}x"
            )
    return lines


def _serve_throughput(
    db: str, processes: int, batches: int = 20
) -> tuple[float, float]:
    """Seconds to run ``batches`` batches of 200 requests, and retrieves/s."""

    servers = [Server(db, "--speed", "1000000") for _ in range(processes)]
    try:
        file_id = upload(servers[0], 200)
        begin = time.perf_counter()
        made = [create(servers[i % processes], file_id)["id"] for i in range(batches)]
        pending = set(made)
        while pending:
            for batch_id in list(pending):
                answer = servers[0].http.get(f"/batches/{batch_id}")
                if answer.json()["status"] == "completed":
                    pending.discard(batch_id)
            time.sleep(0.01)
        work_seconds = time.perf_counter() - begin
        # Retrieve rate: two clients per process, each on its own connection.
        count = [0]
        stop = time.perf_counter() + 3
        lock = threading.Lock()

        def client(server_index: int) -> None:
            with httpx2.Client(base_url=servers[server_index].base) as http:
                while time.perf_counter() < stop:
                    http.get(f"/batches/{made[0]}")
                    with lock:
                        count[0] += 1

        threads = [
            threading.Thread(target=client, args=(i % processes,)) for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return work_seconds, count[0] / 3
    finally:
        for server in servers:
            server.stop()


def serve_table(postgres: Callable[[], str] | str) -> list[str]:
    if isinstance(postgres, str):
        return [f"serve processes on PostgreSQL: {postgres}"]
    one = _serve_throughput(postgres(), 1)
    two = _serve_throughput(postgres(), 2)
    return [
        "serve processes on one PostgreSQL (fsync=off; 20 batches x 200 requests;"
        " 4 clients):",
        f"    1 process : work {one[0]:.2f} s, retrieve {one[1]:,.0f} requests/s",
        f"    2 processes: work {two[0]:.2f} s, retrieve {two[1]:,.0f} requests/s",
        f"    2 vs 1: work {one[0] / two[0]:.2f}x as fast,"
        f" retrieve {two[1] / one[1]:.2f}x the requests/s",
    ]


def _retrieves(
    server: Any, batch_id: str, clients: int = 4, seconds: float = 3.0
) -> tuple[float, float, float]:
    """Retrieves a second, p50 and p99 ms, from ``clients`` concurrent clients."""
    times: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        mine = []
        with httpx2.Client(base_url=server.base, timeout=60) as http:
            while (begin := time.perf_counter()) < stop:
                assert http.get(f"/batches/{batch_id}").status_code == 200
                mine.append((time.perf_counter() - begin) * 1e3)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times.sort()
    return len(times) / seconds, statistics.median(times), times[int(len(times) * 0.99)]


def _serve_retrieve(db: str) -> tuple[tuple[float, float, float], ...]:
    """Retrieves over HTTP on one ``serve --db``: idle, beside a download, busy."""

    # 1,000 emulated seconds a second: each running batch runs 1,000 requests
    # a second, and no file expires within the run.
    server = Server(db, "--speed", "1000")
    try:
        small = create(server, upload(server, 1))["id"]
        idle = _retrieves(server, small)
        big = upload(server, 20_000)  # 3.4 MB
        stop = threading.Event()

        def download() -> None:
            with httpx2.Client(base_url=server.base, timeout=60) as http:
                while not stop.is_set():
                    answer = http.get(f"/files/{big}/content")
                    assert answer.status_code == 200, answer.text

        downloader = threading.Thread(target=download)
        downloader.start()
        try:
            beside = _retrieves(server, small)
        finally:
            stop.set()
            downloader.join()
        made = [create(server, big)["id"] for _ in range(4)]  # the worker is busy
        busy = _retrieves(server, small)
        still = server.http.get(f"/batches/{made[-1]}").json()["status"]
        assert still not in {"completed", "failed"}, "the batches ended too soon"
        return idle, beside, busy
    finally:
        server.stop()


def serve_retrieve_table(
    sqlite_db: str, postgres: Callable[[], str] | str
) -> list[str]:
    """Retrieve rate and latency over HTTP, ``serve --db`` SQLite and PostgreSQL."""
    lines = [
        "retrieve over HTTP on serve --db (4 clients, 3 s each; requests/s,"
        " p50 and p99 ms; PostgreSQL fsync=off):",
        "    idle; beside one client downloading a 3.4 MB file in a loop;"
        " busy: while 4 batches of 20,000 requests run",
        f"    {'store':<11} {'idle':>18} {'beside a download':>22} {'busy':>22}",
    ]
    dbs: list[tuple[str, str]] = [("SQLite", sqlite_db)]
    if isinstance(postgres, str):
        lines.append(f"    PostgreSQL  {postgres}")
    else:
        dbs.append(("PostgreSQL", postgres()))
    for name, db in dbs:
        cells = [
            f"{rate:>6,.0f} {p50:>5.1f} {p99:>5.1f}"
            for rate, p50, p99 in _serve_retrieve(db)
        ]
        lines.append(f"    {name:<11} {cells[0]:>18} {cells[1]:>22} {cells[2]:>22}")
    return lines


def _heartbeat_costs(db: str, n: int = 500) -> tuple[float, float]:
    """Median µs of one renewal of a store's heartbeat, and of one look for the dead.

    With three other stores' heartbeats in the table (processes sharing it).
    """
    stores = [open_store(db) for _ in range(4)]
    store = stores[0]
    try:
        renewals, looks = [], []
        for _ in range(n):
            begin = time.perf_counter()
            store._renew()
            renewals.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            store._reclaim()
            looks.append(time.perf_counter() - begin)
        return statistics.median(renewals) * 1e6, statistics.median(looks) * 1e6
    finally:
        for each in stores:
            each.close()


def _takeover_seconds(db: str, lease: str, elsewhere: bool) -> float:
    """Seconds from a holder's SIGKILL until another ``serve`` took its batch.

    ``elsewhere``: the holder is recorded as another machine's process, so the
    lease is waited out; else the survivor finds it gone on this machine.
    """

    servers = [Server(db, "--speed", "40", "--lease-seconds", lease) for _ in "ab"]
    try:
        batch_id = create(servers[0], upload(servers[0], 5_000))["id"]
        while True:
            rows = sql(
                db, "SELECT lease_owner FROM batchfsm_batches WHERE id = ?", (batch_id,)
            )
            if rows and rows[0][0]:
                holder = rows[0][0]
                break
            time.sleep(0.01)
        if elsewhere:
            [(process,)] = sql(
                db, "SELECT process FROM batchfsm_owners WHERE owner = ?", (holder,)
            )
            fields = process.split(" ")
            fields[1] = "another-machine"
            sql(
                db,
                "UPDATE batchfsm_owners SET process = ? WHERE owner = ?",
                (" ".join(fields), holder),
            )
        victim = next(s for s in servers if s.process.pid == owner_pid(holder))
        victim.kill()
        killed = time.perf_counter()
        while sql(
            db, "SELECT lease_owner FROM batchfsm_batches WHERE id = ?", (batch_id,)
        )[0][0] in (holder,):
            time.sleep(0.002)
        return time.perf_counter() - killed
    finally:
        for server in servers:
            server.stop()


def lease_table(
    sqlite_db: Callable[[], str], postgres: Callable[[], str] | str
) -> list[str]:
    """What leases cost, and how soon a killed process's batch is taken over."""
    lines = [
        "leases: a heartbeat (µs, median of 500; 4 stores sharing the database;"
        " PostgreSQL fsync=off),",
        "    and seconds from kill -9 of the holder to another serve's takeover"
        " (median of 3)",
        f"    {'store':<11} {'renewal':>9} {'look':>8} {'per s at 30 s':>14}"
        f" {'here, lease 30 s':>17} {'elsewhere, 1 s':>15} {'elsewhere, 3 s':>15}",
    ]
    dbs: list[tuple[str, Callable[[], str]]] = [("SQLite", sqlite_db)]
    if isinstance(postgres, str):
        lines.append(f"    PostgreSQL  {postgres}")
    else:
        dbs.append(("PostgreSQL", postgres))
    for name, make in dbs:
        renewal, look = _heartbeat_costs(make())
        # At the default 30 s lease: a renewal every 10 s and a look every second.
        per_second = renewal / 10 + look
        takeovers = [
            statistics.median(
                _takeover_seconds(make(), lease, elsewhere) for _ in range(3)
            )
            for lease, elsewhere in (("30", False), ("1", True), ("3", True))
        ]
        lines.append(
            f"    {name:<11} {renewal:>6.0f} µs {look:>5.0f} µs {per_second:>11.0f} µs"
            f" {takeovers[0]:>15.2f} s {takeovers[1]:>13.2f} s"
            f" {takeovers[2]:>13.2f} s"
        )
    return lines


#: What PostgreSQL counted of a database, and of the cluster's WAL.
_PG_COUNTS = (
    "SELECT d.xact_commit, w.wal_sync FROM pg_stat_database d, pg_stat_wal w"
    " WHERE d.datname = current_database()"
)
#: Seconds until the server's processes have reported what they counted
#: (an idle backend reports within a second).
_PG_REPORTED = 1.5


def _pg_counts(db: str) -> tuple[int, int] | None:
    """Transactions committed in ``db`` and the cluster's WAL flushes (None: SQLite)."""
    if not db.startswith("postgresql"):
        return None
    time.sleep(_PG_REPORTED)
    [(commits, flushes)] = sql(db, _PG_COUNTS)
    return int(commits), int(flushes)


def _cpu_now(servers: list[Server], db: str) -> float:
    """CPU seconds so far of this process (the clients), servers, database."""
    pids = [s.process.pid for s in servers] + server_processes(db)
    return time.process_time() + sum(cpu_seconds(p, children=True) for p in pids)


def _small_batches_per_second(
    dbs: list[str], batches: int = 300, counted: dict[str, float] | None = None
) -> float:
    """Batches of 10 requests a second, created and run to completion.

    One ``serve`` process per entry of ``dbs`` (the same database for
    several processes sharing it); four clients create the batches, spread
    over the processes; the clock is over when the last one completed.
    ``counted``: filled with the CPU milliseconds a batch of everything
    taking part (the clients, the servers, the database's processes) and,
    on PostgreSQL, the transactions committed a batch (every statement
    outside a transaction counts one: the reads too) and the WAL flushes (an
    fsync each, at ``fsync=on``) a batch.
    """
    servers = [Server(db, "--speed", "1000") for db in dbs]
    before = None
    try:
        file_id = upload(servers[0], 10)
        if counted is not None:
            before = _pg_counts(dbs[0])
        made: list[str] = []
        lock = threading.Lock()
        cpu = _cpu_now(servers, dbs[0])
        begin = time.perf_counter()

        def client(n: int) -> None:
            for i in range(n, batches, 4):
                batch_id = create(servers[i % len(servers)], file_id)["id"]
                with lock:
                    made.append(batch_id)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pending = list(made)
        while pending:
            answer = servers[0].http.get(f"/batches/{pending[-1]}").json()
            if answer["status"] == "completed":
                pending.pop()
            else:
                assert answer["status"] in ("validating", "in_progress", "finalizing")
                time.sleep(0.005)
        rate = batches / (time.perf_counter() - begin)
        if counted is not None:
            counted["cpu"] = (_cpu_now(servers, dbs[0]) - cpu) * 1e3 / batches
    finally:
        for server in servers:
            server.stop()
    after = _pg_counts(dbs[0]) if before is not None else None
    if counted is not None and before is not None and after is not None:
        counted["commits"] = (after[0] - before[0]) / batches
        counted["flushes"] = (after[1] - before[1]) / batches
    return rate


def small_batches_table(folder: Path, rounds: int = 3) -> list[str]:
    """Batches of 10 lines to completion: SQLite, PostgreSQL durable or not; 1 vs 2.

    PostgreSQL runs ``fsync=on`` with ``synchronous_commit`` on (its
    defaults) and, beside it, ``off``; alternating rounds, medians of the
    per-round ratios to SQLite (and of two processes to one).
    """
    lines = [
        "batches of 10 requests to completion (batches/s; PostgreSQL fsync=on;"
        f" median of {rounds} alternating rounds, ratios per round):",
    ]
    numbers = iter(range(1_000_000))

    def sqlite() -> str:
        return f"sqlite:///{folder / f'small-{next(numbers)}.sqlite'}"

    try:
        with (
            cluster(durable=True) as on,
            cluster(durable=True, synchronous_commit=False) as off,
        ):
            rows: dict[str, list[float]] = {}
            for _ in range(rounds):
                counted: dict[str, float] = {}
                both: dict[str, float] = {}
                base = _small_batches_per_second([sqlite()])
                one = _small_batches_per_second([new_database(on)], counted=counted)
                db = new_database(on)
                two = _small_batches_per_second([db, db], counted=both)
                lazy = _small_batches_per_second([new_database(off)])
                # The most two processes could do here: every core busy at
                # the CPU a batch they took (clients and database included).
                ceiling = CORES * 1e3 / both["cpu"]
                for name, rate in (
                    ("SQLite, 1 process", base),
                    ("PostgreSQL fsync=on, 1 process", one),
                    ("PostgreSQL fsync=on, 2 processes", two),
                    ("PostgreSQL sync commit off", lazy),
                    ("PostgreSQL 1 / SQLite", one / base),
                    ("PostgreSQL 2 / 1", two / one),
                    ("PostgreSQL off / SQLite", lazy / base),
                    ("PostgreSQL commits a batch", counted["commits"]),
                    ("PostgreSQL WAL flushes a batch", counted["flushes"]),
                    ("CPU ms a batch, 1 process", counted["cpu"]),
                    ("CPU ms a batch, 2 processes", both["cpu"]),
                    (f"2 processes' ceiling, {CORES} cores", ceiling),
                    (f"ceiling / 1 process, {CORES} cores", ceiling / one),
                ):
                    rows.setdefault(name, []).append(rate)
    except PostgresUnavailableError as exc:
        return [*lines, f"    PostgreSQL unavailable ({exc})"]
    for name, values in rows.items():
        unit = (
            "x" if "/" in name
            else "" if " a batch" in name
            else " batches/s"
        )  # fmt: skip
        spread = f"{min(values):.2f}..{max(values):.2f}"
        lines.append(
            f"    {name:<33} {statistics.median(values):>8.2f}{unit}  ({spread})"
        )
    return lines


def figures() -> list[str]:
    with _postgres() as postgres, tempfile.TemporaryDirectory() as folder:
        sqlite_db = f"sqlite:///{Path(folder) / 'serve.sqlite'}"
        return [
            *store_table(postgres),
            *serve_table(postgres),
            *serve_retrieve_table(sqlite_db, postgres),
            *lease_table(_sqlite_files(Path(folder)), postgres),
            *small_batches_table(Path(folder)),
        ]


def _sqlite_files(folder: Path) -> Callable[[], str]:
    """A factory of new SQLite database URLs in ``folder``."""
    numbers = iter(range(1_000_000))
    return lambda: f"sqlite:///{folder / f'leases-{next(numbers)}.sqlite'}"


if __name__ == "__main__":
    if sys.argv[1:] == ["retrieve"]:  # only the HTTP retrieve figures
        with _postgres() as pg, tempfile.TemporaryDirectory() as folder:
            db = f"sqlite:///{Path(folder) / 'serve.sqlite'}"
            print("\n".join(serve_retrieve_table(db, pg)))
    elif sys.argv[1:] == ["small"]:  # only the small batches, fsync on
        with tempfile.TemporaryDirectory() as folder:
            print("\n".join(small_batches_table(Path(folder))))
    elif sys.argv[1:] == ["leases"]:  # only the lease figures
        with _postgres() as pg, tempfile.TemporaryDirectory() as folder:
            print("\n".join(lease_table(_sqlite_files(Path(folder)), pg)))
    else:
        print("\n".join(figures()))
