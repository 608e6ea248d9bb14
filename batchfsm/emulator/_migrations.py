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
  (emulated seconds; NULL once it ended), ``lease_owner`` the store that holds
  it (indexed, since version 5), ``seq`` the creation order pages and ties
  follow. Until version 4 each row had its own ``lease_until``, renewed only
  when its holder claimed it again.
- ``owners`` (since version 5): one row per store holding leases, its
  heartbeat: ``lease_until`` and ``heartbeat_at`` (the database's real time, in
  seconds) say until when its leases last and when it last renewed them;
  ``process`` who it is on its machine (see :func:`._leases.this_process`), or
  NULL. A batch whose holder has no row with ``lease_until`` still ahead is
  free: leases taken before version 5 are free after the upgrade (their
  holders' late writes are still refused by the epoch).
- ``results``: the result lines written so far, one row per write and kind,
  in the same transaction as the progress they record.
- ``files``: metadata (the File object's JSON), with ``purpose`` and
  ``expires_at`` copied out of the JSON into columns (since version 4), so
  that a listing's page is one indexed query (by ``seq``, or by ``purpose``
  and ``seq``), and expired files are found for purging through an index of
  ``expires_at`` (since version 7); ``file_chunks`` its content in chunks
  of :data:`CHUNK_BYTES` (the last one shorter; none for an empty file),
  ``n`` counting from 0, so that reading a slice reads the one or two chunks
  it covers, not the whole file (until version 3 the content was one value
  in ``files``, and a database reads a slice by loading all of it).
- ``settings``: small named values: the clock anchor, id counters.
- ``enqueued`` (since version 6): per model, the prompt tokens its unfinished
  batches hold against the enqueued token limit, the row every start under
  a limit locks; each batch started under a limit names what it holds in
  ``batches``' ``enqueued_model`` and ``enqueued_tokens`` (NULL otherwise;
  kept once it ended, when it holds nothing), so the write that ends it
  gives them back.

