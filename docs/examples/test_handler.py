import io
import json

import pytest

from batchfsm.emulator import Reply


def rate_limited(endpoint, body, custom_id, now):
    """Answer every request the way a model endpoint answers when busy."""
    error = {"message": "Rate limit reached.", "type": "requests", "param": None}
    return Reply(429, {"error": {**error, "code": "rate_limit_exceeded"}})


@pytest.fixture
def batch_emulator_options():
    return {"handler": rate_limited, "request_seconds": 2}


def test_every_request_fails_into_the_error_file(batch_emulator, batch_emulator_openai):
    client = batch_emulator_openai
    body = {"model": "text-embedding-3-small", "input": "hello"}
    line = {"custom_id": "q1", "method": "POST", "url": "/v1/embeddings", "body": body}
    upload = client.files.create(
        file=("in.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch_emulator.clock.advance(60)
    batch = client.batches.retrieve(batch.id)
    assert (batch.status, batch.output_file_id) == ("completed", None)
    result = json.loads(client.files.content(batch.error_file_id).text)
    assert result["response"]["status_code"] == 429
