"""The throwaway cluster does not grow with the session: databases are dropped.

An empty database takes about 8 MB; kept until the session ended, the
suite's hundreds of them filled CI's disk (``DiskFull`` midway through).
"""

from __future__ import annotations

import psycopg

from .postgres import drop_made, new_database


def _names(server: str) -> set[str]:
    with psycopg.connect(server) as admin:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'"
        ).fetchall()
    return {name for (name,) in rows}


def test_no_database_of_an_earlier_test_is_left(postgres_server: str) -> None:
    # Meaningful after any test that made one: the autouse fixture dropped it.
    assert _names(postgres_server) == set()


def test_the_made_databases_are_dropped_even_while_connected(
    postgres_server: str,
) -> None:
    made = [new_database(postgres_server) for _ in range(2)]
    held = psycopg.connect(made[0])  # a store a test forgot to close
    try:
        assert _names(postgres_server) == {url.rsplit("/", 1)[1] for url in made}
        drop_made()
        assert _names(postgres_server) == set()
    finally:
        held.close()
    drop_made()  # nothing left to drop: no error
