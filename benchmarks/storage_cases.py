"""What the storage check costs: ``stored_bytes(project=)`` with many files stored.

``python -m benchmarks.storage_cases`` prints, for each store (memory, SQLite,
PostgreSQL), the median time of one ``stored_bytes(project=...)`` (what every
upload asks under ``--max-storage``) with 1,000, 10,000 and 50,000 files
stored, half of them another project's. It should not grow with the files.
PostgreSQL runs in a throwaway cluster the benchmark starts (as the tests
do); where it cannot, its row says why.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchfsm._postgres_cluster import PostgresUnavailableError, cluster, new_database
from batchfsm.emulator import FileObject, MemoryBatchStore, SQLiteStore, open_store
from batchfsm.emulator._sql_files import add_file

COUNTS = (1_000, 10_000, 50_000)
ROUNDS = 30


def _file(i: int) -> FileObject:
    return FileObject(id=f"file-{i:022d}", bytes=100, created_at=1,
                      filename="a.jsonl", purpose="batch")  # fmt: skip


def _fill(store: Any, start: int, stop: int) -> None:
    """Files ``start`` to ``stop``, every other one in project ``b``."""
    content = b"x" * 100
    db = getattr(store, "_db", None)
    if db is None:
        for i in range(start, stop):
            store.files.add(_file(i), content, project="ab"[i % 2])
        return
    with db.transaction() as tx:  # one transaction: filling is not measured
        for i in range(start, stop):
            add_file(tx, _file(i), content, "ab"[i % 2])


def _median_seconds(store: Any) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        store.files.stored_bytes(project="a")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _row(name: str, store: Any) -> str:
    shown, stored = [], 0
    for count in COUNTS:
        _fill(store, stored, count)
        stored = count
        assert store.files.stored_bytes(project="a") == 100 * (count // 2)
        shown.append(f"{_median_seconds(store) * 1e6:9.1f} us")
    return f"{name:<11}" + "".join(f"{s:>14}" for s in shown)


@contextlib.contextmanager
def _postgres() -> Iterator[str | None]:
    try:
        with cluster() as server:
            yield new_database(server)
    except PostgresUnavailableError as exc:
        print(f"postgres   unavailable: {exc}")
        yield None


def main() -> int:
    print("stored_bytes(project=) median per call, by files stored")
    print(f"{'store':<11}" + "".join(f"{n:>14,}" for n in COUNTS))
    print(_row("memory", MemoryBatchStore()))
    with tempfile.TemporaryDirectory() as where:
        sqlite = SQLiteStore(Path(where) / "storage.sqlite")
        try:
            print(_row("sqlite", sqlite))
        finally:
            sqlite.close()
    with _postgres() as url:
        if url is not None:
            postgres = open_store(url)
            try:
                print(_row("postgres", postgres))
            finally:
                postgres.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
