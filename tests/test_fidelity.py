"""The emulator answers as the live Batch and Files API does: its
documented and observed facts.

Every test goes through the official ``openai`` client, in-process, and
asserts status, code, param and message text; a few go through ``batchfsm
serve``. Where the live API's wording was recorded, the quote is repeated
here word for word.
"""

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._endpoints import ENDPOINT_MODELS, ENDPOINTS
from batchfsm.emulator import (
    ApiError,
    Emulator,
    EmulatorTransport,
    VirtualClock,
    create_app,
    make_input_file,
    validate_input,
)
from batchfsm.emulator._files import upload_problem

CHAT: Any = "/v1/chat/completions"
INVALID: Any = "/v1/invalid"
DAY = 86_400
INPUT_FIELD = {
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/moderations": "input",
    "/v1/images/generations": "prompt",
    "/v1/images/edits": "prompt",
    "/v1/videos": "prompt",
}


def client_for(emulator: Emulator) -> Iterator[openai.OpenAI]:
    transport = EmulatorTransport(create_app(emulator))
    with httpx2.Client(transport=transport, base_url="http://e") as http:
        yield openai.OpenAI(
            api_key="sk-test", base_url="http://e/v1", http_client=http, max_retries=0
        )
    transport.close()


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(clock=VirtualClock(1_764_000_000))


@pytest.fixture
def client(emulator: Emulator) -> Iterator[openai.OpenAI]:
    yield from client_for(emulator)


def upload(client: openai.OpenAI, content: bytes, name: str = "in.jsonl") -> Any:
    return client.files.create(file=(name, io.BytesIO(content)), purpose="batch")


def run_batch(
    client: openai.OpenAI,
    emulator: Emulator,
    content: bytes,
    endpoint: Any = CHAT,
    **kw: Any,
) -> Any:
    batch = client.batches.create(
        input_file_id=upload(client, content).id,
        endpoint=endpoint,
        completion_window="24h",
        **kw,
    )
    emulator.clock.advance(600)  # type: ignore[attr-defined]
    return client.batches.retrieve(batch.id)


def request_line(number: int, endpoint: str, body: dict[str, Any]) -> str:
    return json.dumps(
        {"custom_id": f"r{number}", "method": "POST", "url": endpoint, "body": body}
    )


def error_of(info: pytest.ExceptionInfo[openai.APIStatusError]) -> Any:
    """(status, code, param, message) of the API error body the client got."""
    error = info.value
    assert isinstance(error.body, dict)
    assert set(error.body) == {"message", "type", "param", "code"}
    return (error.status_code, error.code, error.param, error.body["message"])


# -- 1. models -------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["gpt-4o-2024-05-13", "gpt-3.5-turbo-0125", "gpt-4o-mini-2024-07-18"]
)
def test_dated_snapshots_run(client, emulator, model):
    done = run_batch(client, emulator, make_input_file(2, model=model))
    assert done.status == "completed", done.errors
    assert done.model == model


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ENDPOINTS).flatmap(
    lambda e: st.tuples(st.just(e), st.sampled_from(sorted(ENDPOINT_MODELS[e])))
))  # fmt: skip
def test_every_catalogued_model_passes_validation_on_its_endpoint(case):
    endpoint, model = case
    requests, errors = validate_input(
        make_input_file(1, endpoint=endpoint, model=model), endpoint
    )
    assert errors == [] and len(requests) == 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_catalogued_model_completes_on_every_endpoint(client, emulator, endpoint):
    model = sorted(ENDPOINT_MODELS[endpoint])[0]
    content = make_input_file(1, endpoint=endpoint, model=model)
    done = run_batch(client, emulator, content, endpoint=endpoint)
    assert done.status == "completed", done.errors
    assert done.request_counts.completed == 1


def test_completions_serves_only_instruct_and_legacy_models(client, emulator):
    content = make_input_file(1, endpoint="/v1/completions", model="gpt-4o")
    done = run_batch(client, emulator, content, endpoint="/v1/completions")
    assert done.status == "failed"
    [error] = done.errors.data
    assert (error.code, error.line, error.param, error.message) == (
        "model_not_found",
        1,
        "body.model",
        "The provided model 'gpt-4o' is not supported by the Batch API.",
    )


