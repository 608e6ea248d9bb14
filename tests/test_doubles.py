"""The test-double habits: request log, faults, batches on command, reset, admin."""

import hashlib

import httpx2
import openai
import pytest

from batchfsm.emulator import (
    ApiError,
    Emulator,
    EmulatorTransport,
    SQLiteStore,
    SystemClock,
    create_app,
)
from batchfsm.emulator._doubles import (
    LOGGED_BODY_BYTES,
    LOGGED_BYTES,
    LOGGED_CALLS,
    Call,
)

LINE = (
    b'{"custom_id": "r1", "method": "POST", "url": "/v1/embeddings",'
    b' "body": {"model": "text-embedding-3-small", "input": "hi"}}\n'
)


@pytest.fixture
def emu():
    return Emulator()


@pytest.fixture
def http(emu):
    transport = EmulatorTransport(create_app(emu, api_key="sk-k", admin=True))
    headers = {"Authorization": "Bearer sk-k"}
    with httpx2.Client(
        transport=transport, base_url="http://e", headers=headers
    ) as client:
        yield client
    transport.close()


def test_the_log_keeps_method_path_query_status_and_a_bounded_body(emu, http):
    big = b"x" * (LOGGED_BODY_BYTES + 10)
    http.post(
        "/v1/files", files={"file": ("a.txt", big)}, data={"purpose": "user_data"}
    )
    http.get("/v1/batches/batch_nope", params={"a": "1"})
    upload, missing = emu.requests
    assert (upload.method, upload.path, upload.status) == ("POST", "/v1/files", 200)
    assert len(upload.body) == LOGGED_BODY_BYTES
    assert (missing.status, missing.query) == (404, "a=1")
    assert emu.calls_to("*", "/v1/batches/*") == [missing]


@pytest.mark.parametrize("fault", [None, 429])
def test_a_request_is_in_the_log_before_its_answers_last_byte_leaves(emu, fault):
    # Over a real socket the server runs in another thread: a client that has
    # its whole answer must find its request logged, or assert_called races.
    import anyio

    if fault is not None:
        emu.fail_next("/v1/batches", status=fault)
    app = create_app(emu)
    logged_when_sent: list[list[int]] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.body" and not message.get("more_body"):
            logged_when_sent.append([call.status for call in emu.requests])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/batches",
        "raw_path": b"/v1/batches",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"e")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    anyio.run(app, scope, receive, send)
    assert logged_when_sent == [[fault or 200]]
    assert len(emu.requests) == 1  # logged once, not again when the app returns


