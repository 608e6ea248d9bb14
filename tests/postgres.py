"""A throwaway PostgreSQL cluster for the store tests: real server, no mocks.

The cluster itself is started by :mod:`batchfsm._postgres_cluster` (shared
with the benchmarks, which run without pytest); here are its fixtures.

``postgres_server`` (session) runs ``initdb`` and ``postgres`` from the server
binaries in ``$BATCHFSM_POSTGRES_BIN`` if set, else on PATH or under
``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package, which ``.ci/run`` installs), in a temporary directory,
listening on a free loopback port; it yields the cluster's conninfo and stops
the server at the end of the session. The server refuses to run as root, so
under root it runs as the ``postgres`` user. ``postgres_url`` (function) is a
new empty database on it for each test.

Where the binaries or psycopg are missing the tests skip and say why, except
under CI (the ``CI`` variable set), where they fail: CI must run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from batchfsm._postgres_cluster import (
    PostgresUnavailableError,
    cluster,
    drop_databases,
    drop_made,
    new_database,
    restart,
)

__all__ = [
    "PostgresUnavailableError",
    "cluster",
    "drop_databases",
    "drop_made",
    "new_database",
    "postgres_server",
    "postgres_url",
    "restart",
]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session; its conninfo (a URL).

    Skips saying why where none can start; fails instead under CI.
    """
    try:
        with cluster() as url:
            yield url
    except PostgresUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run under CI: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {exc}")


@pytest.fixture(autouse=True)
def _drop_databases_made() -> Iterator[None]:
    """Drop the databases a test made once it ended (autouse: set up first,
    so torn down after the servers and stores that used them)."""
    yield
    drop_made()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on the session's cluster."""
    return new_database(postgres_server)


def needs_postgres(item: pytest.Item) -> bool:
    """Whether a test runs against PostgreSQL: it takes this module's fixtures,
    or a parameter named ``"postgres"`` picks the store it asks for by name."""
    names = getattr(item, "fixturenames", ())
    if "postgres_server" in names or "postgres_url" in names:
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "postgres" in callspec.params.values()


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, for suites that load this plugin without our pyproject.
    config.addinivalue_line("markers", "postgres: runs against PostgreSQL")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the PostgreSQL tests ``postgres``: ``-m "not postgres"`` leaves them out."""
    for item in items:
        if needs_postgres(item):
            item.add_marker(pytest.mark.postgres)
