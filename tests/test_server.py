"""The emulator over HTTP, driven by the official openai client, in-process."""

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm.emulator import (
    ApiError,
    Emulator,
    EmulatorTransport,
    SQLiteStore,
    VirtualClock,
    create_app,
    make_input_file,
)

CHAT: Any = "/v1/chat/completions"


class Recorder:
    """Keeps every Batch object the server answered, to judge them as a trace."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, Any]] = []

    def __call__(self, response: httpx2.Response) -> None:
        if (
            response.request.url.path.startswith("/v1/batches")
            and response.status_code == 200
        ):
            response.read()
            data = response.json()
            page = data.get("data") if data.get("object") == "list" else [data]
            self.snapshots.extend(page)


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(clock=VirtualClock(), request_seconds=2, cancel_grace_seconds=30)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    assert bf.check_trace(recorder.snapshots) == []


@pytest.fixture
def http(emulator: Emulator, recorder: Recorder) -> Iterator[httpx2.Client]:
    transport = EmulatorTransport(create_app(emulator))
    with httpx2.Client(
        transport=transport,
        base_url="http://emulator.test",
        event_hooks={"response": [recorder]},
    ) as client:
        yield client
    transport.close()


@pytest.fixture
def client(http: httpx2.Client) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://emulator.test/v1",
        http_client=http,
        max_retries=0,
    )


def jsonl(n: int, *, bad: dict[int, Any] | None = None) -> bytes:
    """n chat requests r0, r1, ...; ``bad`` replaces request i by an item or text."""
    replaced = {
        i + 1: item if isinstance(item, str) else json.dumps(item)
        for i, item in (bad or {}).items()
    }
    return make_input_file(n, custom_id="r{}", bad_lines=replaced)


def submit(client: openai.OpenAI, content: bytes, **kw: Any) -> Any:
    upload = client.files.create(
        file=("in.jsonl", io.BytesIO(content)), purpose="batch"
    )
    assert upload.purpose == "batch" and upload.bytes == len(content)
    return client.batches.create(
        input_file_id=upload.id, endpoint=CHAT, completion_window="24h", **kw
    )


def poll(
    client: openai.OpenAI, emulator: Emulator, batch_id: str, step: int = 1
) -> Any:
    batch = client.batches.retrieve(batch_id)
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        emulator.clock.advance(step)  # type: ignore[attr-defined]
        batch = client.batches.retrieve(batch_id)
    return batch


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_happy_path_with_the_openai_client(client, emulator):
    content = jsonl(
        5,
        bad={
            3: {
                "custom_id": "r3",
                "method": "POST",
                "url": CHAT,
                "body": {"model": "gpt-4o-mini", "messages": []},
            }
        },
    )
    batch = submit(client, content, metadata={"job": "nightly"})
    assert batch.status == "validating"
    assert batch.expires_at == batch.created_at + 86_400
    assert batch.metadata == {"job": "nightly"}
    done = poll(client, emulator, batch.id)
    assert done.status == "completed"
    assert done.request_counts.model_dump() == {"total": 5, "completed": 4, "failed": 1}
    output = lines_of(client, done.output_file_id)
    errors = lines_of(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in output) == ["r0", "r1", "r2", "r4"]
    for line in output:
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
        assert line["error"] is None
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [
        ("r3", 400)
    ]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert client.files.delete(done.output_file_id).deleted is True


def test_cancel_mid_run_then_cancelled_with_partial_results(client, emulator):
    batch = submit(client, jsonl(20))
    emulator.clock.advance(11)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    again = client.batches.cancel(batch.id)
    assert (
        again.status == "cancelling" and again.cancelling_at == cancelling.cancelling_at
    )
    done = poll(client, emulator, batch.id)
    assert done.status == "cancelled"
    counts = done.request_counts
    assert 0 < counts.completed < 20 and counts.completed + counts.failed == 20
    assert {e["error"]["code"] for e in lines_of(client, done.error_file_id)} == {
        "batch_cancelled"
    }


def test_expiry_with_a_virtual_clock(client, emulator):
    emulator.request_seconds = 10_000
    batch = submit(client, jsonl(12))
    done = poll(client, emulator, batch.id, step=7_200)
    assert done.status == "expired"
    assert done.expired_at >= done.expires_at
    assert {e["error"]["code"] for e in lines_of(client, done.error_file_id)} == {
        "batch_expired"
    }


def test_validation_errors_end_in_failed_with_line_numbers(client, emulator):
    content = jsonl(
        4,
        bad={
            1: "{nope",
            2: {
                "custom_id": "r2",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {},
            },
        },
    )
    done = poll(client, emulator, submit(client, content).id)
    assert done.status == "failed"
    assert [(e.code, e.line, e.param) for e in done.errors.data] == [
        ("invalid_json_line", 2, None),
        ("invalid_url", 3, "url"),
        ("invalid_request", 3, "body.model"),
        ("invalid_request", 3, "body.messages"),
    ]


def test_list_pagination_across_250_batches(client, emulator):
    upload = client.files.create(
        file=("in.jsonl", io.BytesIO(jsonl(1))), purpose="batch"
    )
    created = [
        client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        ).id
        for _ in range(250)
    ]
    seen = [b.id for b in client.batches.list(limit=100)]  # the client follows has_more
    assert seen == created[::-1]
    first = client.batches.list(limit=7)
    assert [b.id for b in first.data] == created[:-8:-1] and first.has_more


def test_cancelling_a_completed_batch_is_refused_with_the_api_error(client, emulator):
    done = poll(client, emulator, submit(client, jsonl(1)).id)
    with pytest.raises(openai.ConflictError) as info:
        client.batches.cancel(done.id)
    assert info.value.status_code == 409
    assert info.value.body == {
        "message": "Cannot cancel a batch with status 'completed'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert client.batches.retrieve(done.id).status == "completed"


def test_unknown_ids_and_bad_params(client):
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id="f",
            endpoint="/v1/nope",
            completion_window="24h",
        )
    assert info.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(input_file_id="f", endpoint=CHAT, completion_window="1h")
    assert info.value.param == "completion_window"


def test_api_key_is_enforced():
    app = create_app(Emulator(), api_key="sk-right")
    transport = EmulatorTransport(app)
    with httpx2.Client(transport=transport, base_url="http://e") as http:
        wrong = openai.OpenAI(
            api_key="sk-wrong", base_url="http://e/v1", http_client=http, max_retries=0
        )
        with pytest.raises(openai.AuthenticationError):
            wrong.batches.list()
        right = openai.OpenAI(
            api_key="sk-right", base_url="http://e/v1", http_client=http
        )
        assert right.batches.list().data == []
    transport.close()


def test_oversized_bodies_get_413_before_being_read(http):
    json_type = {"content-type": "application/json"}
    answer = http.post(
        "/v1/batches",
        content=b"{}",
        headers={"content-length": str(10**9), **json_type},
    )
    assert answer.status_code == 413
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            yield b" " * 600_000

    answer = http.post("/v1/batches", content=chunks(), headers=json_type)
    assert answer.status_code == 413


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]),
    path=st.sampled_from(
        [
            "/v1/batches",
            "/v1/batches/{id}",
            "/v1/batches/{id}/cancel",
            "/v1/files",
            "/v1/files/{file}",
            "/v1/files/{file}/content",
            "/v1/nope",
            "/v1/batches/%00",
        ]
    ),
    body=st.one_of(
        st.binary(max_size=64),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "input_file_id",
                            "endpoint",
                            "completion_window",
                            "metadata",
                            "output_expires_after",
                            "x",
                        ]
                    ),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=8,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    query=st.sampled_from(
        ["", "?limit=0", "?limit=abc", "?limit=101", "?after=nope", "?limit=2&after=x"]
    ),
    stored=st.booleans(),
)
def test_fuzzed_requests_never_get_5xx_nor_corrupt_a_batch(
    method, path, body, query, stored
):
    emulator = Emulator()
    with httpx2.Client(
        transport=EmulatorTransport(create_app(emulator)), base_url="http://e"
    ) as http:
        upload = http.post(
            "/v1/files",
            files={"file": ("in.jsonl", jsonl(2))},
            data={"purpose": "batch"},
        ).json()
        batch = http.post(
            "/v1/batches",
            json={
                "input_file_id": upload["id"],
                "endpoint": CHAT,
                "completion_window": "24h",
            },
        ).json()
        before = http.get(f"/v1/batches/{batch['id']}").json()
        # The stored batch and file themselves, unless the request would
        # rightly change them (a cancel, a delete); else ids that do not exist.
        changes = path.endswith("/cancel") or method == "DELETE"
        real = stored and not changes
        suffix = "" if real else "x"
        url = path.format(id=batch["id"] + suffix, file=upload["id"] + suffix) + query
        answer = http.request(
            method, url, content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code < 500, (answer.status_code, answer.text)
        if answer.status_code >= 400:
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        assert http.get(f"/v1/batches/{batch['id']}").json() == before
        assert http.get(f"/v1/files/{upload['id']}").status_code == 200


@settings(max_examples=100, deadline=None)
@given(
    content_type=st.sampled_from(
        [
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "text/plain",
            "application/json",
            "multipart/form-data; boundary=",
        ]
    ),
    body=st.binary(max_size=200)
    | st.builds(
        lambda name, value: (
            "--xyz\r\nContent-Disposition: form-data; "
            f'name="{name}"\r\n\r\n{value}\r\n--xyz--\r\n'
        ).encode(),
        st.sampled_from(["file", "purpose", "expires_after[seconds]", "x"]),
        st.text(max_size=20),
    ),
)
def test_fuzzed_uploads_never_get_5xx(content_type, body):
    with httpx2.Client(
        transport=EmulatorTransport(create_app(Emulator())), base_url="http://e"
    ) as http:
        answer = http.post(
            "/v1/files", content=body, headers={"content-type": content_type}
        )
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_text_that_no_answer_could_hold_is_refused_not_stored(http):
    for body in (
        '{"input_file_id": "f", "endpoint": "/v1/chat/completions", '
        '"completion_window": "24h", "metadata": {"k": "\\ud800"}}',
        '{"input_file_id": "file-\\udfff", "endpoint": "/v1/chat/completions", '
        '"completion_window": "24h"}',
    ):
        answer = http.post(
            "/v1/batches",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 400, answer.text
    assert http.get("/v1/batches").json()["data"] == []


@pytest.mark.parametrize("query", ["?limit=²", "?limit=" + "9" * 5000, "?limit=١٢"])
def test_odd_digits_in_queries_are_400(http, query):
    answer = http.get("/v1/batches" + query)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "limit"


def test_odd_upload_fields_and_headers_are_400(http):
    for seconds in ("²", "10" * 20, "60"):
        answer = http.post(
            "/v1/files",
            files={"file": ("in.jsonl", b"{}")},
            data={
                "purpose": "batch",
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": seconds,
            },
        )
        assert answer.status_code == 400, (seconds, answer.text)
    answer = http.post(
        "/v1/batches",
        content=b"{}",
        headers={"content-length": "x", "content-type": "application/json"},
    )
    assert answer.status_code == 400


def test_a_failing_handler_fails_one_request_not_the_server(emulator):
    calls = []

    def flaky(endpoint: str, body: Any, custom_id: str, now: int) -> Any:
        calls.append(custom_id)
        if custom_id == "r1":
            raise RuntimeError("model crashed")
        from batchfsm.emulator import default_handler

        return default_handler(endpoint, body, custom_id, now)

    emulator.handler = flaky
    upload = emulator.create_file(jsonl(3), "in.jsonl", "batch")
    batch = emulator.create_batch(input_file_id=upload.id, endpoint=CHAT)
    emulator.clock.advance(600)
    done = emulator.retrieve_batch(batch.id)
    assert done.status is bf.BatchStatus.COMPLETED
    assert done.request_counts == bf.BatchRequestCounts(total=3, completed=2, failed=1)
    errors = emulator.file_content(done.error_file_id or "").decode()
    assert '"status_code":500' in errors and "server_error" in errors


def test_the_openai_client_over_a_legacy_httpx_client():
    import httpx

    from batchfsm.emulator import legacy_transport

    emulator = Emulator()
    with httpx.Client(transport=legacy_transport(create_app(emulator))) as http:
        # Typed for httpx2 only; at run time the client takes a legacy one too.
        client = openai.OpenAI(
            api_key="sk",
            base_url="http://e/v1",
            http_client=http,  # type: ignore[arg-type]
        )
        upload = client.files.create(
            file=("in.jsonl", io.BytesIO(jsonl(2))), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        )
        emulator.clock.advance(60)  # type: ignore[attr-defined]
        assert client.batches.retrieve(batch.id).status == "completed"


class SlowStore(SQLiteStore):
    """An SQLite store whose read of one batch waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.slow: str | None = None
        self.waiting = threading.Event()
        self.go = threading.Event()

    def get(self, batch_id: str, *, project: str | None = None) -> bf.Batch | None:
        if batch_id == self.slow:
            self.waiting.set()
            self.go.wait(timeout=30)  # a bound for a broken build, not a speed
        return super().get(batch_id, project=project)