- ``events`` (since version 10): the outbox: one row per batch event
  (``body`` its JSON, as sent), added by the write that ends the batch;
  ``project`` its batch's (since version 11; NULL before, filled in by the
  upgrade). ``webhook_endpoints``: the URLs events are delivered to, each
  with its ``project`` (since version 11: only that project's events are
  delivered there; NULL: every project's, as every endpoint was before);
  ``deliveries``: one row per event and endpoint it goes to (added with the
  event), its ``state`` (``pending``, ``delivered``,
  ``failed``), when its next attempt is due (``next_at``, the deliverer's
  clock; a claim moves it past its lease), its ``epoch`` (each claim adds
  one: a late record of a claim taken over is refused) and ``deadline``;
  ``delivery_attempts``: one row per attempt (when, HTTP status, error).

- ``storage`` (since version 12): per project, the bytes its files hold
  together, moved by every write that adds or deletes files (in its
  transaction), so that the storage bound is checked by reading one row.

- ``line_chunks`` (since version 13): a big batch's request lines in
  ranges any process may claim (see :mod:`._chunks`): ``start`` and
  ``stop`` the byte offsets of its first line and past its last, ``lines``
  the request lines in it, ``done`` those run, ``pos`` the offset of its
  first line not run yet and ``ahead`` (JSON) the ends of the lines after it
  that ran; ``owner`` the store whose claim it is under and ``claim`` the
  fence (each claim adds one: a late write of a claim taken over is
  refused). Its rows go with the write that ends their batch.

Since version 8 every batch and file keeps its ``project`` (the API key's
project that made it; a result file its batch's), indexed with ``seq`` for
each project's pages (files: with ``purpose`` too); the objects of an
older database go to :data:`._projects.DEFAULT_PROJECT`.

Until version 9 a store error (a connection lost, a full disk) set the
batch at hand aside as if its own work had failed: due again only at its
expiry, or never. Version 9 makes every batch due at its expiry or never
due again at once (``due_at`` :data:`RESUME`): the worker works out when
each is due afresh, and those whose work can go on, go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from ._content import Content, pieces
from ._database import Database, Tx
from ._projects import DEFAULT_PROJECT
from ._store_errors import SchemaVersionError, StoreError

__all__ = [
    "CHUNK_BYTES",
    "LATEST",
    "MIGRATIONS",
    "NEVER",
    "RESUME",
    "Migration",
    "chunks",
    "migrate",
]

#: A due time that never comes: a batch whose work keeps failing waits here.
NEVER = 2**62
#: The due time of a batch whose next due time the worker works out afresh
#: (version 9 marks so the batches older versions set aside after a store
#: error: at their expiry, or never).
RESUME = -1

#: The size of each stored chunk of a file's content (the last one is shorter).
#: Part of the schema: changing it needs a migration that re-chunks every file.
CHUNK_BYTES = 1 << 16


@attrs.frozen
class Migration:
    """One step of the schema: its version, what it does, its SQL per dialect.

    ``step``, if any, runs after the SQL in the same transaction, in both
    dialects: a change SQL alone cannot make without reading every row.
    """

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]
    step: Callable[[Tx], None] | None = None


def chunks(content: Content) -> Iterator[tuple[int, bytes | memoryview]]:
    """``content`` (bytes or pieces) as numbered chunks of :data:`CHUNK_BYTES`.

    A piece's whole chunks are slices of it, not copies; only a chunk that
    straddles pieces is put together. Each chunk is handed out as the pieces
    come, so the content is never held whole.

    Example:
        >>> [(n, len(c)) for n, c in chunks(b"x" * (CHUNK_BYTES + 1))]
        [(0, 65536), (1, 1)]
        >>> [(n, len(c)) for n, c in chunks([b"x" * 40_000] * 4)]
        [(0, 65536), (1, 65536), (2, 28928)]
    """
    n = 0
    pending = bytearray()  # the start of a chunk that straddles pieces
    for piece in pieces(content):
        view = memoryview(piece).cast("B")
        if pending:
            take = CHUNK_BYTES - len(pending)
            pending += view[:take]
            view = view[take:]
            if len(pending) < CHUNK_BYTES:
                continue
            yield n, bytes(pending)
            n, pending = n + 1, bytearray()
        whole = len(view) - len(view) % CHUNK_BYTES
        for start in range(0, whole, CHUNK_BYTES):
            yield n, view[start : start + CHUNK_BYTES]
            n += 1
        pending += view[whole:]
    if pending:
        yield n, bytes(pending)


def add_chunks(tx: Tx, file_id: str, content: Content) -> None:
    """Store ``content`` (bytes or pieces) as the chunks of the file ``file_id``."""
    for n, chunk in chunks(content):
        tx.run(
            "INSERT INTO batchfsm_file_chunks (file_id, n, data) VALUES (?, ?, ?)",
            (file_id, n, chunk),
        )


def _content_into_chunks(tx: Tx) -> None:
    # One file at a time: memory holds the largest file once, not all of them.
    for (seq,) in tx.all("SELECT seq FROM batchfsm_files ORDER BY seq"):
        file_id, content = tx.one(
            "SELECT id, content FROM batchfsm_files WHERE seq = ?", (seq,)
        )
        add_chunks(tx, file_id, bytes(content))
    tx.run("ALTER TABLE batchfsm_files DROP COLUMN content")


def _projects_sql(text: str) -> tuple[str, ...]:
    """Version 9's statements in a dialect whose text type is ``text``."""
    default = f"{text} NOT NULL DEFAULT '{DEFAULT_PROJECT}'"
    return (
        f"ALTER TABLE batchfsm_batches ADD COLUMN project {default}",
        f"ALTER TABLE batchfsm_files ADD COLUMN project {default}",
        "CREATE INDEX batchfsm_batches_project ON batchfsm_batches (project, seq)",
        "CREATE INDEX batchfsm_files_project ON batchfsm_files (project, seq)",
        "CREATE INDEX batchfsm_files_project_purpose"
        " ON batchfsm_files (project, purpose, seq)",
    )


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
    Migration(
        3,
        "file content in chunks, so that reading a slice does not read the file",
        sqlite=(
            """CREATE TABLE batchfsm_file_chunks (
                file_id TEXT NOT NULL REFERENCES batchfsm_files (id),
                n INTEGER NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (file_id, n)
            )""",
        ),
        postgres=(
            """CREATE TABLE batchfsm_file_chunks (
                file_id text NOT NULL REFERENCES batchfsm_files (id),
                n integer NOT NULL,
                data bytea NOT NULL,
                PRIMARY KEY (file_id, n)
            )""",
        ),
        step=_content_into_chunks,
    ),
    Migration(
        4,
        "files' purpose and expiry as columns, indexed for paged listings",
        sqlite=(
            "ALTER TABLE batchfsm_files ADD COLUMN purpose TEXT",
            "ALTER TABLE batchfsm_files ADD COLUMN expires_at INTEGER",
            "UPDATE batchfsm_files SET purpose = json_extract(body, '$.purpose'),"
            " expires_at = json_extract(body, '$.expires_at')",
            "CREATE INDEX batchfsm_files_purpose ON batchfsm_files (purpose, seq)",
        ),
        postgres=(
            "ALTER TABLE batchfsm_files ADD COLUMN purpose text",
            "ALTER TABLE batchfsm_files ADD COLUMN expires_at bigint",
            "UPDATE batchfsm_files SET purpose = body::json ->> 'purpose',"
            " expires_at = (body::json ->> 'expires_at')::bigint",
            "CREATE INDEX batchfsm_files_purpose ON batchfsm_files (purpose, seq)",
        ),
    ),
    Migration(
        5,
        "heartbeat leases: a lease lasts while its holder's heartbeat does",
        sqlite=(
            """CREATE TABLE batchfsm_owners (
                owner TEXT PRIMARY KEY,
                process TEXT,
                heartbeat_at REAL NOT NULL,
                lease_until REAL NOT NULL
            )""",
            "ALTER TABLE batchfsm_batches DROP COLUMN lease_until",
            "CREATE INDEX batchfsm_batches_lease ON batchfsm_batches (lease_owner)"
            " WHERE lease_owner IS NOT NULL",
        ),
        postgres=(
            """CREATE TABLE batchfsm_owners (
                owner text PRIMARY KEY,
                process text,
                heartbeat_at double precision NOT NULL,
                lease_until double precision NOT NULL
            )""",
            "ALTER TABLE batchfsm_batches DROP COLUMN lease_until",
            "CREATE INDEX batchfsm_batches_lease ON batchfsm_batches (lease_owner)"
            " WHERE lease_owner IS NOT NULL",
        ),
    ),
    Migration(
        6,
        "the enqueued tokens per model, and what each batch holds of them",
        sqlite=(
            "ALTER TABLE batchfsm_batches ADD COLUMN enqueued_model TEXT",
            "ALTER TABLE batchfsm_batches ADD COLUMN enqueued_tokens INTEGER",
            """CREATE TABLE batchfsm_enqueued (
                model TEXT PRIMARY KEY,
                tokens INTEGER NOT NULL
            )""",
        ),
        postgres=(
            "ALTER TABLE batchfsm_batches ADD COLUMN enqueued_model text",
            "ALTER TABLE batchfsm_batches ADD COLUMN enqueued_tokens bigint",
            """CREATE TABLE batchfsm_enqueued (
                model text PRIMARY KEY,
                tokens bigint NOT NULL
            )""",
        ),
    ),
    Migration(
        7,
        "an index of files by expiry time, so that expired files are purged",
        sqlite=(
            "CREATE INDEX batchfsm_files_expiry ON batchfsm_files (expires_at, seq)"
            " WHERE expires_at IS NOT NULL",
        ),
        postgres=(
            "CREATE INDEX batchfsm_files_expiry ON batchfsm_files (expires_at, seq)"
            " WHERE expires_at IS NOT NULL",
        ),
    ),
    Migration(
        8,
        "each batch and file in a project: older ones in the default project",
        sqlite=_projects_sql("TEXT"),
        postgres=_projects_sql("text"),
    ),
    Migration(
        9,
        "batches an older batchfsm set aside after a store error are due again",
        sqlite=(
            f"UPDATE batchfsm_batches SET due_at = {RESUME} WHERE due_at IS NOT NULL"
            f" AND (due_at >= {NEVER}"
            " OR due_at = json_extract(body, '$.expires_at'))",
        ),
        postgres=(
            f"UPDATE batchfsm_batches SET due_at = {RESUME} WHERE due_at IS NOT NULL"
            f" AND (due_at >= {NEVER}"
            " OR due_at = (body::json ->> 'expires_at')::bigint)",
        ),
    ),
    Migration(
        10,
        "the outbox of batch events, webhook endpoints, deliveries and attempts",
        sqlite=(
            """CREATE TABLE batchfsm_events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                batch_id TEXT NOT NULL,
                type TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                project TEXT,
                body TEXT NOT NULL
            )""",
            "CREATE TABLE batchfsm_webhook_endpoints (url TEXT PRIMARY KEY)",
            """CREATE TABLE batchfsm_deliveries (
                event_id TEXT NOT NULL REFERENCES batchfsm_events (id),
                endpoint TEXT NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending',
                next_at REAL NOT NULL DEFAULT 0,
                epoch INTEGER NOT NULL DEFAULT 0,
                attempts INTEGER NOT NULL DEFAULT 0,
                deadline REAL,
                PRIMARY KEY (event_id, endpoint)
            )""",
            "CREATE INDEX batchfsm_deliveries_due ON batchfsm_deliveries"
            " (next_at) WHERE state = 'pending'",
            """CREATE TABLE batchfsm_delivery_attempts (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL,
                endpoint TEXT NOT NULL,
                at REAL NOT NULL,
                status INTEGER,
                error TEXT
            )""",
            "CREATE INDEX batchfsm_delivery_attempts_event"
            " ON batchfsm_delivery_attempts (event_id, seq)",
        ),
        postgres=(
            """CREATE TABLE batchfsm_events (
                seq bigserial PRIMARY KEY,
                id text NOT NULL UNIQUE,
                batch_id text NOT NULL,
                type text NOT NULL,
                created_at bigint NOT NULL,
                project text,
                body text NOT NULL
            )""",
            "CREATE TABLE batchfsm_webhook_endpoints (url text PRIMARY KEY)",
            """CREATE TABLE batchfsm_deliveries (
                event_id text NOT NULL REFERENCES batchfsm_events (id),
                endpoint text NOT NULL,
                state text NOT NULL DEFAULT 'pending',
                next_at double precision NOT NULL DEFAULT 0,
                epoch bigint NOT NULL DEFAULT 0,
                attempts integer NOT NULL DEFAULT 0,
                deadline double precision,
                PRIMARY KEY (event_id, endpoint)
            )""",
            "CREATE INDEX batchfsm_deliveries_due ON batchfsm_deliveries"
            " (next_at) WHERE state = 'pending'",
            """CREATE TABLE batchfsm_delivery_attempts (
                seq bigserial PRIMARY KEY,
                event_id text NOT NULL,
                endpoint text NOT NULL,
                at double precision NOT NULL,
                status integer,
                error text
            )""",
            "CREATE INDEX batchfsm_delivery_attempts_event"
            " ON batchfsm_delivery_attempts (event_id, seq)",
        ),
    ),
    Migration(
        11,
        "webhook endpoints bound to a project; each event keeps its batch's project",
        sqlite=(
            "ALTER TABLE batchfsm_webhook_endpoints ADD COLUMN project TEXT",
            "UPDATE batchfsm_events SET project = (SELECT b.project FROM"
            " batchfsm_batches b WHERE b.id = batchfsm_events.batch_id)"
            " WHERE project IS NULL",
        ),
        postgres=(
            "ALTER TABLE batchfsm_webhook_endpoints ADD COLUMN project text",
            "UPDATE batchfsm_events e SET project = b.project"
            " FROM batchfsm_batches b WHERE b.id = e.batch_id AND e.project IS NULL",
        ),
    ),
    Migration(
        12,
        "each project's stored bytes as a counter, not a sum over every file",
        sqlite=(
            """CREATE TABLE batchfsm_storage (
                project TEXT PRIMARY KEY,
                bytes INTEGER NOT NULL
            )""",
            "INSERT INTO batchfsm_storage (project, bytes)"
            " SELECT project, coalesce(sum(json_extract(body, '$.bytes')), 0)"
            " FROM batchfsm_files GROUP BY project",
        ),
        postgres=(
            """CREATE TABLE batchfsm_storage (
                project text PRIMARY KEY,
                bytes bigint NOT NULL
            )""",
            # Files are added by others meanwhile: none while the table fills.
            "LOCK TABLE batchfsm_files IN SHARE MODE",
            "INSERT INTO batchfsm_storage (project, bytes)"
            " SELECT project, coalesce(sum((body::json ->> 'bytes')::bigint), 0)"
            " FROM batchfsm_files GROUP BY project",
        ),
    ),
    Migration(
        13,
        "a big batch's request lines in chunks, claimed by any process",
        sqlite=(
            """CREATE TABLE batchfsm_line_chunks (
                batch_id TEXT NOT NULL REFERENCES batchfsm_batches (id),
                start INTEGER NOT NULL,
                stop INTEGER NOT NULL,
                lines INTEGER NOT NULL,
                done INTEGER NOT NULL DEFAULT 0,
                pos INTEGER NOT NULL,
                ahead TEXT NOT NULL DEFAULT '[]',
                owner TEXT,
                claim INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (batch_id, start)
            )""",
            "CREATE INDEX batchfsm_line_chunks_open ON batchfsm_line_chunks"
            " (batch_id) WHERE done < lines",
        ),
        postgres=(
            """CREATE TABLE batchfsm_line_chunks (
                batch_id text NOT NULL REFERENCES batchfsm_batches (id),
                start bigint NOT NULL,
                stop bigint NOT NULL,
                lines integer NOT NULL,
                done integer NOT NULL DEFAULT 0,
                pos bigint NOT NULL,
                ahead text NOT NULL DEFAULT '[]',
                owner text,
                claim bigint NOT NULL DEFAULT 0,
                PRIMARY KEY (batch_id, start)
            )""",
            "CREATE INDEX batchfsm_line_chunks_open ON batchfsm_line_chunks"
            " (batch_id) WHERE done < lines",
        ),
    ),
)

#: The schema version this batchfsm writes.
LATEST = MIGRATIONS[-1].version

assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))


def migrate(db: Database) -> int:
    """Bring the schema up to :data:`LATEST`; the version found before.

    Raises:
        SchemaVersionError: the database is newer than this batchfsm.
    """
    with db.transaction() as tx:
        db.lock_schema(tx)
        found = db.version(tx)
        if found > LATEST:
            raise SchemaVersionError(db.where, found, LATEST)
        if found == 0 and not db.postgres and db.foreign_tables(tx):
            # An SQLite file is one application's: never add ours to another's.
            raise StoreError(
                f"{db.where} is an SQLite database of another application "
                "(it has tables and no batchfsm schema version)"
            )
    db.prepare()
    for migration in MIGRATIONS[found:]:
        with db.transaction() as tx:
            db.lock_schema(tx)
            if db.version(tx) >= migration.version:  # another process got here
                continue
            statements = migration.postgres if db.postgres else migration.sqlite
            for statement in statements:
                tx.run(statement)
            if migration.step is not None:
                migration.step(tx)
            db.set_version(tx, migration.version)
    return found