def test_extra_models_and_any_model_widen_the_catalogue():
    content = make_input_file(1, model="ft:gpt-4o-mini:acme::abc")
    for options, status in (
        ({}, "failed"),
        ({"extra_models": ["ft:gpt-4o-mini:acme::abc"]}, "completed"),
        ({"any_model": True}, "completed"),
    ):
        emulator = Emulator(**options)
        for client in client_for(emulator):
            assert run_batch(client, emulator, content).status == status, options


class TestFixtureOptions:
    @pytest.fixture
    def batch_emulator_options(self) -> dict[str, Any]:
        return {"extra_models": ["house-model"]}

    def test_the_pytest_fixture_takes_model_options(
        self, batch_emulator, batch_emulator_openai
    ):
        content = make_input_file(1, model="house-model")
        done = run_batch(batch_emulator_openai, batch_emulator, content)
        assert done.status == "completed"


def poll_real(client: openai.OpenAI, batch_id: str) -> Any:
    """Wait for a batch of ``batchfsm serve`` to end (a readiness wait)."""
    deadline = time.monotonic() + 60
    batch = client.batches.retrieve(batch_id)
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.02)
        batch = client.batches.retrieve(batch_id)
    return batch


def test_serve_model_and_any_model_options(serve):
    content = make_input_file(1, model="house-model")
    for args, status in (
        ((), "failed"),
        (("--model", "house-model", "--model", "other"), "completed"),
        (("--any-model",), "completed"),
    ):
        base = serve("--speed", "2000", *args)
        client = openai.OpenAI(api_key="sk", base_url=f"{base}/v1", max_retries=0)
        with client:
            batch = client.batches.create(
                input_file_id=upload(client, content).id,
                endpoint=CHAT,
                completion_window="24h",
            )
            assert batch._request_id and batch._request_id.startswith("req_")
            assert poll_real(client, batch.id).status == status, args


# -- 2. required body fields ------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    lines=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=5),
)
def test_missing_model_and_input_are_one_error_each_with_its_line(endpoint, lines):
    model = sorted(ENDPOINT_MODELS[endpoint])[0]
    field = INPUT_FIELD[endpoint]
    rows, expected = [], []
    for number, (has_model, has_input) in enumerate(lines, start=1):
        body: dict[str, Any] = {}
        if has_model:
            body["model"] = model
        else:
            expected.append(("invalid_request", number, "body.model",
                             "Model parameter is required."))  # fmt: skip
        if has_input:
            body[field] = "hi"
        else:
            message = f"{field.capitalize()} parameter is required."
            expected.append(("invalid_request", number, f"body.{field}", message))
        rows.append(request_line(number, endpoint, body))
    _, errors = validate_input("\n".join(rows).encode(), endpoint)
    assert [(e.code, e.line, e.param, e.message) for e in errors] == expected


def test_required_fields_through_the_client(client, emulator):
    content = "\n".join(
        [
            request_line(1, CHAT, {"messages": [{"role": "user", "content": "x"}]}),
            request_line(2, CHAT, {"model": "gpt-4o-mini"}),
            request_line(3, CHAT, {}),
        ]
    ).encode()
    done = run_batch(client, emulator, content)
    assert done.status == "failed"
    assert [(e.code, e.line, e.param, e.message) for e in done.errors.data] == [
        ("invalid_request", 1, "body.model", "Model parameter is required."),
        ("invalid_request", 2, "body.messages", "Messages parameter is required."),
        ("invalid_request", 3, "body.model", "Model parameter is required."),
        ("invalid_request", 3, "body.messages", "Messages parameter is required."),
    ]


