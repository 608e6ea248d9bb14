"""The model endpoints served directly (issue #23 item 4): POST /v1/chat/completions
and the rest, answered by the default fake with the live API's error bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from batchfsm._endpoints import CATALOGUE
from batchfsm.emulator import Emulator, EmulatorTransport, create_app
from batchfsm.emulator._handlers import default_handler
from batchfsm.emulator._model_routes import STREAM_REFUSED


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    app = create_app(Emulator(seed=1), api_key="sk-test")
    with httpx2.Client(
        transport=EmulatorTransport(app),
        base_url="http://emulator",
        headers={"Authorization": "Bearer sk-test"},
    ) as client:
        yield client


def _body(path: str) -> dict[str, Any]:
    endpoint = CATALOGUE[path]
    value: Any = "Say hi."
    if endpoint.input_field == "messages":
        value = [{"role": "user", "content": "hi"}]
    return {"model": sorted(endpoint.models)[0], endpoint.input_field: value}


@pytest.mark.parametrize("path", list(CATALOGUE))
def test_every_batch_endpoint_answers_as_the_fake_does(
    http: httpx2.Client, path: str
) -> None:
    body = _body(path)
    answer = http.post(path, json=body)
    assert answer.status_code == 200
    expected = default_handler(path, body, "x", 0).body
    assert set(answer.json()) == set(expected)  # the endpoint's shape
    assert answer.headers["x-request-id"].startswith("req_")


def test_the_official_client_calls_them(http: httpx2.Client) -> None:
    client = openai.OpenAI(
        base_url="http://emulator/v1", api_key="sk-test", http_client=http
    )
    chat = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and chat.usage.total_tokens > 0
    vectors = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=4
    )
    assert [len(d.embedding) for d in vectors.data] == [4, 4]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
        )
    assert refused.value.code == "unsupported_value"


@pytest.mark.parametrize(
    ("change", "status", "message", "param", "code"),
    [
        (
            {"model": None},
            400,
            "You must provide a model parameter.",
            None,
            None,
        ),
        (
            {"model": "gpt-nope"},
            404,
            "The model 'gpt-nope' does not exist or you do not have access to it.",
            None,
            "model_not_found",
        ),
        ({"stream": True}, 400, STREAM_REFUSED, "stream", "unsupported_value"),
        (
            {"messages": []},
            400,
            "'messages' must be a non-empty array.",
            "messages",
            None,
        ),
    ],
)
def test_refusals_carry_the_api_error_body(
    http: httpx2.Client,
    change: dict[str, Any],
    status: int,
    message: str,
    param: str | None,
    code: str | None,
) -> None:
    body = {**_body("/v1/chat/completions"), **change}
    body = {k: v for k, v in body.items() if v is not None}
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == status
    assert answer.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def test_the_routes_keep_the_servers_rules(http: httpx2.Client) -> None:
    body = _body("/v1/embeddings")
    assert (
        http.post(
            "/v1/embeddings", json=body, headers={"Authorization": ""}
        ).status_code
        == 401
    )
    assert http.post("/v1/embeddings", content=b"{}").status_code == 415
    assert http.get("/v1/embeddings").status_code == 405


def _vector(emu: Emulator, body: dict[str, Any]) -> Any:
    with httpx2.Client(
        transport=EmulatorTransport(create_app(emu)), base_url="http://emulator"
    ) as client:
        answer = client.post("/v1/embeddings", json=body)
    if answer.status_code != 200:
        return answer.status_code, answer.json()["error"]
    return len(answer.json()["data"][0]["embedding"])


def test_an_embedding_has_the_models_size_unless_asked_otherwise() -> None:
    # As the live API answers: 1,536 for -3-small and ada-002, 3,072 for -3-large.
    plain = Emulator(seed=1)
    for model, size in (
        ("text-embedding-3-small", 1536),
        ("text-embedding-3-large", 3072),
        ("text-embedding-ada-002", 1536),
    ):
        assert _vector(plain, {"model": model, "input": "a"}) == size
    # Shorter when the emulator says so, but a request's dimensions win, and
    # no embedding is longer than its model's.
    short = Emulator(seed=1, embedding_dimensions=8)
    assert _vector(short, {"model": "text-embedding-3-large", "input": "a"}) == 8
    asked = {"model": "text-embedding-3-large", "input": "a", "dimensions": 100}
    assert _vector(short, asked) == 100
    wide = Emulator(seed=1, embedding_dimensions=2000)
    assert _vector(wide, {"model": "text-embedding-3-small", "input": "a"}) == 1536
    assert _vector(wide, {"model": "text-embedding-3-large", "input": "a"}) == 2000
    # The live API's refusal for ada-002 (param null), and ours past the size.
    ada = {"model": "text-embedding-ada-002", "input": "a", "dimensions": 8}
    assert _vector(short, ada) == (400, {
        "message": "This model does not support specifying dimensions.",
        "type": "invalid_request_error", "param": None, "code": None,
    })  # fmt: skip
    past = {"model": "text-embedding-3-small", "input": "a", "dimensions": 1537}
    assert _vector(plain, past)[1]["param"] == "dimensions"


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "8"])
def test_embedding_dimensions_must_be_a_whole_number(value: Any) -> None:
    with pytest.raises(ValueError, match="embedding_dimensions"):
        Emulator(embedding_dimensions=value)


def test_embedding_dimensions_size_only_the_fake() -> None:
    from batchfsm.emulator import VirtualClock, fake_handler

    clock = VirtualClock()
    emu = Emulator(clock=clock, handler=fake_handler, embedding_dimensions=4)
    line = (
        '{"custom_id": "a", "method": "POST", "url": "/v1/embeddings",'
        ' "body": {"model": "text-embedding-3-small", "input": "hi"}}'
    )
    upload = emu.create_file(line.encode(), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/embeddings")
    clock.advance(60)
    done = emu.retrieve_batch(batch.id)
    assert done.output_file_id is not None
    out = json.loads(emu.file_content(done.output_file_id))
    assert len(out["response"]["body"]["data"][0]["embedding"]) == 4
    with pytest.raises(ValueError, match="a handler of your own"):
        Emulator(handler=lambda *a: None, embedding_dimensions=4)  # type: ignore[arg-type]


@pytest.mark.parametrize("dimensions", [1, 31, 32, 33, 1536])
def test_embeddings_written_a_vector_at_a_time_are_the_same_json(
    dimensions: int,
) -> None:
    from batchfsm.emulator._pieces import dumps

    body = {"model": "text-embedding-3-small", "input": ["a", "é", "a"],
            "dimensions": dimensions}  # fmt: skip
    reply = default_handler("/v1/embeddings", body, "x", 0)
    data = reply.body["data"]
    whole = {**reply.body, "data": [data[i] for i in range(len(data))]}
    assert dumps(dict(reply.body)) == json.dumps(whole, separators=(",", ":"))
    assert data[-1] == data[2] and data[-1]["index"] == 2
    assert data[0]["embedding"] == data[2]["embedding"] != data[1]["embedding"]
    assert data[0:2] == whole["data"][0:2] and data == whole["data"]
    with pytest.raises(IndexError):
        data[3]
