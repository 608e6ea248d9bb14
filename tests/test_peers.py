"""``serve --upstream`` in front of another project's OpenAI-compatible server.

LiteLLM's proxy, with ``mock_response``: it installs from PyPI (the ``peers``
extra) and answers without model weights or network. It is heavy (about a
hundred packages, minutes to install), so it is not in the ``test`` extra:
``tox -e peers`` installs it and runs this file with ``BATCHFSM_PEERS=1``,
where a missing LiteLLM fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx2
import openai
import pytest

from batchfsm.emulator import make_input_file

CHAT: Final = "/v1/chat/completions"
KEY = "sk-litellm-test-key-0123456789"
#: LiteLLM takes 20 s or so to start here: a readiness wait, not a speed assertion.
PATIENCE = 180
CONFIG = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: fake
      mock_response: "Hello from LiteLLM"
"""


def _litellm() -> str:
    found = shutil.which("litellm", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("BATCHFSM_PEERS"):
            pytest.fail("LiteLLM is not installed: pip install 'batchfsm[peers]'")
        pytest.skip("LiteLLM not installed (the peers extra; tox -e peers runs it)")
    return found


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def litellm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LiteLLM's proxy on loopback, answering gpt-4o-mini with a mock; its URL."""
    command = _litellm()
    config = tmp_path_factory.mktemp("litellm") / "config.yaml"
    config.write_text(CONFIG)
    port = _port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download at start
        "LITELLM_TELEMETRY": "False",
    }
    server = subprocess.Popen(
        [command, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + PATIENCE
    try:
        while True:
            try:
                httpx2.get(f"{base}/health/liveliness")
                break
            except httpx2.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("LiteLLM's proxy did not start")
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _finish(client: openai.OpenAI, batch_id: str) -> Any:
    deadline = time.monotonic() + PATIENCE
    batch = client.batches.retrieve(batch_id)
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"stuck in {batch.status}"
        time.sleep(0.05)
        batch = client.batches.retrieve(batch_id)
    return batch


def _run(client: openai.OpenAI, data: bytes) -> tuple[Any, list[dict[str, Any]]]:
    upload = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
    )
    batch = _finish(client, batch.id)
    lines = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id is not None:
            text = client.files.content(file_id).text
            lines += [json.loads(line) for line in text.splitlines()]
    return batch, lines


def test_a_batch_runs_on_litellm(
    serve: Callable[..., str],
    litellm: str,
    official_client: Callable[[str], openai.OpenAI],
) -> None:
    base = serve("--upstream", litellm, "--upstream-api-key", KEY, "--speed", "100")
    client = official_client(base)
    batch, lines = _run(client, make_input_file(50))
    assert batch.status == "completed"
    assert batch.request_counts.completed == 50
    assert sorted(line["custom_id"] for line in lines) == sorted(
        f"request-{i}" for i in range(50)
    )
    bodies = [line["response"]["body"] for line in lines]
    assert {b["choices"][0]["message"]["content"] for b in bodies} == {
        "Hello from LiteLLM"
    }
    # usage: the sum of LiteLLM's own counts.
    assert batch.usage.input_tokens == sum(b["usage"]["prompt_tokens"] for b in bodies)
    assert batch.usage.output_tokens == sum(
        b["usage"]["completion_tokens"] for b in bodies
    )


def test_litellm_refusals_become_error_lines(
    serve: Callable[..., str],
    litellm: str,
    official_client: Callable[[str], openai.OpenAI],
) -> None:
    # gpt-4o is no model of this LiteLLM: its refusal, status and body, is the line.
    base = serve("--upstream", litellm, "--upstream-api-key", KEY, "--speed", "100")
    client = official_client(base)
    batch, lines = _run(client, make_input_file(3, model="gpt-4o"))
    assert batch.status == "completed"
    assert batch.output_file_id is None and batch.request_counts.failed == 3
    direct = httpx2.post(
        f"{litellm}{CHAT}",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert 400 <= direct.status_code < 500
    for line in lines:
        assert line["error"] is None
        assert line["response"]["status_code"] == direct.status_code
        assert "error" in line["response"]["body"]
