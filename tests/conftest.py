import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile(
    "thorough",
    max_examples=2_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Reference data copied into the repository (tests/data/README.md says from where).
DATA = Path(__file__).resolve().parent / "data"
SCHEMA_PATH = DATA / "batch.schema.json"
#: Every key of the API's Batch object, as the reference schema lists them.
BATCH_KEYS = frozenset(json.loads(SCHEMA_PATH.read_text())["properties"])
# Read at import so a missing file fails collection loudly instead of turning the
# parametrized tests below into an empty parameter set.
REFERENCE_EXAMPLES = sorted((DATA / "examples").glob("*.json"))
if not REFERENCE_EXAMPLES or not SCHEMA_PATH.is_file():
    raise RuntimeError(f"test data missing under {DATA}: is the checkout complete?")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(params=REFERENCE_EXAMPLES, ids=lambda p: p.stem)
def reference_example(request: pytest.FixtureRequest) -> dict[str, Any]:
    data: dict[str, Any] = load_json(request.param)
    return data


pytest_plugins = ["pytester", "tests.postgres"]


@pytest.fixture
def os_draws(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each draw from the OS's random source during the test.

    ``os.urandom`` and the reference to it ``secrets`` draws through: each
    draw hands the GIL back (see ``_stores._RandomBytes``).
    """
    draws: list[int] = []

    def counted(real: Callable[[int], bytes]) -> Callable[[int], bytes]:
        def urandom(size: int) -> bytes:
            draws.append(size)
            return bytes(real(size))

        return urandom

    monkeypatch.setattr(os, "urandom", counted(os.urandom))
    monkeypatch.setattr(random, "_urandom", counted(random._urandom))  # type: ignore[attr-defined]
    return draws


@pytest.fixture
def official_client() -> Iterator[Callable[[str], openai.OpenAI]]:
    """The official client on a server's base URL, closed when the test ends.

    A pooled connection left to the garbage collector is an unclosed-socket
    ResourceWarning (an error here), raised wherever the collector runs.
    """
    made: list[openai.OpenAI] = []

    def make(base: str) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Start ``batchfsm serve`` with the given arguments; returns its base URL."""
    servers: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "batchfsm", "serve", "--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        servers.append(server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30  # a readiness wait, not a speed assertion
        while True:
            try:
                httpx2.get(f"{base}/v1/batches")
                return base
            except httpx2.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(server.communicate()[1].decode()) from None
                time.sleep(0.05)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()


#: A test that uses one of these starts a process, a server or a cluster: slow.
SLOW_FIXTURES = frozenset({"pytester", "serve", "postgres_server"})
#: Modules whose tests run the command in subprocesses or move big files.
SLOW_MODULES = frozenset(
    {
        "test_cancel_race.py",
        "test_cli.py",
        "test_conform_cli.py",
        "test_content.py",
        "test_docs_commands.py",
        "test_durable.py",
        "test_catalogue.py",
        "test_docs_reference.py",
        "test_extras.py",
        "test_faults.py",
        "test_installed_copy.py",
        "test_markers.py",
        "test_protocol.py",
        "test_serve_kit.py",
        "test_testing.py",
    }
)
#: Tests of other modules that do the same (big answers, the command's refusals).
SLOW_TESTS = frozenset(
    {
        "test_a_huge_answer_is_written_in_small_pieces",
        "test_a_result_line_in_pieces_is_the_same_json",
        "test_big_answers_are_written_as_they_come_not_held_by_the_hundred",
        "test_serve_refuses_a_bad_enqueued_token_limit_in_one_line",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` what ``tox -e fast`` (``-m "not slow"``) leaves out."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (
            fixtures & SLOW_FIXTURES
            or item.get_closest_marker("postgres")
            or item.path.name in SLOW_MODULES
            or getattr(item, "originalname", None) in SLOW_TESTS
        ):
            item.add_marker(pytest.mark.slow)
