"""A throwaway PostgreSQL cluster: real server binaries, in a temporary directory.

Private test support shared by the project's tests (``tests/postgres.py``
wraps it in pytest fixtures) and its benchmarks (``python -m benchmarks``),
which must run without pytest. :func:`cluster` runs ``initdb`` and
``postgres`` from the server binaries in ``$BATCHFSM_POSTGRES_BIN`` if set,
else on PATH or under ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql``
package), listening on a free loopback port, and stops it at the end; under
root it runs as the ``postgres`` user (the server refuses root). Only the
standard library at import; psycopg when a cluster starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "PostgresUnavailableError",
    "cluster",
    "drop_databases",
    "drop_made",
    "new_database",
    "restart",
]


@dataclasses.dataclass(frozen=True)
class _Cluster:
    bin_dir: Path
    data: Path
    log: Path
    as_user: dict[str, Any]


#: The clusters :func:`cluster` runs, by their conninfo, for :func:`restart`.
_running: dict[str, _Cluster] = {}

#: The URLs of the databases :func:`new_database` made and nothing dropped yet.
_made: list[str] = []


def _pg_ctl(found: _Cluster, *args: str) -> None:
    done = subprocess.run(
        [str(found.bin_dir / "pg_ctl"), "-D", str(found.data), "-w", *args],
        capture_output=True, text=True, check=False, **found.as_user,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"pg_ctl {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        )


def restart(url: str) -> None:
    """``pg_ctl restart -m immediate`` of the cluster serving ``url``: a crash.

    Every connection is cut without a word, and the server recovers from its
    WAL before it takes connections again (with the options it ran with).
    Returns once it takes them.
    """
    found = _running[url.rsplit("/", 1)[0] + "/postgres"]
    _pg_ctl(found, "-m", "immediate", "-l", str(found.log), "restart")


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


def _server_user() -> dict[str, Any]:
    """``subprocess`` options: the server runs as ``postgres`` under root."""
    if os.geteuid() != 0:
        return {}
    # postgres refuses root: run the cluster as the postgres user.
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailableError(
            "running as root and there is no 'postgres' user"
        ) from None
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _server_binaries() -> Path:
    """The directory of ``initdb`` and ``postgres``, once psycopg is known to import."""
    try:
        importlib.import_module("psycopg")
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
    return bin_dir


def _initdb(found: _Cluster, root: Path) -> None:
    """A new cluster in ``found.data``, trusting local connections."""
    done = subprocess.run(
        [
            str(found.bin_dir / "initdb"),
            *("-D", str(found.data), "-U", "postgres", "-A", "trust"),
            *("-E", "UTF8", "--locale=C", "--no-sync"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
        **found.as_user,
    )
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")


def _start(
    found: _Cluster, root: Path, port: int, durability: tuple[str, ...]
) -> subprocess.Popen[bytes]:
    """The ``postgres`` server on ``port``, its output in ``found.log``."""
    sockets = root / "sockets"
    sockets.mkdir()
    if found.as_user:
        os.chown(sockets, found.as_user["user"], found.as_user["group"])
    with open(found.log, "wb") as log_file:
        return subprocess.Popen(
            [
                str(found.bin_dir / "postgres"),
                *("-D", str(found.data), "-p", str(port), "-k", str(sockets)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"),
                *durability,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
            **found.as_user,
        )


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Return once the server takes connections; raise with its log if it died."""
    import psycopg

    deadline = time.monotonic() + 60  # a readiness wait, not a speed check
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:  # polling for readiness
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "PostgreSQL did not start:\n" + log.read_text(errors="replace")
                ) from None
            time.sleep(0.1)


def _stop(found: _Cluster, server: subprocess.Popen[bytes]) -> None:
    """Stop the server: pg_ctl's own if it was restarted, then a fast shutdown."""
    if server.poll() is not None:  # restarted: pg_ctl's server now
        with contextlib.suppress(RuntimeError):
            _pg_ctl(found, "-m", "immediate", "stop")
    server.send_signal(signal.SIGINT)  # "fast" shutdown
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextlib.contextmanager
def cluster(*, durable: bool = False, synchronous_commit: bool = True) -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yield its conninfo (a URL).

    The tests' cluster runs ``fsync=off`` (it dies with them); ``durable``
    runs it with PostgreSQL's default durability (``fsync=on``, full page
    writes), as a server is normally configured: the benchmarks measure
    both. ``synchronous_commit=False`` sets ``synchronous_commit=off`` (a
    commit returns before its WAL reaches the disk; a crash of the server
    may lose the last commits, never consistency).

    Raises:
        PostgresUnavailableError: no psycopg, no server binaries, or root without a
            ``postgres`` user.
    """
    bin_dir = _server_binaries()
    as_user = _server_user()
    # Not under pytest's tmp_path: its parent is private to root.
    root = Path(tempfile.mkdtemp(prefix="batchfsm-pg-"))
    try:
        if as_user:
            os.chown(root, as_user["user"], as_user["group"])
        found = _Cluster(bin_dir, root / "data", root / "server.log", as_user)
        _initdb(found, root)
        port = _free_port()
        server = _start(found, root, port, _durability(durable, synchronous_commit))
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        try:
            _wait_ready(url, server, found.log)
            _running[url] = dataclasses.replace(found, log=root / "restart.log")
            yield url
        finally:
            _running.pop(url, None)
            _made[:] = [
                made
                for made in _made
                if not made.startswith(url.removesuffix("postgres"))
            ]
            _stop(found, server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _durability(durable: bool, synchronous_commit: bool) -> tuple[str, ...]:
    """The server options for :func:`cluster`'s durability settings."""
    options: tuple[str, ...] = ()
    if not durable:  # the tests' cluster dies with them
        options = ("-c", "fsync=off", "-c", "full_page_writes=off")
    if not synchronous_commit:
        options += ("-c", "synchronous_commit=off")
    return options


def server_processes(url: str) -> list[int]:
    """The process ids of the cluster :func:`cluster` runs that serves ``url``.

    Its postmaster and the postmaster's children (none if ``url`` is not of
    such a cluster: a SQLite URL, say). For a benchmark's count of the CPU
    the database used.
    """
    found = _running.get(url.rsplit("/", 1)[0] + "/postgres")
    if found is None:
        return []
    postmaster = int((found.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def new_database(server: str) -> str:
    """Create a new, empty database on the cluster ``server``; its URL.

    :func:`drop_databases` (or :func:`drop_made`) drops it: an empty database
    takes about 8 MB, and a session's tests make hundreds.
    """
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = server.rsplit("/", 1)[0] + f"/{name}"
    _made.append(url)
    return url


def drop_databases(urls: Iterable[str]) -> None:
    """Drop databases :func:`new_database` made, closing their connections first."""
    import psycopg

    urls = list(urls)
    names: dict[str, list[str]] = {}
    for url in urls:
        server, name = url.rsplit("/", 1)
        names.setdefault(server, []).append(name)
    for server, of_server in names.items():
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            for name in of_server:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _made[:] = [made for made in _made if made not in urls]


def drop_made() -> None:
    """Drop every database :func:`new_database` made that is not dropped yet."""
    drop_databases(_made)
