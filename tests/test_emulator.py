import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import batchfsm as bf
from batchfsm.emulator import (
    CODES,
    DEFAULT_MODELS,
    ApiError,
    Emulator,
    Reply,
    VirtualClock,
    default_handler,
    validate_input,
)
from batchfsm.testing import BatchAPIStateMachine, EmulatorAdapter

CHAT = "/v1/chat/completions"


def line(i: int, **changes: Any) -> str:
    item: dict[str, Any] = {
        "custom_id": f"request-{i}",
        "method": "POST",
        "url": CHAT,
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
        },
    }
    item.update(changes)
    return json.dumps(item)


def start(emu: Emulator, lines: list[str], endpoint: str = CHAT) -> bf.Batch:
    upload = emu.create_file("\n".join(lines).encode(), "in.jsonl", "batch")
    return emu.create_batch(input_file_id=upload.id, endpoint=endpoint)


def poll(emu: Emulator, batch_id: str, seconds: int = 1) -> list[bf.Batch]:
    """Every snapshot, one per virtual second, until the batch ends."""
    seen = [emu.retrieve_batch(batch_id)]
    while seen[-1].status not in bf.TERMINAL_STATUSES:
        emu.clock.advance(seconds)  # type: ignore[attr-defined]
        seen.append(emu.retrieve_batch(batch_id))
    assert bf.check_trace(seen) == []
    return seen


def read(emu: Emulator, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in emu.file_content(file_id).decode().splitlines()]


def test_happy_path_with_a_request_the_model_rejects():
    emu = Emulator()
    lines = [line(0), line(1, body={"model": "gpt-4o-mini", "messages": []}), line(2)]
    batch = start(emu, lines)
    assert batch.status is bf.BatchStatus.VALIDATING
    snapshots = poll(emu, batch.id)
    done = snapshots[-1]
    statuses = [s.status.value for s in snapshots]
    assert statuses[0] == "validating" and statuses[-1] == "completed"
    assert {"in_progress", "finalizing"} <= set(statuses)
    assert done.request_counts == bf.BatchRequestCounts(total=3, completed=2, failed=1)
    assert done.model == "gpt-4o-mini"
    assert done.usage is not None and done.usage.total_tokens > 0
    output, errors = read(emu, done.output_file_id), read(emu, done.error_file_id)
    assert sorted(o["custom_id"] for o in output) == ["request-0", "request-2"]
    assert all(
        o["response"]["status_code"] == 200 and o["error"] is None for o in output
    )
    assert all(o["id"].startswith("batch_req_") for o in output + errors)
    assert output[0]["response"]["body"]["object"] == "chat.completion"
    [rejected] = errors
    assert rejected["custom_id"] == "request-1"
    assert rejected["response"]["status_code"] == 400
    assert rejected["response"]["body"]["error"]["param"] == "messages"
    assert done.output_file_id is not None
    assert emu.retrieve_file(done.output_file_id).purpose == "batch_output"


def test_a_batch_whose_every_request_failed_completes_without_output():
    emu = Emulator()
    rejected = line(0, body={"model": "gpt-4o-mini", "messages": []})
    done = poll(emu, start(emu, [rejected]).id)[-1]
    assert done.status is bf.BatchStatus.COMPLETED
    assert done.output_file_id is None
    assert done.error_file_id is not None


def test_validation_reports_every_problem_with_its_line():
    lines = [
        line(0),
        "{not json",
        json.dumps({"custom_id": "x", "url": CHAT}),
        line(3, url="/v1/embeddings"),
        line(4, body={"model": "gpt-nope", "messages": []}),
        line(5, body={"model": "gpt-4o-mini", "messages": [], "stream": True}),
        line(0),
        line(7, method="GET"),
        line(8, body={"model": "gpt-4o", "messages": []}),
        "",
    ]
    emu = Emulator()
    failed = poll(emu, start(emu, lines).id)[-1]
    assert failed.status is bf.BatchStatus.FAILED
    assert failed.errors is not None and failed.errors.data is not None
    found = [(e.code, e.line, e.param) for e in failed.errors.data]
    assert found == [
        ("invalid_json_line", 2, None),
        ("missing_required_parameter", 3, "method"),
        ("missing_required_parameter", 3, "body"),
        ("invalid_url", 4, "url"),
        ("model_not_found", 5, "body.model"),
        ("streaming_unsupported", 6, "body.stream"),
        ("duplicate_custom_id", 7, "custom_id"),
        ("invalid_request", 8, "method"),
        ("mixed_models", 9, "body.model"),
    ]
    assert {code for code, _, _ in found} <= set(CODES)
    assert failed.in_progress_at is None and failed.output_file_id is None


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "empty_file"), (b"\n\n", "empty_file"), (b"\xff\xfe", "invalid_json_line")],
)
def test_files_with_nothing_to_run(content, code):
    requests, errors = validate_input(content, CHAT)
    assert requests == []
    assert [e.code for e in errors] == [code]


