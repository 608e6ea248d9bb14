"""The model endpoints served directly (issue #23 item 4): POST /v1/chat/completions
and the rest, answered by the default fake with the live API's error bodies."""

from __future__ import annotations

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
