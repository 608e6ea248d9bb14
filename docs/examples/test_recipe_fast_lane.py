"""The fast lane: client code that polls sees its batch finished at once."""

import io
import time

import pytest

from batchfsm import check_trace
from batchfsm.emulator import make_input_file


@pytest.fixture
def batch_emulator_options():
    return {"finish_on_retrieve": True}


def run_batch(client, lines: bytes) -> str:
    """The code under test: upload, create, poll until done, download."""
    upload = client.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    while (batch := client.batches.retrieve(batch.id)).status not in (
        "completed", "failed", "expired", "cancelled",
    ):  # fmt: skip
        time.sleep(10)  # never reached in the fast lane
    return client.files.content(batch.output_file_id).text


def test_a_client_flow_costs_one_retrieve(batch_emulator, batch_emulator_openai):
    text = run_batch(batch_emulator_openai, make_input_file(3))
    assert len(text.splitlines()) == 3
    retrieves = batch_emulator.assert_called("GET", "/v1/batches/*", times=1)
    assert retrieves[0].status == 200
    (batch,) = batch_emulator.list_batches()["data"]
    assert batch["status"] == "completed"
    assert check_trace([batch]) == []  # every stamp of the way written