def test_too_many_embedding_inputs():
    body = {"model": "text-embedding-3-small", "input": ["x"] * 30_000}
    lines = [line(i, url="/v1/embeddings", body=body) for i in range(2)]
    _, errors = validate_input("\n".join(lines).encode(), "/v1/embeddings")
    assert [e.code for e in errors] == ["too_many_inputs"]


def test_a_missing_input_file_fails_validation_not_create():
    emu = Emulator()
    batch = emu.create_batch(input_file_id="file-missing", endpoint=CHAT)
    failed = poll(emu, batch.id)[-1]
    assert failed.errors is not None and failed.errors.data is not None
    assert [(e.code, e.line, e.param, e.message) for e in failed.errors.data] == [
        (
            "invalid_request",
            None,
            "file_id",
            "Cannot find file file-missing, or organization org-batchfsm-emulator "
            "does not have access to it.",
        )
    ]


def test_cancel_mid_run_keeps_partial_results():
    emu = Emulator(request_seconds=10, cancel_grace_seconds=30)
    batch = start(emu, [line(i) for i in range(10)])
    emu.clock.advance(35)  # type: ignore[attr-defined]
    cancelling = emu.cancel_batch(batch.id)
    assert cancelling.status is bf.BatchStatus.CANCELLING
    assert emu.cancel_batch(batch.id) == cancelling  # a retried cancel
    snapshots = [batch, *poll(emu, batch.id)]
    done = snapshots[-1]
    assert done.status is bf.BatchStatus.CANCELLED
    assert bf.check_trace(snapshots) == []
    counts = done.request_counts
    assert counts is not None and counts.total == 10
    assert 0 < counts.completed < 10 and counts.completed + counts.failed == 10
    errors = read(emu, done.error_file_id)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len(read(emu, done.output_file_id)) == counts.completed
    with pytest.raises(ApiError) as info:
        emu.cancel_batch(batch.id)
    assert info.value.status_code == 409
    assert info.value.body == {
        "error": {
            "message": "Cannot cancel a batch with status 'cancelled'.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_expiry_with_a_virtual_clock():
    emu = Emulator(request_seconds=3_600)
    batch = start(emu, [line(i) for i in range(30)])
    snapshots = poll(emu, batch.id, seconds=3_600)
    done = snapshots[-1]
    assert done.status is bf.BatchStatus.EXPIRED
    assert done.expired_at == done.expires_at
    counts = done.request_counts
    assert counts is not None and counts.completed == 23 and counts.failed == 7
    assert {e["error"]["code"] for e in read(emu, done.error_file_id)} == {
        "batch_expired"
    }


def test_listing_250_batches_visits_each_once_newest_first():
    emu = Emulator()
    created = [start(emu, [line(0)]).id for _ in range(250)]
    seen: list[str] = []
    after = None
    while True:
        page = emu.list_batches(after=after, limit=100)
        seen += [b["id"] for b in page["data"]]
        assert page["first_id"] == page["data"][0]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == created[::-1]
    assert emu.list_batches()["data"][0]["id"] == created[-1]
    assert len(emu.list_batches()["data"]) == 20


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"input_file_id": 3, "endpoint": CHAT}, "input_file_id"),
        ({"input_file_id": "f", "endpoint": "/v1/nope"}, "endpoint"),
        ({"input_file_id": "f", "endpoint": CHAT, "completion_window": "48h"},
         "completion_window"),
        ({"input_file_id": "f", "endpoint": CHAT, "metadata": {"k": 1}}, "metadata.k"),
        ({"input_file_id": "f", "endpoint": CHAT, "metadata": [1]}, "metadata"),
        ({"input_file_id": "f", "endpoint": CHAT,
          "output_expires_after": {"anchor": "created_at", "seconds": 60}},
         "output_expires_after.seconds"),
    ],
)  # fmt: skip
def test_bad_create_parameters_are_400_naming_the_param(params, param):
    emu = Emulator()
    with pytest.raises(ApiError) as info:
        emu.create_batch(**params)
    assert info.value.status_code == 400
    assert info.value.body["error"]["param"] == param
    assert emu.list_batches()["data"] == []


def test_unknown_ids_are_404():
    emu = Emulator()
    for call, unknown in (
        (emu.retrieve_batch, "batch_nope"),
        (emu.cancel_batch, "batch_nope"),
        (emu.retrieve_file, "file-nope"),
        (emu.file_content, "file-nope"),
        (emu.delete_file, "file-nope"),
    ):
        with pytest.raises(ApiError) as info:
            call(unknown)
        assert info.value.status_code == 404
    with pytest.raises(ApiError, match="400"):
        emu.list_batches(after="nope")
    for malformed in ("nope", 7):
        with pytest.raises(ApiError) as info:
            emu.retrieve_batch(malformed)  # type: ignore[arg-type]
        assert (info.value.status_code, info.value.body["error"]["param"]) == (
            400,
            "batch_id",
        )


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=12),
    st.integers(0, 2**32),
)
def test_the_same_calls_give_byte_identical_batches_and_files(kinds, seed):
    def session() -> list[Any]:
        emu = Emulator(seed=seed)
        ids = []
        for i, kind in enumerate(kinds):
            lines = [line(j) for j in range(kind + 1)]
            if kind == 3:
                lines.append("{bad")
            ids.append(start(emu, lines).id)
            emu.clock.advance(i)  # type: ignore[attr-defined]
        emu.clock.advance(100)  # type: ignore[attr-defined]
        out = []
        for batch_id in ids:
            batch = emu.retrieve_batch(batch_id)
            files = [
                emu.file_content(f)
                for f in (batch.output_file_id, batch.error_file_id)
                if f
            ]
            out.append((bf.dumps(batch), files))
        return out

    assert session() == session()