def test_the_log_is_bounded():
    emu = Emulator()
    for _ in range(LOGGED_CALLS + 5):
        emu._log(Call("GET", "/x", "", 200, b""))
    assert len(emu.requests) == LOGGED_CALLS
    body = b"x" * LOGGED_BODY_BYTES
    for number in range(LOGGED_BYTES // LOGGED_BODY_BYTES + 3):
        emu._log(Call("POST", f"/{number}", "", 200, body))
    kept = emu.requests
    assert sum(len(c.body) for c in kept) <= LOGGED_BYTES
    assert kept[-1].path == f"/{LOGGED_BYTES // LOGGED_BODY_BYTES + 2}"
    assert len([c for c in kept if c.body]) == LOGGED_BYTES // LOGGED_BODY_BYTES


def test_assert_called_counts_and_says_what_it_saw(emu, http):
    http.get("/v1/batches")
    assert len(emu.assert_called("GET", "/v1/batches", times=1, status=200)) == 1
    seen = r"(?s)2 time\(s\), got 1.*GET /v1/batches -> 200"
    with pytest.raises(AssertionError, match=seen):
        emu.assert_called("GET", "/v1/batches", times=2)
    with pytest.raises(AssertionError, match="answered 500 at least once, got 0"):
        emu.assert_called("GET", "/v1/batches", status=500)
    emu.clear_requests()
    assert emu.requests == []


def test_faults_match_method_and_glob_and_are_used_up(emu, http):
    emu.fail_next("/v1/batches/*", status=503, method="get", times=2)
    assert http.post("/v1/batches/batch_x/cancel").status_code != 503  # not a GET
    assert http.get("/v1/batches/batch_x").status_code == 503
    assert http.get("/v1/batches/batch_y").status_code == 503
    assert http.get("/v1/batches/batch_y").status_code == 404


def test_a_429_says_rate_limit_and_when_to_retry(emu, http):
    emu.fail_next("/v1/batches", status=429, retry_after=0.25)
    answer = http.get("/v1/batches")
    assert answer.status_code == 429
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    assert answer.json()["error"]["type"] == "requests"
    assert answer.headers["retry-after-ms"] == "250"
    assert answer.headers["x-request-id"].startswith("req_")


def test_the_official_client_retries_injected_429s(emu):
    emu.fail_next("/v1/batches", status=429, times=2, retry_after=0.01)
    transport = EmulatorTransport(create_app(emu))
    client = openai.OpenAI(
        api_key="k",
        base_url="http://e/v1",
        http_client=httpx2.Client(transport=transport),
        max_retries=2,
    )
    assert client.batches.list().data == []
    assert [c.status for c in emu.requests] == [429, 429, 200]
    transport.close()


def test_clear_faults(emu, http):
    emu.fail_next("/v1/batches")
    emu.clear_faults()
    assert http.get("/v1/batches").status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": 200}, "status must be an HTTP status 400..599"),
        ({"status": True}, "status must be"),
        ({"times": 0}, "times must be an integer of at least 1"),
        ({"retry_after": -1}, "retry_after must be a number of seconds"),
    ],
)
def test_a_wrong_fault_is_refused(emu, kwargs, message):
    with pytest.raises(ValueError, match=message):
        emu.fail_next("/v1/batches", **kwargs)


def test_a_fault_needs_a_path(emu):
    with pytest.raises(ValueError, match="path must be a path"):
        emu.fail_next("v1/batches")
    with pytest.raises(ValueError, match="seconds must be a number"):
        emu.stall_next("/v1/batches", -1)


def _lines(n):
    return b"".join(LINE.replace(b'"r1"', b'"r%d"' % i) for i in range(n))


def _batch(emu, content=LINE):
    upload = emu.create_file(content, "in.jsonl", "batch")
    return emu.create_batch(input_file_id=upload.id, endpoint="/v1/embeddings")


def test_expire_on_command_writes_the_unfinished_requests(emu):
    batch = _batch(emu, _lines(3))
    emu.clock.advance(2)  # validated, one request done
    emu.expire_batch(batch.id)
    expired = emu.retrieve_batch(batch.id)
    assert expired.status == "expired"
    assert expired.expired_at == expired.expires_at  # never before expires_at
    assert expired.request_counts.total == 3
    assert b"batch_expired" in emu.file_content(expired.error_file_id)


def test_fail_and_expire_refuse_a_batch_that_cannot_move(emu):
    batch = _batch(emu)
    emu.clock.advance(60)
    with pytest.raises(ApiError, match="409: Cannot fail a batch with status 'compl"):
        emu.fail_batch(batch.id)
    with pytest.raises(ApiError, match="409: Cannot expire a batch with status"):
        emu.expire_batch(batch.id)
    with pytest.raises(ApiError, match="404"):
        emu.expire_batch("batch_nope")
    running = _batch(emu, _lines(5))
    emu.clock.advance(2)
    with pytest.raises(ApiError, match="Cannot fail a batch with status 'in_progress'"):
        emu.fail_batch(running.id)


def test_reset_forgets_everything(emu, http):
    _batch(emu)
    emu.fail_next("/v1/files")
    http.get("/v1/batches")
    emu.reset()
    assert emu.list_batches()["data"] == []
    assert emu.requests == []
    assert http.get("/v1/files").status_code == 200


