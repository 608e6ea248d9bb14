"""The web view's list page: its cost is one page's, whatever the store holds.

``GET /ui`` (and a status filter that matches nothing, the most the page
reads: :data:`batchfsm.emulator._web.SCAN_PAGES` pages of the store's list)
with 10,000 batches stored, beside the same page with :data:`SMALL` stored
(as many as a filtered page may read: a full page, and the filter's whole
bound, either way). Through the app in-process (Starlette's test
client, the key in the cookie), on the memory and SQLite stores: the page
reads the store's paged list, so the ratio stays near 1.

``python -m benchmarks.web_cases`` prints the figures alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from starlette.testclient import TestClient

import batchfsm as bf
from batchfsm.emulator import Emulator, SQLiteStore, VirtualClock, Work, create_app
from batchfsm.emulator._web import PAGE_SIZE, SCAN_PAGES

from ._harness import Case, per_call, run, table

KEY = "sk-bench"
#: The page's cost at 10,000 batches may be at most this many times its cost here.
TARGET = 1.5
#: The batches stored in the comparison: all a filtered page may read.
SMALL = PAGE_SIZE * SCAN_PAGES


def _client(n: int, store: str, where: Path) -> TestClient:
    clock = VirtualClock()
    if store == "sqlite":
        db = SQLiteStore(str(where / f"web-{n}.sqlite"))
        emulator = Emulator(clock=clock, store=db, files=db.files, ids=db.ids())
    else:
        emulator = Emulator(clock=clock)
    for i in range(n):
        batch = bf.new_batch(
            id=f"batch_{i:032d}",
            input_file_id="file-1",
            endpoint="/v1/embeddings",
            created_at=1_700_000_000 + i,
        )
        emulator.batches.insert(batch, Work(due_at=2_000_000_000))
    client = TestClient(create_app(emulator, api_key=KEY))
    client.post("/ui/login", data={"key": KEY}, follow_redirects=False)
    return client


def _page(client: TestClient, path: str) -> Callable[[], object]:
    def get() -> object:
        answer = client.get(path)
        assert answer.status_code == 200
        return answer

    return get


def web_cases() -> list[Case]:
    """The list page at 10,000 batches against :data:`SMALL`, per store."""
    where = Path(tempfile.mkdtemp(prefix="batchfsm-web-bench-"))
    cases = []
    for store in ("memory", "sqlite"):
        big, small = _client(10_000, store, where), _client(SMALL, store, where)
        for what, path in (("", "/ui"), (", filtered", "/ui?status=completed")):
            cases.append(
                Case(
                    f"web list page{what}, 10,000 batches stored ({store})",
                    per_call(_page(big, path), repeat=5),
                    f"the same page, {SMALL} stored",
                    per_call(_page(small, path), repeat=5),
                    TARGET,
                )
            )
    return cases


if __name__ == "__main__":
    print(table([run(case) for case in web_cases()]))
