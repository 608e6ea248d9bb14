"""``batchfsm serve`` processes on a database, for the benchmarks (no pytest).

What the store benchmarks need of a running server: start one on a free
loopback port (waiting until it answers), upload an input file, create a
batch, look inside the database, stop it or kill it.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx2

from batchfsm.emulator import make_input_file

from .engine_cases import started

__all__ = ["Server", "create", "owner_pid", "sql", "upload"]

#: Leases of the benchmark servers (seconds).
LEASE = "1"


class Server:
    """One ``batchfsm serve --db DB`` process; ``http`` a client on its ``/v1``."""

    def __init__(self, db: str, *args: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix="batchfsm-bench-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.process, self.port = started(
                [sys.executable, "-m", "batchfsm", "serve", "--db", db,
                 "--lease-seconds", LEASE, *args],
                "batchfsm serve",
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.http = httpx2.Client(base_url=self.base, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no clean-up, no lease given back."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.unlink(missing_ok=True)


def upload(server: Server, requests: int) -> str:
    """Upload an input file of ``requests`` chat requests; its id."""
    answer = server.http.post(
        "/files",
        files={"file": ("in.jsonl", make_input_file(requests), "application/jsonl")},
        data={"purpose": "batch"},
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def create(server: Server, file_id: str) -> dict[str, Any]:
    """Create a chat-completions batch of ``file_id``; the Batch's JSON."""
    answer = server.http.post(
        "/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    answer.raise_for_status()
    created: dict[str, Any] = answer.json()
    return created


def sql(db: str, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run one statement on the database ``db`` names (``?`` placeholders)."""
    if db.startswith("sqlite:///"):
        conn = sqlite3.connect(db.removeprefix("sqlite:///"), isolation_level=None)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(db, autocommit=True) as pg:
        cursor = pg.execute(statement.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def owner_pid(owner: str) -> int:
    """The process id in a lease owner's name (host:pid:random)."""
    return int(owner.split(":")[1])