def test_line_errors_use_the_live_wording(client, emulator):
    content = "\n".join(
        [
            "{oops",
            json.dumps({"method": "POST", "url": CHAT, "body": {}}),
            request_line(3, "/v1/embeddings", {"model": "gpt-4o", "messages": []}),
            request_line(4, CHAT, {"model": "gpt-4o", "messages": [], "stream": True}),
        ]
    ).encode()
    done = run_batch(client, emulator, content)
    found = [(e.code, e.line, e.param, e.message) for e in done.errors.data]
    assert found == [
        ("invalid_json_line", 1, None, "This line is not parseable as valid JSON."),
        ("missing_required_parameter", 2, "custom_id",
         "Missing required parameter: 'custom_id'."),
        ("invalid_request", 2, "body.model", "Model parameter is required."),
        ("invalid_request", 2, "body.messages", "Messages parameter is required."),
        ("invalid_url", 3, "url",
         "The URL provided for this request does not match the batch endpoint."),
        ("streaming_unsupported", 4, "body.stream",
         "Chat Completions: Streaming is not supported in the Batch API."),
    ]  # fmt: skip


# -- 3. create errors ----------------------------------------------------------------

ALL_ENDPOINTS = (
    "'/v1/chat/completions', '/v1/completions', '/v1/embeddings', "
    "'/v1/responses', '/v1/moderations', '/v1/images/generations', "
    "'/v1/images/edits', and '/v1/videos'"
)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"endpoint": "/v1/invalid"},
         (400, "invalid_value", "endpoint",
          f"Invalid value: '/v1/invalid'. Supported values are: {ALL_ENDPOINTS}.")),
        ({"completion_window": "1h"},
         (400, "invalid_value", "completion_window",
          "Invalid value: '1h'. Supported values are: '24h'.")),
        ({"metadata": {"tags": ["a", "b"]}},
         (400, "invalid_type", "metadata.tags",
          "Invalid type for 'metadata.tags': expected a string, but got an array "
          "instead.")),
        ({"metadata": {"count": 3}},
         (400, "invalid_type", "metadata.count",
          "Invalid type for 'metadata.count': expected a string, but got an "
          "integer instead.")),
        ({"metadata": "tags"},
         (400, "invalid_type", "metadata",
          "Invalid type for 'metadata': expected an object, but got a string "
          "instead.")),
        ({"metadata": {f"k{i}": "v" for i in range(17)}},
         (400, "invalid_value", "metadata",
          "Invalid 'metadata': 17 pairs given (at most 16 pairs).")),
        ({"metadata": {"k": "v" * 513}},
         (400, "invalid_value", "metadata.k",
          "Invalid 'metadata.k': string too long. Expected a string with maximum "
          "length 512, but got a string with length 513 instead.")),
    ],
)  # fmt: skip
def test_create_errors_word_for_word(client, params, expected):
    body = {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "24h"}
    body.update(params)
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(**body)
    assert error_of(info) == expected
    assert info.value.type == "invalid_request_error"
    assert ("at most 16 pairs" in expected[3]) == ("16 pairs" in info.value.message)
    assert info.value.message.endswith(expected[3])
    assert client.batches.list().data == []


def test_unknown_and_malformed_batch_ids(client):
    for call in (client.batches.retrieve, client.batches.cancel):
        with pytest.raises(openai.NotFoundError) as info:
            call("batch_abc123")
        assert error_of(info) == (
            404, None, None, "No batch found with id 'batch_abc123'."
        )  # fmt: skip
        with pytest.raises(openai.BadRequestError) as bad:
            call("x")
        assert error_of(bad) == (
            400,
            "invalid_value",
            "batch_id",
            "Invalid 'batch_id': 'x'. Expected an ID that begins with 'batch'.",
        )


# -- 4. a missing input file -----------------------------------------------------------


def test_a_missing_input_file_fails_the_batch_not_the_create(client, emulator):
    batch = client.batches.create(
        input_file_id="file-nope", endpoint=CHAT, completion_window="24h"
    )
    assert batch.status == "validating"
    emulator.clock.advance(60)
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert [e.model_dump() for e in failed.errors.data] == [
        {
            "code": "invalid_request",
            "line": None,
            "message": "Cannot find file file-nope, or organization "
            "org-batchfsm-emulator does not have access to it.",
            "param": "file_id",
        }
    ]


# -- 5. files ------------------------------------------------------------------


