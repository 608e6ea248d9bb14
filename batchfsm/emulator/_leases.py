"""Leases: which of the processes sharing a database runs a batch's due work.

A batch's lease names its holder (``batchfsm_batches.lease_owner``); the
holder's lease lasts as long as the holder keeps its heartbeat in
``batchfsm_owners``: each store renews its own row every third of its
``lease_seconds`` (:class:`Heartbeat`, :func:`renew`), setting ``lease_until``
to the database's time now plus ``lease_seconds``. A batch whose holder has no
row whose ``lease_until`` is still ahead is anyone's: :func:`claim_due` takes
it over and moves its epoch on, so the old holder's late write is refused.

Time is the database's own clock (``now_sql``), never the emulator's
(virtual or ``--speed``) nor each host's: processes on machines whose clocks
disagree still agree on when a lease ran out, and no skew can make a live
holder look dead.

A process on this machine that no longer runs need not have its lease waited
out: each store, every second at most, drops the heartbeats of such processes
(:func:`reclaim_dead`, judged by :func:`dead_here`), so a restarted server, or
a sibling, takes their batches over within a second. :func:`give_back` frees a closing
store's leases.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._database import Database, Tx
from ._store_errors import StoreUnavailable

__all__ = [
    "Heartbeat",
    "claim_due",
    "dead_here",
    "give_back",
    "new_owner",
    "reclaim_dead",
    "renew",
    "this_process",
]

log = logging.getLogger("batchfsm.emulator")


def new_owner() -> str:
    """A name for this store's leases: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# -- is that process still running? --------------------------------------------------