def test_reset_refuses_a_database(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        with pytest.raises(ApiError, match="Only an emulator on memory stores"):
            Emulator(store=store).reset()
    finally:
        store.close()


def test_admin_routes_are_off_unless_enabled(emu):
    transport = EmulatorTransport(create_app(emu))
    with httpx2.Client(transport=transport, base_url="http://e") as http:
        answer = http.post("/_admin/reset")
        assert answer.status_code == 404
        assert http.get("/health").json()["status"] == "ok"
    transport.close()


def test_admin_routes_need_the_key(http):
    assert (
        http.post("/_admin/reset", headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
    assert (
        http.get("/health", headers={"Authorization": "Bearer no"}).status_code == 200
    )


def test_admin_faults_over_http(emu, http):
    answer = http.post("/_admin/faults", json={"path": "/v1/files", "status": 200})
    assert answer.status_code == 400
    assert "status must be an HTTP status" in answer.json()["error"]["message"]
    assert http.post("/_admin/faults", json={"status": 500}).status_code == 400
    assert (
        http.post("/_admin/faults", json={"path": "/x", "oops": 1}).status_code == 400
    )
    http.post("/_admin/faults", json={"path": "/v1/files", "stall_seconds": 0.01})
    assert http.get("/v1/files").status_code == 200
    http.post("/_admin/faults", json={"path": "/v1/files"})
    http.delete("/_admin/faults")
    assert http.get("/v1/files").status_code == 200
    http.delete("/_admin/requests")
    assert http.get("/_admin/requests").json()["data"] == []


def test_admin_batches_fail_and_expire_over_http(emu, http):
    one, two = _batch(emu), _batch(emu)
    assert (
        http.post(f"/_admin/batches/{one.id}/fail", json={"code": "c"}).status_code
        == 200
    )
    assert emu.retrieve_batch(one.id).errors.data[0].code == "c"
    assert http.post(f"/_admin/batches/{two.id}/expire").status_code == 200
    assert emu.retrieve_batch(two.id).status == "expired"
    again = http.post(f"/_admin/batches/{two.id}/expire")
    assert again.status_code == 409


def test_admin_clock(emu, http):
    assert http.post("/_admin/clock/advance", json={"seconds": -1}).status_code == 400
    assert http.post("/_admin/clock/advance", json={"seconds": "1"}).status_code == 400
    assert http.post("/_admin/clock/advance", json={"seconds": 5}).json()["time"] == (
        1_700_000_005
    )


def test_a_system_clock_can_be_moved_forward():
    clock = SystemClock()
    before = clock.now()
    clock.advance(3600)
    assert clock.now() >= before + 3600
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_models_list_and_retrieve(emu, http):
    listed = http.get("/v1/models").json()
    assert listed["object"] == "list"
    assert {m["id"] for m in listed["data"]} == set().union(*emu.models.values())
    assert http.get("/v1/models/gpt-4o").json()["object"] == "model"
    missing = http.get("/v1/models/gpt-nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_any_model_retrieves_any_name():
    emu = Emulator(any_model=True, extra_models=["ft:gpt-4o:me"])
    transport = EmulatorTransport(create_app(emu))
    with httpx2.Client(transport=transport, base_url="http://e") as http:
        assert http.get("/v1/models/whatever").status_code == 200
        assert "ft:gpt-4o:me" in {
            m["id"] for m in http.get("/v1/models").json()["data"]
        }
        assert http.get("/v1/models/ft:gpt-4o:me").json()["id"] == "ft:gpt-4o:me"
    transport.close()


# -- the Uploads API ------------------------------------------------------------------


def _upload(http, size, filename="in.jsonl", purpose="batch"):
    body = {"bytes": size, "filename": filename, "mime_type": "text/jsonl",
            "purpose": purpose}  # fmt: skip
    return http.post("/v1/uploads", json=body)


def _part(http, upload_id, data):
    return http.post(f"/v1/uploads/{upload_id}/parts", files={"data": ("p", data)})


def test_an_upload_in_parts_becomes_a_file(emu, http):
    created = _upload(http, len(LINE) * 2).json()
    assert created["status"] == "pending" and created["file"] is None
    assert created["expires_at"] == created["created_at"] + 3600
    first = _part(http, created["id"], LINE).json()
    second = _part(http, created["id"], LINE).json()
    assert first["object"] == "upload.part" and first["upload_id"] == created["id"]
    md5 = hashlib.md5(LINE * 2).hexdigest()
    done = http.post(
        f"/v1/uploads/{created['id']}/complete",
        json={"part_ids": [first["id"], second["id"]], "md5": md5},
    ).json()
    assert done["status"] == "completed"
    assert emu.file_content(done["file"]["id"]) == LINE * 2
    assert done["file"]["purpose"] == "batch"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"bytes": 1, "filename": "a.jsonl", "purpose": "batch"}, "'mime_type'"),
        ({"bytes": -1, "filename": "a.jsonl", "mime_type": "x", "purpose": "batch"},
         "expected a non-negative integer"),
        ({"bytes": 1, "filename": "a.txt", "mime_type": "x", "purpose": "batch"},
         "Must be .jsonl"),
        ({"bytes": 1, "filename": "a.jsonl", "mime_type": "x", "purpose": "nope"},
         "Invalid value: 'nope'"),
        ({"bytes": 9 * 1024**3, "filename": "a.bin", "mime_type": "x",
          "purpose": "user_data"}, "at most"),
    ],
)  # fmt: skip
def test_a_wrong_upload_is_refused(http, body, message):
    answer = http.post("/v1/uploads", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]