def test_batch_files_expire_after_30_days_unless_told(client, emulator):
    default = upload(client, make_input_file(1))
    assert default.expires_at == default.created_at + 30 * DAY
    short = client.files.create(
        file=("in.jsonl", io.BytesIO(make_input_file(1))),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3_600},
    )
    assert short.expires_at == short.created_at + 3_600
    kept = client.files.create(file=("a.pdf", io.BytesIO(b"%PDF")), purpose="user_data")
    assert kept.expires_at is None
    emulator.clock.advance(3_600)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as info:
            call(short.id)
        assert error_of(info) == (404, None, "id", f"No such File object: {short.id}")
    assert short.id not in [f.id for f in client.files.list()]
    assert client.files.retrieve(default.id).id == default.id
    emulator.clock.advance(30 * DAY)
    assert [f.id for f in client.files.list()] == [kept.id]


def test_a_batch_whose_input_expired_before_validation_fails(client):
    emulator = Emulator(validation_seconds=2 * 3_600)
    for client in client_for(emulator):
        short = client.files.create(
            file=("in.jsonl", io.BytesIO(make_input_file(1))),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 3_600},
        )
        batch = client.batches.create(
            input_file_id=short.id, endpoint=CHAT, completion_window="24h"
        )
        emulator.clock.advance(3 * 3_600)  # type: ignore[attr-defined]
        failed = client.batches.retrieve(batch.id)
        assert failed.status == "failed"
        [error] = failed.errors.data
        assert (error.code, error.param, error.line) == (
            "invalid_request",
            "file_id",
            None,
        )
        assert error.message.startswith(f"Cannot find file {short.id}, ")


def test_output_expiry_is_anchored_at_the_output_files_creation(client, emulator):
    done = run_batch(
        client,
        emulator,
        make_input_file(3),
        output_expires_after={"anchor": "created_at", "seconds": 7_200},
    )
    output = client.files.retrieve(done.output_file_id)
    assert output.created_at > done.created_at
    assert output.expires_at == output.created_at + 7_200


def test_batch_files_must_be_jsonl(client):
    with pytest.raises(openai.BadRequestError) as info:
        upload(client, b'{"a": 1}\n', name="notes.txt")
    assert error_of(info) == (
        400, None, None, "Invalid file format for Batch API. Must be .jsonl"
    )  # fmt: skip
    assert client.files.list().data == []
    ok = client.files.create(file=("notes.txt", io.BytesIO(b"x")), purpose="user_data")
    assert ok.purpose == "user_data"


def test_size_limits_per_purpose():
    mb = 1024 * 1024
    assert upload_problem("in.jsonl", "batch", 200 * mb) is None
    too_big = upload_problem("in.jsonl", "batch", 200 * mb + 1)
    assert too_big is not None and too_big.code == "file_too_large"
    assert upload_problem("a.pdf", "user_data", 512 * mb) is None
    assert upload_problem("a.pdf", "user_data", 512 * mb + 1) is not None


def test_malformed_lines_are_accepted_at_upload(client):
    assert upload(client, b"{not json\n").status == "processed"


def test_listing_files_honours_limit_after_order_and_purpose(client, emulator):
    ids = []
    for _ in range(5):
        ids.append(upload(client, make_input_file(1)).id)
        emulator.clock.advance(1)
    other = client.files.create(file=("a.txt", io.BytesIO(b"x")), purpose="user_data")
    newest_first = [other.id, *ids[::-1]]
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == newest_first[:2] and page.has_more
    raw = page.model_dump()
    assert (raw["first_id"], raw["last_id"]) == (newest_first[0], newest_first[1])
    assert [f.id for f in client.files.list(limit=2)] == newest_first  # follows pages
    assert [f.id for f in client.files.list(order="asc", purpose="batch")] == ids
    after = client.files.list(after=ids[3], limit=10, purpose="batch")
    assert [f.id for f in after.data] == ids[2::-1] and not after.has_more
    with pytest.raises(openai.BadRequestError) as info:
        client.files.list(limit=0)
    assert info.value.param == "limit"
    # after must be a file of this list: not another purpose's, not a deleted one.
    for gone in (other.id, ids[0]):
        if gone == ids[0]:
            client.files.delete(gone)
        with pytest.raises(openai.BadRequestError) as info:
            client.files.list(after=gone, purpose="batch")
        assert error_of(info) == (
            400, "invalid_value", "after",
            f"Invalid 'after': no file {gone!r} in this list.",
        )  # fmt: skip


