"""A file of 1 MB sent in parts through ``/v1/uploads`` becomes a batch input."""

import json


def embedding_lines(size: int) -> bytes:
    """Embedding requests (JSON Lines), about ``size`` bytes in all."""
    lines, total, number = [], 0, 0
    while total < size:
        line = (
            json.dumps(
                {
                    "custom_id": f"r{number}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": "text-embedding-3-small", "input": "x" * 500},
                }
            ).encode()
            + b"\n"
        )
        lines.append(line)
        total, number = total + len(line), number + 1
    return b"".join(lines)


def test_a_1_mb_upload_becomes_a_batch_that_completes(
    batch_emulator, batch_emulator_openai
):
    content = embedding_lines(1024 * 1024)
    upload = batch_emulator_openai.uploads.upload_file_chunked(
        file=content,
        bytes=len(content),
        filename="requests.jsonl",
        mime_type="application/jsonl",
        purpose="batch",
        part_size=256 * 1024,
    )
    assert upload.status == "completed"
    assert upload.file.bytes == len(content)
    batch = batch_emulator_openai.batches.create(
        input_file_id=upload.file.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
    )
    batch_emulator.clock.advance(86_000)

    done = batch_emulator_openai.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts.completed == content.count(b"\n")
    assert len(batch_emulator.calls_to("POST", "/v1/uploads/*/parts")) == 5