def _one_slow_batch_and_one_fast() -> tuple[SlowStore, Emulator, bf.Batch, bf.Batch]:
    """An emulator on a SlowStore whose reads of the first batch wait for ``go``."""
    store = SlowStore()
    emu = Emulator(store=store, ids=store.ids())
    upload = emu.create_file(make_input_file(1), "in.jsonl", "batch")
    slow, fast = (
        emu.create_batch(input_file_id=upload.id, endpoint=CHAT) for _ in range(2)
    )
    store.slow = slow.id
    return store, emu, slow, fast


def test_a_call_waiting_on_its_store_holds_up_no_other_request() -> None:
    store, emu, slow, fast = _one_slow_batch_and_one_fast()

    async def clients() -> None:
        transport = httpx2.ASGITransport(app=create_app(emu))
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://emulator/v1"
        ) as http:
            stuck = asyncio.create_task(http.get(f"/batches/{slow.id}"))
            assert await anyio.to_thread.run_sync(store.waiting.wait, 30)
            # The first call waits on the store; another client is answered.
            answer = await http.get(f"/batches/{fast.id}")
            assert answer.status_code == 200 and answer.json()["id"] == fast.id
            assert (await http.get("/batches/batch_none")).status_code == 404
            assert not stuck.done()
            store.go.set()
            answer = await stuck
            assert answer.status_code == 200 and answer.json()["id"] == slow.id

    try:
        asyncio.run(clients())
    finally:
        store.go.set()
        store.close()