# -- 6. request ids ------------------------------------------------------------------


def test_every_answer_carries_a_request_id(client, emulator):
    file = upload(client, make_input_file(1))
    batch = client.batches.create(
        input_file_id=file.id, endpoint=CHAT, completion_window="24h"
    )
    answers = [file, batch, client.batches.retrieve(batch.id), client.files.list()]
    ids = [a._request_id for a in answers]
    assert all(i and i.startswith("req_") for i in ids)
    assert len(set(ids)) == len(ids)
    with pytest.raises(openai.NotFoundError) as info:
        client.batches.retrieve("batch_nope")
    assert info.value.request_id and info.value.request_id.startswith("req_")


# -- 7. the create answer --------------------------------------------------------------


def test_the_create_answer_has_zero_counts_and_zero_usage(client, emulator):
    batch = client.batches.create(
        input_file_id=upload(client, make_input_file(2)).id,
        endpoint=CHAT,
        completion_window="24h",
    )
    assert batch.request_counts.model_dump() == {
        "total": 0,
        "completed": 0,
        "failed": 0,
    }
    assert batch.usage is not None and batch.usage.model_dump() == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    assert batch.model is None
    snapshots = [batch.model_dump()]
    emulator.clock.advance(600)
    snapshots.append(client.batches.retrieve(batch.id).model_dump())
    assert bf.check(bf.from_dict(snapshots[0])) == []
    assert bf.check_trace(snapshots) == []
    assert snapshots[-1]["usage"]["total_tokens"] > 0


# -- our own wording, in the same shapes ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [(None, "null"), (True, "a boolean"), (3, "an integer"), (1.5, "a decimal"),
     ("x", "a string"), ([], "an array"), ({}, "an object")],
)  # fmt: skip
def test_json_type_names(value, name):
    from batchfsm.emulator._params import type_name

    assert type_name(value) == name


