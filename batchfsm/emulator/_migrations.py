"""The SQL schema, as versioned migrations applied in order.

Each migration is one step from version ``n - 1`` to ``n``, written once per
dialect (SQLite, PostgreSQL); a new database gets every step, an older one the
steps it lacks, each step in its own transaction together with the new version
number, so a crash mid-upgrade leaves the database at the last whole version.
The version lives in SQLite's ``user_version`` and in PostgreSQL's
``batchfsm_schema`` table. A database newer than :data:`LATEST` is refused,
never written.

Tables (all prefixed ``batchfsm_``, so they can share a database):

- ``batches``: one row per batch; ``body`` is its API JSON, ``work`` its work
  in progress (JSON; NULL once it ended), ``status`` and ``epoch`` the two
  columns every conditional write compares (each write, and each lease taken
  over, adds one to ``epoch``), ``due_at`` when it next needs work
  (emulated seconds; NULL once it ended), ``lease_owner`` and ``lease_until``
  (the database's real time, in seconds) the process that holds it, ``seq`` the
  creation order pages and ties follow.
- ``results``: the result lines written so far, one row per write and kind,
  in the same transaction as the progress they record.
- ``files``: metadata (the File object's JSON) and content.
- ``settings``: small named values: the clock anchor, id counters.
"""

from __future__ import annotations

import attrs

__all__ = ["LATEST", "MIGRATIONS", "Migration"]


@attrs.frozen
class Migration:
    """One step of the schema: its version, what it does, its SQL per dialect."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "batches with their work in progress and leases, results, files, settings",
        sqlite=(
            """CREATE TABLE batchfsm_batches (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL,
                body TEXT NOT NULL,
                work TEXT,
                due_at INTEGER,
                epoch INTEGER NOT NULL DEFAULT 0,
                lease_owner TEXT,
                lease_until REAL
            )""",
            """CREATE TABLE batchfsm_results (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                batch_id TEXT NOT NULL REFERENCES batchfsm_batches (id),
                kind TEXT NOT NULL CHECK (kind IN ('output', 'errors')),
                lines TEXT NOT NULL
            )""",
            "CREATE INDEX batchfsm_results_batch ON batchfsm_results (batch_id, seq)",
            """CREATE TABLE batchfsm_files (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                body TEXT NOT NULL,
                content BLOB NOT NULL
            )""",
            """CREATE TABLE batchfsm_settings (
                key TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )""",
        ),
        postgres=(
            """CREATE TABLE batchfsm_batches (
                seq bigserial PRIMARY KEY,
                id text NOT NULL UNIQUE,
                status text NOT NULL,
                body text NOT NULL,
                work text,
                due_at bigint,
                epoch bigint NOT NULL DEFAULT 0,
                lease_owner text,
                lease_until double precision
            )""",
            """CREATE TABLE batchfsm_results (
                seq bigserial PRIMARY KEY,
                batch_id text NOT NULL REFERENCES batchfsm_batches (id),
                kind text NOT NULL CHECK (kind IN ('output', 'errors')),
                lines text NOT NULL
            )""",
            "CREATE INDEX batchfsm_results_batch ON batchfsm_results (batch_id, seq)",
            """CREATE TABLE batchfsm_files (
                seq bigserial PRIMARY KEY,
                id text NOT NULL UNIQUE,
                body text NOT NULL,
                content bytea NOT NULL
            )""",
            """CREATE TABLE batchfsm_settings (
                key text PRIMARY KEY,
                value text NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "an index of unfinished batches by due time, for the scheduler",
        sqlite=(
            "CREATE INDEX batchfsm_batches_due ON batchfsm_batches (due_at, seq)"
            " WHERE due_at IS NOT NULL",
        ),
        postgres=(
            "CREATE INDEX batchfsm_batches_due ON batchfsm_batches (due_at, seq)"
            " WHERE due_at IS NOT NULL",
        ),
    ),
)

#: The schema version this batchfsm writes.
LATEST = MIGRATIONS[-1].version

assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