def test_parts_must_add_up(http):
    upload = _upload(http, 4).json()
    assert _part(http, upload["id"], b"12345").status_code == 400  # past 4 bytes
    part = _part(http, upload["id"], b"12").json()
    complete = f"/v1/uploads/{upload['id']}/complete"
    short = http.post(complete, json={"part_ids": [part["id"]]})
    assert "hold 2 bytes, not the 4" in short.json()["error"]["message"]
    assert http.post(complete, json={"part_ids": ["part_x"]}).status_code == 400
    twice = http.post(complete, json={"part_ids": [part["id"], part["id"]]})
    assert "twice" in twice.json()["error"]["message"]
    assert http.post(complete, json={}).status_code == 400
    assert http.post(complete, json={"part_ids": "p"}).status_code == 400
    other = _part(http, upload["id"], b"34").json()
    bad_md5 = http.post(complete, json={"part_ids": [part["id"], other["id"]],
                                        "md5": "0" * 32})  # fmt: skip
    assert "md5" in bad_md5.json()["error"]["message"]
    ok = http.post(complete, json={"part_ids": [part["id"], other["id"]]})
    assert ok.json()["status"] == "completed"
    assert http.post(complete, json={"part_ids": []}).status_code == 400  # done
    assert _part(http, upload["id"], b"1").status_code == 400


def test_a_part_needs_data(http):
    upload = _upload(http, 4).json()
    answer = http.post(f"/v1/uploads/{upload['id']}/parts", files={"x": ("p", b"1")})
    assert answer.json()["error"]["param"] == "data"
    assert _part(http, "upload_nope", b"1").status_code == 404


def test_cancel_and_expiry(emu, http):
    upload = _upload(http, 4).json()
    cancelled = http.post(f"/v1/uploads/{upload['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert http.post(f"/v1/uploads/{upload['id']}/cancel").status_code == 400
    late = _upload(http, 4).json()
    emu.clock.advance(3600)
    answer = _part(http, late["id"], b"1")
    assert "is expired" in answer.json()["error"]["message"]


def test_a_completed_upload_is_a_batch_input(emu, http):
    upload = _upload(http, len(LINE)).json()
    part = _part(http, upload["id"], LINE).json()
    done = http.post(
        f"/v1/uploads/{upload['id']}/complete", json={"part_ids": [part["id"]]}
    ).json()
    batch = emu.create_batch(
        input_file_id=done["file"]["id"], endpoint="/v1/embeddings"
    )
    emu.clock.advance(60)
    assert emu.retrieve_batch(batch.id).status == "completed"


def test_reset_forgets_uploads(emu, http):
    upload = _upload(http, 4).json()
    emu.reset()
    assert _part(http, upload["id"], b"1").status_code == 404
