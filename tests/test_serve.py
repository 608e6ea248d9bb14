"""The server's own defences: deadlines, a bound on connections, 415, quiet
disconnects, one access line per request; and no 5xx reachable from input."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
import uvicorn

from batchfsm.emulator import Emulator, EmulatorTransport, create_app, make_input_file
from batchfsm.emulator._protocol import Refusals
from batchfsm.emulator._server import Limits, bind, config

from .test_engine import DEEP_BODIES, deep_file

CHAT = "/v1/chat/completions"
#: How long a test waits for the server to act before giving up (a hang guard,
#: never a speed assertion).
PATIENCE = 60


#: The test server's bounds: short deadlines, few connections.
QUICK = Limits(
    request_seconds=0.5,
    head_seconds=0.5,
    max_connections=4,
    max_connections_per_address=3,
    warn_seconds=3600,  # one warning line per test, then counts
)


@pytest.fixture
def server(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[str, int]]:
    """A real loopback server with short deadlines, in a thread."""
    caplog.set_level(logging.INFO)
    with _serving(QUICK) as address:
        yield address


@contextlib.contextmanager
def _serving(
    limits: Limits, emulator: Emulator | None = None
) -> Iterator[tuple[str, int]]:
    """A real loopback server held to ``limits``, in a thread."""
    emulator = emulator if emulator is not None else Emulator(seed=1)
    sock = bind("127.0.0.1", 0)
    made = uvicorn.Server(config(emulator, limits=limits))
    emulator.start()
    thread = threading.Thread(target=made.run, kwargs={"sockets": [sock]})
    thread.start()
    host, port = sock.getsockname()[:2]
    while not made.started:
        thread.join(0.01)
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
    try:
        yield host, port
    finally:
        made.should_exit = True
        thread.join()
        emulator.stop()
        sock.close()


def closed_by_server(conn: socket.socket) -> bool:
    """Read until the server closes; True once it has (a hang guard only)."""
    conn.settimeout(PATIENCE)
    try:
        while conn.recv(65_536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """How many records hold ``text``, once at least one does (a hang guard)."""
    for _ in range(PATIENCE * 100):
        found = [r for r in caplog.records if text in r.getMessage()]
        if found:
            return len(found)
        threading.Event().wait(0.01)
    return 0


def test_an_idle_connection_is_closed(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as conn:
        assert closed_by_server(conn)


def test_a_dribbled_request_head_is_closed(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as conn:
        conn.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n")  # never ends
        assert closed_by_server(conn)


def test_a_dribbled_body_is_closed_and_logged_in_one_line(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(server) as conn:
        conn.sendall(
            b"POST /v1/batches HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        assert closed_by_server(conn)
    assert logged(caplog, "no whole request in 0.5 s") == 1
    assert logged(caplog, "went away before its request was read") == 1
    assert not any(r.exc_info for r in caplog.records)


def test_a_client_that_goes_away_is_one_line_not_a_traceback(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(server) as conn:
        conn.sendall(
            b"POST /v1/batches HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
    with httpx2.Client(base_url=f"http://{server[0]}:{server[1]}") as http:
        assert http.get("/v1/batches").status_code == 200  # after the disconnect
    assert logged(caplog, "went away") == 1
    assert not any(r.exc_info for r in caplog.records)


def _connect_from(address: str, server: tuple[str, int]) -> socket.socket:
    """A connection to ``server`` from a loopback ``address`` (Linux: all 127/8)."""
    return socket.create_connection(server, source_address=(address, 0))


def test_connections_past_the_bound_are_closed_on_arrival(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    # From four addresses: no one of them holds more than it may.
    held = [_connect_from(f"127.0.0.{2 + n}", server) for n in range(4)]
    try:
        with _connect_from("127.0.0.9", server) as extra:
            assert closed_by_server(extra)
        assert logged(caplog, "4 are open, the most the server holds") == 1
        assert all(map(_still_open, held))
    finally:
        for conn in held:
            conn.close()


def test_connections_past_the_bound_of_one_address_are_closed_on_arrival(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    held = [_connect_from("127.0.0.2", server) for _ in range(3)]
    try:
        with _connect_from("127.0.0.2", server) as extra:
            assert closed_by_server(extra)
        assert logged(caplog, "it has 3 open, the most one address may hold") == 1
        assert all(map(_still_open, held))
        # Another address is served meanwhile.
        with _connect_from("127.0.0.3", server) as other:
            other.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n\r\n")
            assert other.recv(12) == b"HTTP/1.1 200"
    finally:
        for conn in held:
            conn.close()
    # Its places are free again once it closes them.
    with _connect_from("127.0.0.2", server) as again:
        again.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n\r\n")
        assert again.recv(12) == b"HTTP/1.1 200"


def test_a_few_addresses_at_their_most_leave_places_for_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 16 places, 8 per address: two addresses could take them all; the last
    # 16 // 8 = 2 are kept for addresses that hold none.
    caplog.set_level(logging.INFO)
    limits = Limits(max_connections=16, max_connections_per_address=8)
    with _serving(limits) as server:
        held = [_connect_from("127.0.0.2", server) for _ in range(8)]
        held += [_connect_from("127.0.0.3", server) for _ in range(6)]
        try:
            assert all(map(_still_open, held))
            with _connect_from("127.0.0.3", server) as extra:  # its 7th
                assert closed_by_server(extra)
            assert logged(caplog, "the last 2 places are kept for addresses") == 1
            for newcomer in ("127.0.0.4", "127.0.0.5"):
                with _connect_from(newcomer, server) as conn:
                    conn.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert conn.recv(12) == b"HTTP/1.1 200"
        finally:
            for conn in held:
                conn.close()


def test_refused_connections_are_one_warning_then_counted(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    held = [_connect_from("127.0.0.2", server) for _ in range(3)]
    try:
        for _ in range(50):
            with _connect_from("127.0.0.2", server) as extra:
                assert closed_by_server(extra)
    finally:
        for conn in held:
            conn.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "one line per 3600 s" in warnings[0].getMessage()


def test_a_dribbled_head_is_closed_by_its_own_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The head's deadline is shorter than the whole request's.
    caplog.set_level(logging.INFO)
    with _serving(Limits(head_seconds=0.5, request_seconds=PATIENCE * 2)) as server:
        with socket.create_connection(server) as conn:
            conn.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n")  # never ends
            assert closed_by_server(conn)
        assert logged(caplog, "no whole request head in 0.5 s") == 1
        with socket.create_connection(server) as conn:  # its body is not
            conn.sendall(
                b"POST /v1/batches HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            threading.Event().wait(1.0)  # past the head's deadline (not a speed)
            assert _still_open(conn)


def test_a_connection_that_was_answered_is_held_to_its_next_heads_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One deadline timer a connection: set at the first answer (due at 2 s),
    # it fires after the second answer (at 1.2 s) restarted the clock: the
    # connection must stay open past the first deadline, and be cut at its own.
    caplog.set_level(logging.INFO)
    with _serving(Limits(head_seconds=2, request_seconds=PATIENCE * 2)) as server:
        with socket.create_connection(server) as conn:
            for pause in (1.2, 0):
                conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                conn.settimeout(PATIENCE)
                answer = b""
                while not answer.endswith(b"}"):  # its head and body, however split
                    chunk = conn.recv(65_536)
                    assert chunk, answer  # (closed early)
                    answer += chunk
                assert b"200 OK" in answer
                threading.Event().wait(pause)
            conn.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n")  # never ends
            threading.Event().wait(1.2)  # past the first clock's deadline
            assert _still_open(conn)
            assert closed_by_server(conn)
        assert logged(caplog, "no whole request head in 2 s") == 1


def test_connections_closed_at_their_deadlines_are_logged_once_then_counted(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    # Three connections of one client, each half a request head: one line,
    # not one per connection (the others are counted, one line per interval).
    conns = [socket.create_connection(server) for _ in range(3)]
    try:
        for conn in conns:
            conn.sendall(b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n")
        assert all(closed_by_server(conn) for conn in conns)
    finally:
        for conn in conns:
            conn.close()
    lines = [r for r in caplog.records if "no whole request head" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "one line per 3600 s" in lines[0].getMessage()


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
def test_a_client_that_never_reads_its_answer_is_cut_off(
    caplog: pytest.LogCaptureFixture, connection: str
) -> None:
    # More than any socket buffers hold: the answer waits in the server's memory
    # until the client reads it, so a client that never does must not keep it.
    # (Stored in-process: a 16 MiB upload within QUICK's 0.5 s is no given on
    # a loaded machine, and not what this test is about.)
    caplog.set_level(logging.INFO)
    content = b"x" * (16 << 20)
    emulator = Emulator(seed=1)
    file_id = emulator.create_file(content, "big.jsonl", "batch").id
    with _serving(QUICK, emulator) as server:
        _never_read(server, file_id, connection, len(content), caplog)


def _never_read(
    server: tuple[str, int],
    file_id: str,
    connection: str,
    size: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with conn:
        conn.connect(server)
        conn.sendall(
            f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\n"
            f"Connection: {connection}\r\n\r\n".encode()
        )
        assert logged(caplog, "did not read its answer") == 1
        conn.settimeout(PATIENCE)
        received = 0
        try:
            while data := conn.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            pass
        assert received < size


def test_a_client_that_reads_slowly_is_never_cut_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Past the socket buffers, each piece of a download (256 KiB) waits in
    # the server's buffer longer than the 0.2 s deadline for a client reading
    # 8 KiB every 10 ms: writing stays paused past the deadline, yet the
    # client reads all along.
    caplog.set_level(logging.INFO)
    emulator = Emulator(seed=1)
    content = bytes(range(256)) * (24 << 10)  # 6 MiB
    file_id = emulator.create_file(content, "big.bin", "user_data").id
    limits = Limits(request_seconds=0.2, head_seconds=0.2)
    with _serving(limits, emulator) as server:
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with conn:
            conn.connect(server)
            conn.sendall(
                f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            conn.settimeout(PATIENCE)
            received = bytearray()
            with contextlib.suppress(ConnectionResetError):
                while data := conn.recv(8192):
                    received += data
                    threading.Event().wait(0.01)  # slow, not a speed assertion
    assert received.endswith(content), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "did not read" in r.getMessage()]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v1/batches HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET /v1/batches HTTP/1.1\r\n\r\n",  # no Host
        b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_a_request_http_cannot_parse_gets_the_api_error_body(
    server: tuple[str, int], request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.create_connection(server) as conn:
        conn.sendall(request_bytes)
        conn.settimeout(PATIENCE)
        answer = b""
        while data := conn.recv(65_536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    # One line at INFO, as an access line; no WARNING per request.
    assert logged(caplog, "answering 400 to 127.0.0.1:") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_connection_can_upgrade_past_the_defences() -> None:
    # With a websocket library installed, uvicorn would hand an "Upgrade:
    # websocket" connection to a protocol without our deadlines or bound.
    assert config(Emulator()).ws == "none"


def test_garbage_after_an_early_answer_closes_without_a_traceback(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    # The body is refused (413) before it ends; HTTP garbage then follows.
    with socket.create_connection(server) as conn:
        conn.sendall(
            b"POST /v1/batches HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 200_000
        for _ in range(7):
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.settimeout(PATIENCE)
        assert conn.recv(12) == b"HTTP/1.1 413"
        assert logged(caplog, '"POST /v1/batches HTTP/1.1" 413') == 1
        conn.sendall(b"zz\r\n\r\n")
        assert closed_by_server(conn)
    assert not any(r.exc_info for r in caplog.records)


def test_one_access_line_per_request(
    server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with httpx2.Client(base_url=f"http://{server[0]}:{server[1]}") as http:
        caplog.clear()
        for path in ("/v1/batches", "/v1/files", "/v1/batches/batch_x"):
            http.get(path)
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert [r.args[2] for r in access] == [  # type: ignore[index]
        "/v1/batches",
        "/v1/files",
        "/v1/batches/batch_x",
    ]


# -- what any client may send ---------------------------------------------------------


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    emulator = Emulator(seed=2)
    transport = EmulatorTransport(create_app(emulator))
    with httpx2.Client(transport=transport, base_url="http://e") as client:
        client.emulator = emulator  # type: ignore[attr-defined]
        yield client
    transport.close()


def _upload(http: httpx2.Client, content: bytes) -> str:
    answer = http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    assert answer.status_code == 200
    return str(answer.json()["id"])


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "json"]
)
def test_a_json_route_refuses_other_content_types_with_415(
    http: httpx2.Client, content_type: str | None
) -> None:
    body = {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "24h"}
    headers = {"content-type": content_type} if content_type else {}
    answer = http.post("/v1/batches", content=json.dumps(body), headers=headers)
    assert answer.status_code == 415
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "application/json" in error["message"]
    assert http.get("/v1/batches").json()["data"] == []  # nothing was created


@pytest.mark.parametrize("path", ["/v1/batches/", "/v1/files/", "/v1/batches/x/"])
def test_a_trailing_slash_is_an_unknown_url_not_a_redirect(
    http: httpx2.Client, path: str
) -> None:
    # A redirect would also echo the Host header back as the place to go.
    answer = http.get(path, headers={"host": "evil.example"})
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == f"Invalid URL (GET {path})"


def test_a_long_input_file_id_is_refused_not_stored(http: httpx2.Client) -> None:
    # Stored, a megabyte-long id would make every page of the list huge.
    answer = http.post(
        "/v1/batches",
        json={
            "input_file_id": "file-" + "a" * 1_000_000,
            "endpoint": CHAT,
            "completion_window": "24h",
        },
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (
        "input_file_id",
        "string_above_max_length",
    )
    assert len(answer.content) < 1000
    assert http.get("/v1/batches").json()["data"] == []


@pytest.mark.parametrize("field", ["purpose", "expires_after[seconds]"])
def test_a_huge_upload_field_is_refused_small(http: httpx2.Client, field: str) -> None:
    # Form fields other than the file hold a word or a number: a megabyte of
    # one was held, decoded, quoted and echoed back whole.
    answer = http.post(
        "/v1/files",
        files={"file": ("in.jsonl", make_input_file(1))},
        data={"purpose": "batch", field: "p" * 1_000_000},
    )
    assert answer.status_code == 400
    assert len(answer.content) < 1000
    assert http.get("/v1/files").json()["data"] == []


def test_json_with_a_charset_is_json(http: httpx2.Client) -> None:
    body = {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "24h"}
    answer = http.post(
        "/v1/batches",
        content=json.dumps(body),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("endpoint", sorted(DEEP_BODIES))
def test_a_deep_line_over_http_never_gets_a_5xx_and_the_next_calls_answer(
    http: httpx2.Client, endpoint: str
) -> None:
    made = http.post(
        "/v1/batches",
        json={
            "input_file_id": _upload(http, deep_file(endpoint)),
            "endpoint": endpoint,
            "completion_window": "24h",
        },
    )
    assert made.status_code == 200
    http.emulator.clock.advance(86_400)  # type: ignore[attr-defined]
    calls: list[Callable[[], Any]] = [
        lambda: http.get(f"/v1/batches/{made.json()['id']}"),
        lambda: http.get("/v1/batches", params={"limit": 100}),
        lambda: http.get("/v1/files"),
        lambda: http.post(
            "/v1/batches",
            json={
                "input_file_id": _upload(http, make_input_file(1)),
                "endpoint": CHAT,
                "completion_window": "24h",
            },
        ),
    ]
    for call in calls:
        assert call().status_code == 200
    done = http.get(f"/v1/batches/{made.json()['id']}").json()
    assert done["status"] in ("completed", "failed")
    for file_id in (done["output_file_id"], done["error_file_id"]):
        if file_id:
            assert http.get(f"/v1/files/{file_id}/content").status_code == 200


def test_a_deep_create_body_is_400(http: httpx2.Client) -> None:
    deep = '{"metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answer = http.post(
        "/v1/batches", content=deep, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert http.get("/v1/batches").status_code == 200


def test_an_app_of_its_own_runs_its_batches_in_the_background() -> None:
    from starlette.testclient import TestClient

    app = create_app()
    emulator = app.state.emulator
    with TestClient(app):  # runs the lifespan
        assert emulator._runner.started
    assert not emulator._runner.started
    with TestClient(create_app(Emulator())) as client:  # one passed in: as it is
        assert not client.app.state.emulator._runner.started  # type: ignore[attr-defined]


# -- item 7 of issue 20: what HTTP must refuse -----------------------------------------


def _raw_answer(server: tuple[str, int], request: bytes) -> tuple[int, bytes, bytes]:
    """Send ``request`` whole; the status, head and body of the answer."""
    with socket.create_connection(server) as conn:
        conn.sendall(request)
        conn.settimeout(PATIENCE)
        answer = b""
        try:
            while data := conn.recv(65_536):
                answer += data
                head, found, body = answer.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ]
                if found and length and len(body) >= length[0]:
                    break
        except ConnectionResetError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def _api_error(body: bytes) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("size", [65_537, 70_000, 100_000, 250_000])
def test_a_request_head_past_64_kib_is_refused_however_it_arrives(
    server: tuple[str, int], size: int
) -> None:
    # h11 bounds only the part of a head it holds incomplete: a head that
    # arrived whole in one read passed, whatever its size.
    start = b"GET /v1/batches HTTP/1.1\r\nHost: x\r\nX-Pad: "
    padding = b"p" * (size - len(start) - 4)
    request = start + padding + b"\r\n\r\n"
    assert len(request) == size
    status, head, body = _raw_answer(server, request)
    assert status == 431
    assert b"content-type: application/json" in head.lower()
    assert "64 KiB" in _api_error(body)["message"]


def test_a_request_head_of_64_kib_exactly_is_served(server: tuple[str, int]) -> None:
    start = b"GET /v1/batches HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    request = start + b"p" * (65_536 - len(start) - 4) + b"\r\n\r\n"
    assert len(request) == 65_536
    assert _raw_answer(server, request)[0] == 200


def test_a_head_past_64_kib_behind_a_pipelined_request_is_refused(
    server: tuple[str, int],
) -> None:
    first = b"GET /v1/batches HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /v1/batches HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 90_000
    with socket.create_connection(server) as conn:
        conn.sendall(first + second + b"\r\n\r\n")
        conn.settimeout(PATIENCE)
        answer = b""
        try:
            while data := conn.recv(65_536):
                answer += data
        except ConnectionResetError:
            pass
    # The first is answered; the second is never served.
    assert answer.count(b"HTTP/1.1 200 ") == 1


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ],
)
def test_content_length_beside_transfer_encoding_is_refused_not_parsed(
    server: tuple[str, int], framing: bytes
) -> None:
    body = json.dumps(
        {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "24h"}
    ).encode()
    request = (
        b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + framing
        + b"\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    status, head, answer = _raw_answer(server, request)
    assert status == 400
    assert "Content-Length" in _api_error(answer)["message"]
    assert b"connection: close" in head.lower()
    with httpx2.Client(base_url=f"http://{server[0]}:{server[1]}") as http:
        assert http.get("/v1/batches").json()["data"] == []  # nothing was created


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        ("utf-16", "application/json", 400),
        ("utf-16-le", "application/json", 400),
        ("utf-32", "application/json", 400),
        ("utf-8", "application/json; charset=bogus", 415),
        ("latin-1", "application/json; charset=latin-1", 415),
        ("utf-16", "application/json; charset=utf-16", 415),
        ("latin-1", "application/json", 400),  # é is no UTF-8
    ],
)
def test_a_json_body_that_is_not_utf_8_is_refused(
    http: httpx2.Client, content: str, content_type: str, status: int
) -> None:
    body = {
        "input_file_id": "file-x",
        "endpoint": CHAT,
        "completion_window": "24h",
        "metadata": {"note": "café"},
    }
    answer = http.post(
        "/v1/batches",
        content=json.dumps(body, ensure_ascii=False).encode(content),
        headers={"content-type": content_type},
    )
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "UTF-8" in error["message"]
    assert http.get("/v1/batches").json()["data"] == []


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_a_json_body_said_to_be_utf_8_is_json(
    http: httpx2.Client, charset: str
) -> None:
    body = {"input_file_id": "file-x", "endpoint": CHAT, "completion_window": "24h"}
    answer = http.post(
        "/v1/batches",
        content=json.dumps(body).encode(),
        headers={"content-type": f"application/json; charset={charset}"},
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("key", [None, "sk-right"])
@pytest.mark.parametrize(
    "values",
    [
        ["Bearer sk-right", "Bearer sk-right"],
        ["Bearer sk-right", "Bearer sk-wrong"],
        ["Bearer sk-wrong", "Bearer sk-right"],
    ],
)
def test_two_authorization_headers_are_refused(
    key: str | None, values: list[str]
) -> None:
    # Which one counts is a guess: a proxy checking the last and a server
    # checking the first would disagree.
    transport = EmulatorTransport(create_app(Emulator(), api_key=key))
    with httpx2.Client(transport=transport, base_url="http://e") as client:
        answer = client.get(
            "/v1/batches", headers=[("authorization", value) for value in values]
        )
    transport.close()
    assert answer.status_code in (400, 401)
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Authorization" in error["message"]


# -- a connection cap one client cannot take whole -------------------------------------


def _still_open(conn: socket.socket) -> bool:
    """Whether the server still holds ``conn`` open (it sent nothing on it)."""
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:  # reset by the server
        return False
    finally:
        conn.setblocking(True)


def test_one_address_holding_600_half_sent_requests_locks_no_other_out(
    serve: Callable[..., str],
) -> None:
    # Linux routes all of 127/8 to the loopback interface: 127.0.0.2 is a
    # second client address on this machine.
    # Deadlines long enough that no connection ends before the test does:
    # the per-address bound alone keeps the other client served.
    base = serve("--head-seconds", "120", "--request-seconds", "120")
    port = int(base.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        for _ in range(600):
            conn = socket.socket()
            held.append(conn)
            conn.bind(("127.0.0.2", 0))
            conn.settimeout(PATIENCE)
            conn.connect(("127.0.0.1", port))
            with contextlib.suppress(OSError):  # closed by the server already
                conn.sendall(b"POST /v1/batches HTTP/1.1\r\nHo")
        for _ in range(20):  # a new connection each time, from 127.0.0.1
            answer = httpx2.get(f"{base}/v1/batches", timeout=PATIENCE)
            assert answer.status_code == 200
        # ... while the other address still held all it may.
        open_now = sum(map(_still_open, held))
        assert 0 < open_now <= 64
    finally:
        for conn in held:
            conn.close()


@pytest.mark.parametrize("key", ["", " ", "sk x", "sk-\u00e9", "sk-\t"])
def test_an_app_refuses_an_api_key_no_request_could_carry(key: str) -> None:
    with pytest.raises(ValueError, match="api_key must be one or more printable"):
        create_app(Emulator(), api_key=key)


def test_refusals_are_counted_between_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    later: list[tuple[float, Callable[[], None]]] = []
    refusals = Refusals(
        10, schedule=lambda d, f: later.append((d, f)), clock=lambda: now[0]
    )
    for n in range(500):
        now[0] = n / 100  # 500 refusals in 5 s
        refusals.refused("127.0.0.2" if n % 5 else "127.0.0.3", "it has 64 open")
    assert len(later) == 1
    assert later[0][0] == pytest.approx(10 - 0.01)  # at the interval's end
    now[0] = 10.0
    later[0][1]()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "closing a new connection from 127.0.0.3: it has 64 open" in lines[0]
    assert lines[1] == (
        "closed 499 more new connection(s) in the last 10 s, from 2 address(es): "
        "127.0.0.2 400, 127.0.0.3 99"
    )
    now[0] = 25.0  # quiet meanwhile: the next is logged at once
    refusals.refused("127.0.0.4", "it has 64 open")
    assert len(caplog.records) == 3
