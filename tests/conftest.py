import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
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
            except httpx2.TransportError:  # noqa: PERF203 - polling for readiness
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(server.communicate()[1].decode()) from None
                time.sleep(0.05)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)
        if server.stderr:
            server.stderr.close()
