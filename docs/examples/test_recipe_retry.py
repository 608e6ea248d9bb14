"""A retry loop tested by making the next two calls answer 429."""

import openai


def create_with_retries(client: openai.OpenAI, file_id: str, attempts: int = 5):
    """The code under test: it retries a create refused by a rate limit."""
    for attempt in range(attempts):
        try:
            return client.batches.create(
                input_file_id=file_id,
                endpoint="/v1/embeddings",
                completion_window="24h",
            )
        except openai.RateLimitError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def test_two_429s_then_success(batch_emulator, batch_emulator_openai):
    upload = batch_emulator.create_file(b"", "in.jsonl", "batch")
    batch_emulator.fail_next("/v1/batches", method="POST", status=429, times=2)

    batch = create_with_retries(batch_emulator_openai, upload.id)

    assert batch.status == "validating"
    batch_emulator.assert_called("POST", "/v1/batches", status=429, times=2)
    batch_emulator.assert_called("POST", "/v1/batches", status=200, times=1)


def test_the_clients_own_retries(batch_emulator_env):
    # The official client retries a 429 itself; retry_after keeps its wait short.
    batch_emulator_env.fail_next("/v1/batches", status=429, times=2, retry_after=0.01)
    with openai.OpenAI(max_retries=2) as client:
        assert client.batches.list().data == []
    assert [call.status for call in batch_emulator_env.requests] == [429, 429, 200]
