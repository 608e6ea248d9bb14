"""One big batch sent by several ``serve --upstream`` processes on one PostgreSQL.

Real processes and a real database: two gateways in front of the tests' own
upstream (:mod:`tests.fault_upstream`), which tells which process sent each
request by the connection it came on (the socket's owner, read from
``/proc``). The batch's lines are claimed in chunks by both; after a
``kill -9`` of either, the other finishes the batch, and only the lines the
dead one had in flight (sent, their answers not written) are sent again.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchfsm.emulator._chunks import LINES_PER_CHUNK
from batchfsm.emulator._worker import REQUESTS_PER_WRITE

from .fault_upstream import FaultUpstream, fault_upstream
from .test_durable import PATIENCE, Server, _create, _ended, _holder, _pid, servers
from .test_gateway import chat_lines
from .test_progress import _judge_ids, _settled, _upload_lines, _written

pytestmark = pytest.mark.postgres

__all__ = ["servers"]  # the fixture, used by name

#: Requests each gateway has in flight at once.
CONCURRENCY = 16


def _socket_owner(peer: Any, upstream_port: int, pids: set[int]) -> int | None:
    """Which of ``pids`` holds the loopback connection from ``peer`` to the upstream."""
    port = int(peer[1])
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        here, there = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
        if here == port and there == upstream_port:
            inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def _gateways(
    servers: Callable[..., Server], db: str, upstream: FaultUpstream, n: int = 2
) -> list[Server]:
    """``n`` gateways on ``db``; the upstream told which one sends each request."""
    options = ("--upstream", upstream.base, "--upstream-concurrency", str(CONCURRENCY))
    gateways = [servers(db, *options) for _ in range(n)]
    pids = {g.process.pid for g in gateways}
    port = int(upstream.base.rsplit(":", 1)[1])
    upstream.who = lambda peer: _socket_owner(peer, port, pids)
    return gateways


def _until_ended(
    server: Server, batch_id: str, trace: list[dict[str, Any]]
) -> dict[str, Any]:
    deadline = time.monotonic() + 4 * PATIENCE  # a hang guard, not a speed check
    while True:
        answer = server.http.get(f"/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        trace.append(answer.json())
        if _ended(trace[-1]):
            return trace[-1]
        assert time.monotonic() < deadline, f"stuck at {trace[-1]}\n{server.output()}"
        time.sleep(0.2)


def test_two_gateways_share_one_10000_line_batch(
    servers: Callable[..., Server], postgres_url: str
) -> None:
    ids = [f"r{i}" for i in range(10_000)]
    assert len(ids) > 4 * LINES_PER_CHUNK  # chunks enough for both
    with fault_upstream() as upstream:
        first, second = _gateways(servers, postgres_url, upstream)
        created = _create(first, _upload_lines(first, chat_lines(ids)))
        trace: list[dict[str, Any]] = [created]
        done = _until_ended(second, created["id"], trace)
        assert done["status"] == "completed", first.output() + second.output()
        sent = Counter(upstream.senders)
        times = Counter(content for content, _ in upstream.log)
    # Each process sent part; together every request exactly once.
    assert set(sent) == {first.process.pid, second.process.pid}, sent
    assert min(sent.values()) >= LINES_PER_CHUNK, sent
    assert sum(sent.values()) == len(ids)
    assert set(times) == set(ids) and set(times.values()) == {1}
    _judge_ids(second, done, ids, trace)


@pytest.mark.parametrize("victim", ["holder", "helper"])
def test_after_kill_9_of_one_gateway_the_other_finishes_the_batch(
    servers: Callable[..., Server], postgres_url: str, victim: str
) -> None:
    # Answers take 20 ms, so the batch is caught mid-run; the lease holder
    # (which alone moves the batch) or the other one is killed.
    ids = [f"slow-{i}" for i in range(4_000)]
    with fault_upstream() as upstream:
        gateways = _gateways(servers, postgres_url, upstream)
        created = _create(gateways[0], _upload_lines(gateways[0], chat_lines(ids)))
        trace: list[dict[str, Any]] = [created]
        deadline = time.monotonic() + PATIENCE  # a readiness wait
        while len(set(upstream.senders)) < 2 or len(upstream.log) < 800:
            assert time.monotonic() < deadline, upstream.senders[-5:]
            time.sleep(0.01)
        owner = _holder(postgres_url, created["id"])
        assert owner is not None
        by_pid = {g.process.pid: g for g in gateways}
        holder = by_pid[_pid(owner)]
        dead = (
            holder
            if victim == "holder"
            else next(g for g in gateways if g is not holder)
        )
        alive = next(g for g in gateways if g is not dead)
        # The survivor paused while the victim dies, so that what the
        # database holds at the kill is read before anyone sends again.
        alive.process.send_signal(signal.SIGSTOP)
        try:
            dead.kill()
            _settled(upstream)  # bytes the dead one wrote still arrive
            written = _written(postgres_url, created["id"])
            log = list(zip(upstream.log, upstream.senders, strict=True))
        finally:
            alive.process.send_signal(signal.SIGCONT)
        sent_by_dead = {content for (content, _), pid in log if pid == dead.process.pid}
        in_flight = sent_by_dead - written
        assert sent_by_dead and len(in_flight) <= CONCURRENCY + REQUESTS_PER_WRITE
        done = _until_ended(alive, created["id"], trace)
        assert done["status"] == "completed", alive.output()
        times = Counter(content for content, _ in upstream.log)
    assert set(times) == set(ids)
    # Sent twice: exactly the dead one's requests in flight; none three times.
    assert {content for content, n in times.items() if n > 1} == in_flight
    assert max(times.values()) <= 2
    _judge_ids(alive, done, ids, trace)
