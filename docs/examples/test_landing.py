import io
import json


def test_my_batch_job_completes(batch_emulator, batch_emulator_openai):
    body = {"model": "text-embedding-3-small", "input": "hello"}
    line = {"custom_id": "q1", "method": "POST", "url": "/v1/embeddings", "body": body}
    upload = batch_emulator_openai.files.create(
        file=("in.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch"
    )
    batch = batch_emulator_openai.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch_emulator.clock.advance(60)  # virtual time: nothing sleeps
    assert batch_emulator_openai.batches.retrieve(batch.id).status == "completed"
