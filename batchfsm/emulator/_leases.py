"""Leases: which of the processes sharing a database runs a batch's due work.

What a lease means is :class:`SQLStore`'s (see its docstring); here is how it
is taken, in SQL: :func:`claim_due` when a store asks what is due,
:func:`give_back` when it closes, :func:`reclaim_dead` when it opens (the
leases of processes on this machine that no longer run). Leases are timed by
the database's own clock, so processes on different machines agree on when
one ran out.
"""

from __future__ import annotations

import os
import secrets
import socket

from ._database import Database, Tx

__all__ = ["claim_due", "dead_here", "give_back", "new_owner", "reclaim_dead"]


def new_owner() -> str:
    """A name for this store's leases: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def dead_here(owner: str) -> bool:
    """Whether ``owner`` was a process on this machine that no longer runs."""
    try:
        host, pid, _ = owner.rsplit(":", 2)
        number = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or number == os.getpid():
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. alive but another user's: not ours to judge
        return False
    return False


def reclaim_dead(tx: Tx) -> None:
    """Free the leases of processes on this machine that no longer run.

    A restart on the same machine need not wait for a killed process's
    leases to run out: a process that no longer runs writes nothing more.
    """
    holders = [
        owner
        for (owner,) in tx.all(
            "SELECT DISTINCT lease_owner FROM batchfsm_batches"
            " WHERE lease_owner IS NOT NULL"
        )
    ]
    for owner in filter(dead_here, holders):
        tx.run(
            "UPDATE batchfsm_batches SET lease_owner = NULL,"
            " lease_until = NULL, epoch = epoch + 1 WHERE lease_owner = ?",
            (owner,),
        )


def give_back(tx: Tx, owner: str) -> None:
    """Free ``owner``'s leases: others may take those batches now."""
    tx.run(
        "UPDATE batchfsm_batches SET lease_owner = NULL,"
        " lease_until = NULL WHERE lease_owner = ?",
        (owner,),
    )


def claim_due(
    db: Database, tx: Tx, owner: str, lease_seconds: float, at: int, limit: int
) -> list[str]:
    """Ids of up to ``limit`` batches due at or before ``at``, leased to ``owner``.

    Earliest due first, ties in creation order; read through the due-time
    index. Batches another owner holds are left out until its lease runs out;
    those taken over then have their epoch moved on.
    """
    rows = tx.all(
        "SELECT id, lease_owner FROM batchfsm_batches WHERE due_at <= ?"
        " AND (lease_owner IS NULL OR lease_owner = ?"
        f" OR lease_until < {db.now_sql})"
        f" ORDER BY due_at, seq LIMIT ? {db.skip_locked_sql}",
        (at, owner, limit),
    )
    if not rows:
        return []
    ids = [batch_id for batch_id, _ in rows]
    taken = [i for i, holder in rows if holder not in (None, owner)]
    marks = ", ".join("?" * len(ids))
    tx.run(
        "UPDATE batchfsm_batches SET lease_owner = ?,"
        f" lease_until = {db.now_sql} + ? WHERE id IN ({marks})",
        (owner, lease_seconds, *ids),
    )
    if taken:
        # Taken over from a holder whose lease ran out: fence it off.
        marks = ", ".join("?" * len(taken))
        tx.run(
            f"UPDATE batchfsm_batches SET epoch = epoch + 1 WHERE id IN ({marks})",
            taken,
        )
    return ids