def test_store_threads_bound_the_calls_that_wait_on_the_store_at_once() -> None:
    store, emu, slow, fast = _one_slow_batch_and_one_fast()
    app = create_app(emu, store_threads=1)

    async def clients() -> None:
        threads = app.state.store_threads()
        assert threads.total_tokens == 1
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://emulator/v1"
        ) as http:
            stuck = asyncio.create_task(http.get(f"/batches/{slow.id}"))
            assert await anyio.to_thread.run_sync(store.waiting.wait, 30)
            # The one thread waits on the store: the next call waits its turn.
            queued = asyncio.create_task(http.get(f"/batches/{fast.id}"))
            for _ in range(10_000):  # until it is queued (a bound, not a speed)
                if threads.statistics().tasks_waiting == 1:
                    break
                await asyncio.sleep(0.001)
            assert threads.statistics().tasks_waiting == 1
            assert threads.borrowed_tokens == 1 and not queued.done()
            store.go.set()
            assert (await stuck).json()["id"] == slow.id
            assert (await queued).json()["id"] == fast.id

    try:
        asyncio.run(clients())
    finally:
        store.go.set()
        store.close()


@pytest.mark.parametrize("keyword", ["store_threads", "upload_bytes_in_flight"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "8", True])
def test_create_app_refuses_sizes_that_are_no_count_naming_them(
    keyword: str, value: object
) -> None:
    with pytest.raises(ValueError, match=f"{keyword} must be an integer of at least 1"):
        create_app(Emulator(), **{keyword: value})  # type: ignore[arg-type]