def test_a_custom_handler_scripts_the_answers():
    def handler(endpoint: str, body: Any, custom_id: str, now: int) -> Reply:
        return Reply(429 if custom_id.endswith("1") else 200, {"echo": custom_id}, 5, 7)

    emu = Emulator(handler=handler)
    done = poll(emu, start(emu, [line(0), line(1)]).id)[-1]
    assert done.request_counts == bf.BatchRequestCounts(total=2, completed=1, failed=1)
    assert done.usage is not None and done.usage.total_tokens == 24


class EmulatorMachine(BatchAPIStateMachine):
    def make_adapter(self) -> EmulatorAdapter:
        return EmulatorAdapter(request_seconds=7, cancel_grace_seconds=20)


TestEmulatorStateful = EmulatorMachine.TestCase


def test_virtual_clock_never_goes_back():
    with pytest.raises(ValueError, match="backwards"):
        VirtualClock().advance(-1)


def test_the_state_machine_runs_against_the_emulator():
    run_state_machine_as_test(
        EmulatorMachine, settings=settings(max_examples=50, deadline=None)
    )


GOOD_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"input": "hi"},
    "/v1/embeddings": {"input": ["a", "b"], "dimensions": 4},
    "/v1/completions": {"prompt": "Once"},
    "/v1/moderations": {"input": "hello"},
    "/v1/images/generations": {"prompt": "a cat"},
    "/v1/images/edits": {"prompt": "a hat"},
    "/v1/videos": {"prompt": "waves"},
}
BAD_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": ["not an object"]},
    "/v1/responses": {"input": ""},
    "/v1/embeddings": {"input": "a", "dimensions": 0},
    "/v1/completions": {"prompt": []},
    "/v1/moderations": {},
    "/v1/images/generations": {"prompt": ""},
    "/v1/images/edits": {},
    "/v1/videos": {"prompt": None},
}


@pytest.mark.parametrize("endpoint", sorted(GOOD_BODIES))
def test_the_default_handler_answers_every_endpoint(endpoint):
    model = sorted(DEFAULT_MODELS[endpoint])[0]
    good = default_handler(endpoint, {"model": model, **GOOD_BODIES[endpoint]}, "r", 7)
    assert good.status_code == 200
    assert good.input_tokens > 0
    again = default_handler(endpoint, {"model": model, **GOOD_BODIES[endpoint]}, "r", 7)
    assert again == good  # deterministic
    bad = default_handler(endpoint, {"model": model, **BAD_BODIES[endpoint]}, "r", 7)
    assert bad.status_code == 400
    assert set(bad.body["error"]) == {"message", "type", "param", "code"}


def test_output_files_expire_as_asked():
    emu = Emulator()
    upload = emu.create_file(line(0).encode(), "in.jsonl", "batch")
    batch = emu.create_batch(
        input_file_id=upload.id,
        endpoint=CHAT,
        output_expires_after={"anchor": "created_at", "seconds": 7_200},
    )
    emu.clock.advance(3)  # type: ignore[attr-defined]
    done = poll(emu, batch.id)[-1]
    assert done.output_file_id is not None
    output = emu.retrieve_file(done.output_file_id)
    # Anchored at the output file's own creation, not the batch's.
    assert output.created_at > batch.created_at
    assert output.expires_at == output.created_at + 7_200


def test_lines_end_at_newlines_only_and_bad_bytes_name_their_line():
    odd = line(
        1,
        body={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "a\u2028b\x0cc"}],
        },
    )
    content = (
        line(0)
        + "\n"
        + json.dumps(json.loads(odd), ensure_ascii=False)
        + "\n"
        + line(2)
    ).encode() + b"\n\xff\xfe\n"
    requests, errors = validate_input(content, CHAT)
    assert [r.custom_id for r in requests] == ["request-0", "request-1", "request-2"]
    assert [(e.code, e.line) for e in errors] == [("invalid_json_line", 4)]


def test_an_unhashable_model_is_a_validation_error_not_a_crash():
    content = line(0, body={"model": ["gpt-4o"], "messages": []}).encode()
    _, errors = validate_input(content, CHAT)
    assert [(e.code, e.param) for e in errors] == [("model_not_found", "body.model")]