def _stat(pid: int | str) -> tuple[str, str] | None:
    """The state and the start time (clock ticks after boot) of a process.

    None if ``/proc`` does not show it (gone, hidden, or no ``/proc`` here).
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        # The command name (in parentheses) may hold spaces: fields follow the last ")".
        fields = text[text.rindex(")") + 2 :].split()
        return fields[0], fields[19]
    except (OSError, ValueError, IndexError):
        return None


def this_process() -> str | None:
    """Who this process is, precisely enough to tell later whether it still runs.

    The host, the boot (the kernel's random ``boot_id``), the ``/proc`` that
    numbers processes (its device: one per PID namespace), the process id as
    that ``/proc`` numbers it and the process's start time. None where there
    is no such ``/proc`` (not Linux), or where ``/proc`` numbers processes
    differently from this process's own namespace: then no process judges it
    dead, and its lease is waited out.

    Example:
        >>> import os
        >>> me = this_process()
        >>> me is None or me.split()[3] == str(os.getpid())
        True
    """
    pid = os.getpid()
    if pid not in _known:  # once per process (a forked child asks again)
        _known.clear()
        _known[pid] = _identify()
    return _known[pid]


#: This process's identity, by its pid.
_known: dict[int, str | None] = {}


def _identify() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        device = os.stat("/proc").st_dev
        pid = int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return None
    stat = _stat(pid)
    if pid != os.getpid() or stat is None:
        return None
    return f"{socket.gethostname()} {boot} {device} {pid} {stat[1]}"


def dead_here(process: str | None) -> bool:
    """Whether ``process`` (from :func:`this_process`) no longer runs.

    Judged only of a process of this host, this boot and this PID namespace
    (else False: wait its lease out). Dead: its pid is free, or is a zombie's,
    or now belongs to a process started at another time (the pid was reused).
    A process this one cannot see (another user's, with ``/proc`` hidden)
    counts as running.

    Example:
        >>> dead_here(this_process()), dead_here(None)
        (False, False)
    """
    mine = this_process()
    if process is None or mine is None:
        return False
    try:
        host, boot, device, pid, started = process.split(" ")
        number = int(pid)
    except ValueError:
        return False
    if [host, boot, device] != mine.split(" ")[:3] or number <= 0:
        return False
    if process == mine:
        return False  # another store of this very process: alive
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process: it exists
        pass
    stat = _stat(number)
    if stat is None:  # hidden from us: not ours to judge
        return False
    state, now_started = stat
    return state in ("Z", "X") or now_started != started


# -- the heartbeat -------------------------------------------------------------------


def renew(
    db: Database, tx: Tx, owner: str, process: str | None, lease_seconds: float
) -> None:
    """Renew ``owner``'s lease: it lasts ``lease_seconds`` from the database's now."""
    tx.run(
        "INSERT INTO batchfsm_owners (owner, process, heartbeat_at, lease_until)"
        f" VALUES (?, ?, {db.now_sql}, {db.now_sql} + ?)"
        " ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
        " lease_until = excluded.lease_until",
        (owner, process, lease_seconds),
    )


def reclaim_dead(db: Database, owner: str) -> list[str]:
    """Drop the heartbeats of processes on this machine that no longer run.

    Their leases are free from now on (:func:`claim_due` takes their batches
    over, moving the epoch on), without waiting for them to run out. The
    heartbeats of leases that ran out go too, having no use. Returns the
    owners found dead. Two transactions: a read, then (only if there is
    something to drop) a delete that skips rows another process is deleting,
    so processes reclaiming at once never wait for each other.
    """
    with db.transaction(write=False) as tx:
        rows = tx.all(
            f"SELECT owner, process, lease_until < {db.now_sql} FROM batchfsm_owners"
            " WHERE owner <> ?",
            (owner,),
        )
    dead = [o for o, process, ran_out in rows if not ran_out and dead_here(process)]
    gone = [other for other, _, ran_out in rows if ran_out] + dead
    if gone:
        marks = ", ".join("?" * len(gone))
        dead_marks = ", ".join("?" * len(dead)) or "NULL"
        with db.transaction() as tx:
            # Judged again under the lock: a lease renewed since the read stays.
            tx.run(
                "DELETE FROM batchfsm_owners WHERE owner IN ("
                f" SELECT owner FROM batchfsm_owners WHERE owner IN ({marks})"
                f" AND (lease_until < {db.now_sql} OR owner IN ({dead_marks}))"
                f" {db.skip_locked_sql})",
                (*gone, *dead),
            )
    return dead


class Heartbeat:
    """A thread that calls ``beat`` every ``interval`` seconds until stopped.

    It holds ``owner`` (the store) weakly: a store dropped without being
    closed ends its heartbeat rather than living on through it. A beat that
    fails is tried again at the next interval; logged once, unless the store
    is unavailable (:class:`StoreUnavailable`): the worker's and the calls'
    :class:`._outage.Outage` tells that, and a line here would be a second.
    """

    def __init__(
        self, owner: Any, beat: Callable[[Any], None], interval: float, name: str
    ) -> None:
        self._stop = threading.Event()
        ref = weakref.ref(owner)
        failing = False

        def loop() -> None:
            nonlocal failing
            while not self._stop.wait(interval):
                holder = ref()
                if holder is None:
                    return
                try:
                    beat(holder)
                except StoreUnavailable:
                    pass  # the store's outage is told by the calls that meet it
                except Exception as exc:  # noqa: BLE001 - the database may be back soon
                    if not failing:
                        log.warning("%s: heartbeat failed (%s); retrying", name, exc)
                    failing = True
                else:
                    if failing:
                        log.info("%s: heartbeat renewed again", name)
                    failing = False
                del holder

        self._thread = threading.Thread(
            target=loop, name="batchfsm-heartbeat", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop beating, and wait for a beat under way to end."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


# -- leases of batches ---------------------------------------------------------------


def give_back(tx: Tx, owner: str) -> None:
    """Free ``owner``'s leases and its heartbeat: others may take those batches now."""
    tx.run(
        "UPDATE batchfsm_batches SET lease_owner = NULL WHERE lease_owner = ?",
        (owner,),
    )
    tx.run("DELETE FROM batchfsm_owners WHERE owner = ?", (owner,))


class _Count:
    """A count kept by this process, safe across threads (for ``/metrics``)."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


#: Batches this process took over from a holder whose lease ran out.
TAKEOVERS = _Count()


def claim_due(
    db: Database, tx: Tx, owner: str, at: int, limit: int, *columns: str
) -> list[tuple[Any, ...]]:
    """Up to ``limit`` batches due at or before ``at``, leased to ``owner``.

    Each row: the batch's id, then its ``columns`` as they are once claimed.
    Earliest due first, ties in creation order; read through the due-time
    index. Batches whose holder's heartbeat is live are left out; those whose
    holder's lease ran out (or was dropped, see :func:`reclaim_dead`) are
    taken over, their epoch moved on (a taken-over row's ``epoch`` column
    is read as it is after that).
    """
    # The live holders other than ``owner`` are read once (a few rows), not
    # once for each batch passed over.
    more = "".join(f", {column}" for column in columns)
    rows = tx.all(
        f"SELECT id, lease_owner{more} FROM batchfsm_batches WHERE due_at <= ?"
        " AND (lease_owner IS NULL OR lease_owner NOT IN ("
        " SELECT owner FROM batchfsm_owners WHERE owner <> ?"
        f" AND lease_until >= {db.now_sql}))"
        f" ORDER BY due_at, seq LIMIT ? {db.skip_locked_sql}",
        (at, owner, limit),
    )
    new = [row[0] for row in rows if row[1] != owner]
    if new:
        marks = ", ".join("?" * len(new))
        tx.run(
            f"UPDATE batchfsm_batches SET lease_owner = ? WHERE id IN ({marks})",
            (owner, *new),
        )
    taken: dict[str, list[str]] = {}
    for batch_id, holder, *_ in rows:
        if holder not in (None, owner):
            taken.setdefault(holder, []).append(batch_id)
    if taken:
        # Taken over from a holder whose lease ran out: fence it off.
        ids = [i for batch_ids in taken.values() for i in batch_ids]
        marks = ", ".join("?" * len(ids))
        tx.run(
            f"UPDATE batchfsm_batches SET epoch = epoch + 1 WHERE id IN ({marks})",
            ids,
        )
        TAKEOVERS.add(len(ids))
        for holder, batch_ids in taken.items():
            log.info(
                "took over %d batch(es) from %s, which has no live heartbeat: %s",
                len(batch_ids), holder, " ".join(batch_ids),
            )  # fmt: skip
        if "epoch" in columns:
            at_epoch = columns.index("epoch") + 2
            rows = [
                row if row[1] in (None, owner) else _moved_on(row, at_epoch)
                for row in rows
            ]
    return [(row[0], *row[2:]) for row in rows]


def _moved_on(row: tuple[Any, ...], at: int) -> tuple[Any, ...]:
    """``row`` with its value at ``at`` (an epoch) moved on by one."""
    return (*row[:at], row[at] + 1, *row[at + 1 :])
