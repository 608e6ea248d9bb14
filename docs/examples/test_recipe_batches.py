"""Batches that fail or expire on command, and time that moves when told."""


def test_a_batch_that_expires(batch_emulator, batch_emulator_openai):
    upload = batch_emulator.create_file(b"", "in.jsonl", "batch")
    batch = batch_emulator_openai.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch_emulator.expire_batch(batch.id)
    assert batch_emulator_openai.batches.retrieve(batch.id).status == "expired"


def test_a_batch_that_fails(batch_emulator, batch_emulator_openai):
    upload = batch_emulator.create_file(b"", "in.jsonl", "batch")
    batch = batch_emulator_openai.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch_emulator.fail_batch(batch.id, code="quota_exceeded", message="No quota.")
    failed = batch_emulator_openai.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.errors.data[0].code == "quota_exceeded"


def test_time_moves_when_told(batch_emulator, batch_emulator_openai):
    line = (
        b'{"custom_id": "r1", "method": "POST", "url": "/v1/embeddings",'
        b' "body": {"model": "text-embedding-3-small", "input": "hi"}}'
    )
    upload = batch_emulator.create_file(line, "in.jsonl", "batch")
    batch = batch_emulator_openai.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    assert batch_emulator_openai.batches.retrieve(batch.id).status == "validating"
    batch_emulator.clock.advance(60)
    assert batch_emulator_openai.batches.retrieve(batch.id).status == "completed"