# -- one JSON engine: the answers are the library's own text --------------------


def test_a_batch_answer_is_the_text_of_dumps_bytes(http, emulator):
    upload = emulator.create_file(jsonl(1), "in.jsonl", "batch")
    created = http.post(
        "/v1/batches",
        json={
            "input_file_id": upload.id,
            "endpoint": CHAT,
            "completion_window": "24h",
            "metadata": {"note": "café ✓"},
        },
    )
    batch = emulator.retrieve_batch(created.json()["id"])
    assert created.content == bf.dumps_bytes(batch)  # compact, raw UTF-8
    assert "café ✓".encode() in http.get(f"/v1/batches/{batch.id}").content


@pytest.mark.parametrize(
    "line",
    [
        '{"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "gpt-4o", "messages": [], "x": "\\ud800"}}',
        '{"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "gpt-4o", "messages": [], "x": '
        + "[" * 1100
        + "]" * 1100
        + "}}",
    ],
    ids=["lone-surrogate", "nested-1100-deep"],
)
def test_a_line_the_json_engine_cannot_carry_is_refused_at_validation(
    client, emulator, line
):
    # Read by the same engine that writes the answers, a line that could not
    # be written back is not JSON to the emulator: refused with its line number.
    batch = poll(client, emulator, submit(client, jsonl(1, bad={0: line})).id)
    assert batch.status == "failed"
    assert [(e.code, e.line) for e in batch.errors.data] == [("invalid_json_line", 1)]


