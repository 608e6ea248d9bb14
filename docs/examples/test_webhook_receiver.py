import io
import json

import openai

finished: list[str] = []


def handle_webhook(client: openai.OpenAI, body: bytes, headers: dict[str, str]) -> int:
    """Your receiver: what your web framework's route calls with the request."""
    try:
        event = client.webhooks.unwrap(body, headers)  # verifies the signature
    except openai.InvalidWebhookSignatureError:
        return 400
    if event.type == "batch.completed":
        finished.append(event.data.id)
    return 200


def test_my_receiver_hears_of_the_batch_it_started(
    batch_emulator, batch_emulator_openai, batch_emulator_webhooks
):
    body = {"model": "text-embedding-3-small", "input": "hello"}
    line = {"custom_id": "q1", "method": "POST", "url": "/v1/embeddings", "body": body}
    upload = batch_emulator_openai.files.create(
        file=("in.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch"
    )
    batch = batch_emulator_openai.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    batch_emulator.clock.advance(60)
    (event,) = batch_emulator_webhooks.events()  # what reached the receiver
    assert (event["type"], event["data"]["id"]) == ("batch.completed", batch.id)

    (request,) = batch_emulator_webhooks.receiver.received  # as it was sent
    client = openai.OpenAI(
        api_key="unused", webhook_secret=batch_emulator_webhooks.secret
    )
    assert handle_webhook(client, request.body, request.headers) == 200
    assert finished == [batch.id]
