"""A throwaway PostgreSQL cluster for the store tests: real server, no mocks.

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

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "PostgresUnavailableError",
    "cluster",
    "new_database",
    "postgres_server",
    "postgres_url",
]


class PostgresUnavailableError(Exception):
    """There is no way to start a PostgreSQL server here; the message says why."""


def _binaries() -> Path | None:
    chosen = os.environ.get("BATCHFSM_POSTGRES_BIN")
    if chosen is not None:  # this directory, or none at all
        return Path(chosen) if (Path(chosen) / "initdb").is_file() else None
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).parent
    # Debian keeps the server binaries off PATH, one directory per major version.
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yield its conninfo (a URL).

    Raises:
        PostgresUnavailableError: no psycopg, no server binaries, or root without a
            ``postgres`` user.
    """
    try:
        import psycopg
    except ImportError:
        raise PostgresUnavailableError(
            "psycopg is not installed (pip install 'batchfsm[postgres]')"
        ) from None
    bin_dir = _binaries()
    if bin_dir is None:
        raise PostgresUnavailableError(
            "no PostgreSQL server binaries (initdb, postgres) on PATH or under "
            "/usr/lib/postgresql/*/bin; install Debian's 'postgresql' package"
        )
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        # postgres refuses root: run the cluster as the postgres user.
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailableError(
                "running as root and there is no 'postgres' user"
            ) from None
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid}
    # Not under pytest's tmp_path: its parent is private to root.
    root = Path(tempfile.mkdtemp(prefix="batchfsm-pg-"))
    try:
        if as_user:
            os.chown(root, as_user["user"], as_user["group"])
        data, sockets = root / "data", root / "sockets"
        initdb = subprocess.run(
            [
                str(bin_dir / "initdb"),
                *("-D", str(data), "-U", "postgres", "-A", "trust"),
                *("-E", "UTF8", "--locale=C", "--no-sync"),
            ],
            capture_output=True,
            text=True,
            cwd=root,
            check=False,
            **as_user,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        sockets.mkdir()
        if as_user:
            os.chown(sockets, as_user["user"], as_user["group"])
        port = _free_port()
        log = root / "server.log"
        with open(log, "wb") as log_file:
            # The cluster dies with the tests: it needs no durability of its own.
            server = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    *("-D", str(data), "-p", str(port), "-k", str(sockets)),
                    *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                    *("-c", "full_page_writes=off", "-c", "max_connections=300"),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=root,
                **as_user,
            )
        try:
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            deadline = time.monotonic() + 60  # a readiness wait, not a speed check
            while True:
                try:
                    psycopg.connect(url, connect_timeout=2).close()
                    break
                except psycopg.OperationalError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            "PostgreSQL did not start:\n"
                            + log.read_text(errors="replace")
                        ) from None
                    time.sleep(0.1)
            yield url
        finally:
            server.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


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


def new_database(server: str) -> str:
    """Create a new, empty database on the cluster ``server``; its URL.

    The cluster goes with the session, so the databases are not dropped one
    by one.
    """
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return server.rsplit("/", 1)[0] + f"/{name}"


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