def _error_of(answer: httpx2.Response) -> dict[str, Any]:
    assert answer.status_code == 400, answer.text
    return dict(answer.json()["error"])


@settings(max_examples=60, deadline=None)
@given(
    limit=st.one_of(
        st.integers(-5, 10_005).map(str),
        st.sampled_from(["", "abc", "²", "١٢", "1.5", "9" * 30, " 5"]),
    )
)
def test_both_lists_and_both_routes_answer_a_limit_alike(limit):
    # One parser: each list's own range, the same words for the same mistake.
    emulator = Emulator()
    with httpx2.Client(
        transport=EmulatorTransport(create_app(emulator)), base_url="http://e"
    ) as http:
        batches = http.get("/v1/batches", params={"limit": limit})
        files = http.get("/v1/files", params={"limit": limit})
    counted = limit.isascii() and limit.isdigit() and len(limit) <= 18
    assert (batches.status_code == 200) == (counted and 1 <= int(limit) <= 100)
    assert (files.status_code == 200) == (counted and 1 <= int(limit) <= 10_000)
    if not counted or int(limit) == 0 or int(limit) > 10_000:
        batch_error, file_error = _error_of(batches), _error_of(files)
        assert batch_error == {
            **file_error,
            "message": file_error["message"].replace("10000", "100"),
        }
    if batches.status_code == 400:
        with pytest.raises(ApiError) as refused:  # in-process, the same answer
            emulator.list_batches(limit=limit)
        assert refused.value.body == batches.json()


def test_both_lists_answer_an_unknown_after_alike(http):
    batch_error = _error_of(http.get("/v1/batches", params={"after": "x"}))
    file_error = _error_of(http.get("/v1/files", params={"after": "x"}))
    assert batch_error == {
        **file_error,
        "message": file_error["message"].replace("file", "batch"),
    }
    assert batch_error["message"] == "Invalid 'after': no batch 'x' in this list."


@pytest.mark.parametrize(
    ("anchor", "seconds", "param"),
    [
        ("created_at", 60, "expires_after.seconds"),
        ("created_at", 2_592_001, "expires_after.seconds"),
        ("now", 3_600, "expires_after.anchor"),
    ],
)
def test_a_files_expires_after_is_refused_as_a_batches_is(http, anchor, seconds, param):
    upload = http.post(
        "/v1/files",
        files={"file": ("in.jsonl", make_input_file(1))},
        data={
            "purpose": "batch",
            "expires_after[anchor]": anchor,
            "expires_after[seconds]": str(seconds),
        },
    )
    file_error = _error_of(upload)
    assert file_error["param"] == param
    assert http.get("/v1/files").json()["data"] == []
    stored = http.post(
        "/v1/files",
        files={"file": ("in.jsonl", make_input_file(1))},
        data={"purpose": "batch"},
    ).json()
    batch_error = _error_of(
        http.post(
            "/v1/batches",
            json={
                "input_file_id": stored["id"],
                "endpoint": CHAT,
                "completion_window": "24h",
                "output_expires_after": {"anchor": anchor, "seconds": seconds},
            },
        )
    )
    assert batch_error == {
        key: value.replace("expires_after", "output_expires_after")
        for key, value in file_error.items()
    }