def test_output_expires_after_out_of_range(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id="file-x",
            endpoint=CHAT,
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert error_of(info) == (
        400,
        "invalid_value",
        "output_expires_after.seconds",
        "Invalid 'output_expires_after.seconds': expected a value between 3600 "
        "and 2592000, but got 60 instead.",
    )


def test_bad_file_purposes_and_list_queries(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("a.jsonl", io.BytesIO(b"{}")), purpose="nope")
    assert error_of(info) == (
        400,
        "invalid_value",
        "purpose",
        "Invalid value: 'nope'. Supported values are: 'assistants', 'batch', "
        "'fine-tune', 'vision', 'user_data', and 'evals'.",
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.files.list(order="sideways")
    assert error_of(info) == (
        400,
        "invalid_value",
        "order",
        "Invalid value: 'sideways'. Supported values are: 'asc' and 'desc'.",
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.files.list(after="file-nope")
    assert info.value.param == "after"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input_file_id": "", "endpoint": CHAT}, "input_file_id"),
        ({"input_file_id": "f", "endpoint": 3}, "endpoint"),
        ({"input_file_id": "f", "endpoint": "/v1/\ud800"}, "endpoint"),
        ({"input_file_id": "f", "endpoint": CHAT, "completion_window": 24},
         "completion_window"),
        ({"input_file_id": "f", "endpoint": CHAT, "metadata": {"k" * 65: "v"}},
         "metadata"),
        ({"input_file_id": "f", "endpoint": CHAT, "metadata": {"\ud800": "v"}},
         "metadata"),
        ({"input_file_id": "f", "endpoint": CHAT, "metadata": {"k": "\udfff"}},
         "metadata.k"),
        ({"input_file_id": "f", "endpoint": CHAT, "output_expires_after": 3600},
         "output_expires_after"),
        ({"input_file_id": "f", "endpoint": CHAT,
          "output_expires_after": {"anchor": "now", "seconds": 3600}},
         "output_expires_after.anchor"),
        ({"input_file_id": "f", "endpoint": CHAT,
          "output_expires_after": {"anchor": "created_at", "seconds": "3600"}},
         "output_expires_after.seconds"),
    ],
)  # fmt: skip
def test_odd_create_parameters_are_400_naming_the_param(body, param):
    emulator = Emulator()
    with httpx2.Client(
        transport=EmulatorTransport(create_app(emulator)), base_url="http://e"
    ) as http:
        answer = http.post(
            "/v1/batches",
            content=json.dumps({"completion_window": "24h", **body}).encode(),
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert answer.headers["x-request-id"].startswith("req_")


def test_a_malformed_id_with_odd_text_is_400_not_500(emulator):
    with pytest.raises(ApiError) as info:
        emulator.retrieve_batch("x\ud800")
    assert info.value.status_code == 400
    info.value.body["error"]["message"].encode("utf-8")  # writable in an answer


def test_the_strategies_draw_batches_created_with_zero_usage():
    from hypothesis import find

    from batchfsm.strategies import lifecycles

    snapshots = find(
        lifecycles("failed"),
        lambda s: s[0].usage is not None,
        settings=settings(database=None),
    )
    assert snapshots[0].usage is not None and snapshots[0].usage.total_tokens == 0
    assert snapshots[-1].usage == snapshots[0].usage  # kept through a failure
    assert bf.check_trace(snapshots) == []


def test_an_embeddings_request_of_more_than_2048_inputs_is_a_400_line():
    from batchfsm.emulator import default_handler

    body = {"model": "text-embedding-3-small", "input": ["x"] * 2_049}
    reply = default_handler("/v1/embeddings", body, "r1", 0)
    assert reply.status_code == 400
    assert reply.body["error"]["param"] == "input"
    body["input"] = ["x"] * 2_048
    assert default_handler("/v1/embeddings", body, "r1", 0).status_code == 200


def test_the_facts_hold_over_http_with_batchfsm_serve(serve):
    base = serve("--speed", "2000")
    with openai.OpenAI(api_key="sk", base_url=f"{base}/v1", max_retries=0) as client:
        file = upload(client, make_input_file(1))
        assert file.expires_at == file.created_at + 30 * DAY
        with pytest.raises(openai.BadRequestError) as info:
            upload(client, b"{}\n", name="notes.txt")
        assert error_of(info) == (
            400, None, None, "Invalid file format for Batch API. Must be .jsonl"
        )  # fmt: skip
        with pytest.raises(openai.BadRequestError) as info:
            client.batches.create(
                input_file_id=file.id, endpoint=INVALID, completion_window="24h"
            )
        assert error_of(info)[:3] == (400, "invalid_value", "endpoint")
        with pytest.raises(openai.NotFoundError) as missing:
            client.batches.retrieve("batch_nope")
        assert error_of(missing) == (
            404, None, None, "No batch found with id 'batch_nope'."
        )  # fmt: skip
        batch = client.batches.create(
            input_file_id="file-nope", endpoint=CHAT, completion_window="24h"
        )
        assert batch.usage is not None and batch.usage.total_tokens == 0
        assert batch._request_id and batch._request_id.startswith("req_")
        failed = poll_real(client, batch.id)
        assert [(e.code, e.param, e.line) for e in failed.errors.data] == [
            ("invalid_request", "file_id", None)
        ]


def test_serve_model_options_with_a_database(serve, tmp_path):
    base = serve(
        "--speed", "2000", "--db", str(tmp_path / "state.db"), "--model", "house-model"
    )
    with openai.OpenAI(api_key="sk", base_url=f"{base}/v1", max_retries=0) as client:
        batch = client.batches.create(
            input_file_id=upload(client, make_input_file(1, model="house-model")).id,
            endpoint=CHAT,
            completion_window="24h",
        )
        assert poll_real(client, batch.id).status == "completed"
