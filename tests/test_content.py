"""Content in bounded pieces, and bounded storage, on every store.

- A download reads its file from the store by range, a piece at a time, in
  process and over HTTP: no read asks for more than a piece and nothing asks
  for the whole file (``FileStore.content`` refuses here).
- A real ``batchfsm serve`` downloading a large file four times at once keeps
  its resident memory within a bound far below one copy of the file (read
  from ``/proc``: a memory bound, not a speed check); a client that reads
  nothing holds no more than its socket buffers.
- ``max_storage_bytes`` (``serve --max-storage``) refuses an upload past it
  with 413; ``max_output_bytes`` (``serve --max-output-bytes``) fails a
  batch's requests past it, each ``custom_id`` still answered exactly once.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

import batchfsm as bf
from batchfsm.emulator import ApiError, Emulator, EmulatorTransport, create_app
from batchfsm.emulator._files import READ_PIECE_BYTES

from .test_stores import _POSTGRES, STORES, Stores, fresh

S = bf.BatchStatus
MiB = 1 << 20
#: How long a test waits for a server before it gives up (a hang guard).
PATIENCE = 120
PROC = Path("/proc/self/status")


@pytest.fixture(scope="session", params=sorted(STORES))
def store_kind(request: pytest.FixtureRequest) -> str:
    """memory, sqlite or postgres (its cluster started once for the session)."""
    if request.param == "postgres" and not _POSTGRES:
        _POSTGRES.append(request.getfixturevalue("postgres_server"))
    return str(request.param)


@pytest.fixture
def stores(store_kind: str) -> Iterator[Stores]:
    with fresh(store_kind) as made:
        yield made


def _watched(emu: Emulator) -> list[int]:
    """The sizes every read of ``emu``'s files asks for; ``content()`` refused."""
    files: Any = emu.files
    asked: list[int] = []
    read = files.read

    def watched_read(file_id: str, offset: int, size: int) -> bytes | None:
        asked.append(size)
        data: bytes | None = read(file_id, offset, size)
        return data

    def whole(file_id: str) -> bytes | None:
        raise AssertionError(f"{file_id} was read whole")

    files.read, files.content = watched_read, whole
    return asked


def _content(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


def test_a_download_reads_its_file_by_range_a_piece_at_a_time(
    stores: Stores,
) -> None:
    emu = Emulator(store=stores.batches, seed=1)
    content = _content(5 * READ_PIECE_BYTES + 123)
    file = emu.create_file(content, "big.bin", "user_data")
    asked = _watched(emu)
    pieces = list(emu.file_content_pieces(file.id))
    assert b"".join(pieces) == content
    assert len(pieces) == 6
    assert max(map(len, pieces)) <= READ_PIECE_BYTES
    assert asked and max(asked) <= READ_PIECE_BYTES
    asked.clear()
    app = create_app(emu)
    with httpx2.Client(
        transport=EmulatorTransport(app), base_url="http://emulator"
    ) as http:
        answer = http.get(f"/v1/files/{file.id}/content")
    assert answer.status_code == 200
    assert answer.content == content
    assert answer.headers["content-length"] == str(len(content))
    assert answer.headers["content-type"] == "application/octet-stream"
    assert len(asked) == 6 and max(asked) <= READ_PIECE_BYTES


def test_a_file_deleted_mid_download_is_404_not_short(stores: Stores) -> None:
    emu = Emulator(store=stores.batches, seed=1)
    file = emu.create_file(_content(3 * 1000), "a.bin", "user_data")
    pieces = emu.file_content_pieces(file.id, 1000)
    assert next(pieces) == _content(1000)
    emu.delete_file(file.id)
    with pytest.raises(ApiError) as caught:
        next(pieces)
    assert caught.value.status_code == 404
    with pytest.raises(ApiError):
        emu.file_content_pieces(file.id)  # found, or not, when asked
    with pytest.raises(TypeError, match="piece_bytes"):
        emu.file_content_pieces(file.id, 0)


# -- bounded storage ------------------------------------------------------------------


def _upload(http: httpx2.Client, size: int, name: str = "a.bin") -> httpx2.Response:
    return http.post(
        "/v1/files",
        files={"file": (name, _content(size))},
        data={"purpose": "user_data"},
    )


def test_an_upload_past_the_storage_bound_is_413_over_http(stores: Stores) -> None:
    emu = Emulator(store=stores.batches, seed=1, max_storage_bytes=1_000)
    with httpx2.Client(
        transport=EmulatorTransport(create_app(emu)), base_url="http://emulator"
    ) as http:
        first = _upload(http, 600)
        assert first.status_code == 200, first.text
        refused = _upload(http, 401)
        assert refused.status_code == 413
        assert refused.json() == {
            "error": {
                "message": "Storage limit reached: this file of 401 bytes would "
                "bring the files stored to 1001 bytes, past this server's limit "
                "of 1000 bytes. Delete files to make room.",
                "type": "invalid_request_error",
                "param": "file",
                "code": "storage_limit_exceeded",
            }
        }
        assert [f["id"] for f in http.get("/v1/files").json()["data"]] == [
            first.json()["id"]
        ]
        assert _upload(http, 400).status_code == 200  # exactly up to the bound
        assert _upload(http, 1).status_code == 413
        assert http.delete(f"/v1/files/{first.json()['id']}").status_code == 200
        assert _upload(http, 600).status_code == 200  # room again
    assert emu.files.stored_bytes() == 1_000


def test_the_storage_bound_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="max_storage_bytes"):
        Emulator(max_storage_bytes=0)
    with pytest.raises(ValueError, match="max_output_bytes"):
        Emulator(max_output_bytes=1.5)  # type: ignore[arg-type]


EMBEDDINGS = "/v1/embeddings"


def _embeddings_input(lines: int, dimensions: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"r{n}",
                "method": "POST",
                "url": EMBEDDINGS,
                "body": {
                    "model": "text-embedding-3-large",
                    "input": ["a few words", "and a few more"],
                    "dimensions": dimensions,
                },
            }
        ).encode()
        + b"\n"
        for n in range(lines)
    )


def _lines(emu: Emulator, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in emu.file_content(file_id).splitlines()]


def test_a_batch_past_its_output_bound_fails_its_remaining_requests(
    stores: Stores,
) -> None:
    bound = 40_000
    emu = Emulator(store=stores.batches, seed=3, max_output_bytes=bound)
    upload = emu.create_file(_embeddings_input(40, 256), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint=EMBEDDINGS)
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    done = emu.retrieve_batch(batch.id)
    assert done.status is S.COMPLETED
    output, errors = _lines(emu, done.output_file_id), _lines(emu, done.error_file_id)
    assert done.output_file_id is not None
    assert 0 < emu.retrieve_file(done.output_file_id).bytes <= bound
    assert errors and all(
        e["error"]["code"] == "batch_output_limit_exceeded"
        and e["response"] is None
        and f"limit of {bound} bytes" in e["error"]["message"]
        for e in errors
    )
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(f"r{n}" for n in range(40))  # each once
    # The first that did not fit, and every one after it, in input order.
    assert [e["custom_id"] for e in errors] == [f"r{n}" for n in range(len(output), 40)]
    assert done.request_counts == bf.BatchRequestCounts(
        total=40, completed=len(output), failed=len(errors)
    )
    assert bf.check(done) == []


def test_the_error_lines_past_the_output_bound_are_counted_too(stores: Stores) -> None:
    bound = 40_000
    emu = Emulator(store=stores.batches, seed=3, max_output_bytes=bound)
    upload = emu.create_file(_embeddings_input(40, 256), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint=EMBEDDINGS)
    emu.clock.advance(38)  # type: ignore[attr-defined]  # past the bound, not done
    assert emu.retrieve_batch(batch.id).status is S.IN_PROGRESS  # its work ran
    work = stores.batches.work(batch.id)
    assert work is not None and work.output_full and work.done < 40
    held = sum(stores.batches.result_size(batch.id, k) for k in ("output", "errors"))
    assert stores.batches.result_size(batch.id, "errors") > 0
    assert work.result_bytes == held
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    done = emu.retrieve_batch(batch.id)
    assert done.request_counts is not None
    assert done.request_counts.completed + done.request_counts.failed == 40


def test_without_an_output_bound_every_request_is_answered(stores: Stores) -> None:
    emu = Emulator(store=stores.batches, seed=3)
    upload = emu.create_file(_embeddings_input(40, 256), "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint=EMBEDDINGS)
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    done = emu.retrieve_batch(batch.id)
    assert done.request_counts == bf.BatchRequestCounts(
        total=40, completed=40, failed=0
    )
    assert done.error_file_id is None


# -- a real serve process: resident memory ------------------------------------------


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")  # pragma: no cover


class _Serve:
    """``batchfsm serve`` in a subprocess on a free port, and its memory."""

    def __init__(self, *args: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="batchfsm-serve-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "batchfsm", "serve", "--port", str(self.port),
                 *args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + PATIENCE  # a readiness wait
        while True:
            try:
                httpx2.get(f"{self.base}/v1/batches", timeout=5)
                break
            except httpx2.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("serve did not start") from None
                time.sleep(0.05)

    def resident(self) -> int:
        return _status(self.process.pid, "VmRSS:")

    def peak_from_now(self) -> Callable[[], int]:
        """A reading of the peak resident memory from now on."""
        pid = self.process.pid
        try:  # reset the kernel's high-water mark (Linux 4.0+)
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:  # pragma: no cover - sample instead
            pass
        else:
            return lambda: _status(pid, "VmHWM:")
        peak = [self.resident()]  # pragma: no cover
        stop = threading.Event()  # pragma: no cover

        def sample() -> None:  # pragma: no cover
            while not stop.wait(0.005):
                peak[0] = max(peak[0], self.resident())

        threading.Thread(target=sample, daemon=True).start()  # pragma: no cover

        def read() -> int:  # pragma: no cover
            stop.set()
            return peak[0]

        return read  # pragma: no cover

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.process.kill()
                self.process.wait()
        if not self.log.exists():  # stopped already
            return ""
        output = self.log.read_text(errors="replace")
        self.log.unlink()
        return output


@pytest.fixture
def db_args(store_kind: str, tmp_path: Path) -> list[str]:
    """``serve``'s arguments for the store under test."""
    if store_kind == "memory":
        return []
    if store_kind == "sqlite":
        return ["--db", f"sqlite:///{tmp_path / 'serve.sqlite'}"]
    from .postgres import new_database

    return ["--db", new_database(_POSTGRES[0])]


@pytest.fixture
def serve(db_args: list[str]) -> Iterator[Callable[..., _Serve]]:
    started: list[_Serve] = []

    def start(*args: str) -> _Serve:
        started.append(_Serve(*db_args, *args))
        return started[-1]

    yield start
    for server in started:
        server.stop()


#: The large file the memory tests download: far more than their bound.
BIG = 48 * MiB
#: What four downloads at once may add to serve's resident memory: a piece
#: each, buffers and threads; far below one copy of the file.
DOWNLOADS_BOUND = 24 * MiB


def _download(base: str, file_id: str, digests: list[str]) -> None:
    digest = hashlib.sha256()
    with (
        httpx2.Client(base_url=base, timeout=PATIENCE) as http,
        http.stream("GET", f"/v1/files/{file_id}/content") as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(BIG)
        for data in answer.iter_bytes(1 << 16):
            digest.update(data)
    digests.append(digest.hexdigest())


@pytest.mark.skipif(not PROC.exists(), reason="reads resident memory from /proc")
def test_four_downloads_at_once_of_a_large_file_keep_serves_memory_bounded(
    serve: Callable[..., _Serve],
) -> None:
    server = serve()
    content = _content(BIG)
    with httpx2.Client(base_url=server.base, timeout=PATIENCE) as http:
        answer = _upload(http, BIG, "big.bin")
        assert answer.status_code == 200, answer.text
    file_id = answer.json()["id"]
    del content
    time.sleep(0.5)  # the upload's spool and thread settle
    before = server.resident()
    peak = server.peak_from_now()
    digests: list[str] = []
    threads = [
        threading.Thread(target=_download, args=(server.base, file_id, digests))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    assert digests == [hashlib.sha256(_content(BIG)).hexdigest()] * 4
    added = peak() - before
    print(f"four downloads added {added / MiB:.1f} MiB")
    assert added < DOWNLOADS_BOUND, f"{added / MiB:.1f} MiB added by the downloads"


@pytest.mark.skipif(not PROC.exists(), reason="reads resident memory from /proc")
def test_a_client_that_reads_nothing_holds_no_more_than_its_buffers(
    serve: Callable[..., _Serve],
) -> None:
    server = serve()
    with httpx2.Client(base_url=server.base, timeout=PATIENCE) as http:
        answer = _upload(http, BIG, "big.bin")
        assert answer.status_code == 200, answer.text
    file_id = answer.json()["id"]
    time.sleep(0.5)
    before = server.resident()
    peak = server.peak_from_now()
    stalled = []
    for _ in range(4):
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.connect(("127.0.0.1", server.port))
        conn.sendall(
            f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        stalled.append(conn)
    try:
        time.sleep(2)  # ample time to fill every buffer the server would
        # Meanwhile another client is served in full.
        digests: list[str] = []
        _download(server.base, file_id, digests)
        assert len(digests) == 1
        added = peak() - before
        print(f"stalled readers added {added / MiB:.1f} MiB")
        assert added < DOWNLOADS_BOUND, f"{added / MiB:.1f} MiB held for stalled reads"
    finally:
        for conn in stalled:
            conn.close()


def test_serve_refuses_uploads_past_max_storage(
    serve: Callable[..., _Serve],
) -> None:
    server = serve("--max-storage", "1kB", "--max-output-bytes", "1MiB")
    with httpx2.Client(base_url=server.base, timeout=PATIENCE) as http:
        assert _upload(http, 999).status_code == 200
        refused = _upload(http, 2)
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "storage_limit_exceeded"
    assert "bounds: storage 1,000 bytes, output per batch 1,048,576 bytes" in (
        server.stop()
    )


#: Uploads sent at once to servers with room for STORED of them.
RACING, STORED = 24, 10


def _race_uploads(bases: list[str]) -> list[httpx2.Response]:
    """RACING uploads of 100 bytes at once, spread over ``bases``; their answers."""
    start = threading.Barrier(RACING, timeout=PATIENCE)  # a hang guard
    answers: list[httpx2.Response] = []

    def upload(n: int) -> None:
        with httpx2.Client(base_url=bases[n % len(bases)], timeout=PATIENCE) as http:
            http.get("/v1/files?limit=1")  # connected before the race starts
            start.wait()
            answers.append(_upload(http, 100))

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(RACING)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    return answers


def _judge_race(answers: list[httpx2.Response], base: str) -> None:
    """STORED of the answers stored a file, every other one is the typed 413."""
    assert len(answers) == RACING
    stored = [a for a in answers if a.status_code == 200]
    for refused in answers:
        if refused.status_code != 200:
            assert refused.status_code == 413, refused.text
            error = refused.json()["error"]
            assert error["code"] == "storage_limit_exceeded"
            assert error["type"] == "invalid_request_error" and error["param"] == "file"
            assert error["message"].startswith("Storage limit reached: this file")
    assert len(stored) == STORED
    with httpx2.Client(base_url=base, timeout=PATIENCE) as http:
        listed = http.get("/v1/files").json()["data"]
    assert sorted(f["id"] for f in listed) == sorted(a.json()["id"] for a in stored)
    assert sum(f["bytes"] for f in listed) == STORED * 100


def test_racing_uploads_to_serve_never_pass_max_storage_together(
    serve: Callable[..., _Serve],
) -> None:
    server = serve("--max-storage", str(STORED * 100 + 50))
    _judge_race(_race_uploads([server.base]), server.base)


def test_two_serve_processes_on_one_postgres_share_max_storage(
    postgres_server: str,
) -> None:
    from .postgres import new_database

    db = new_database(postgres_server)
    limit = str(STORED * 100 + 50)
    servers = [_Serve("--db", db, "--max-storage", limit) for _ in range(2)]
    try:
        bases = [server.base for server in servers]
        _judge_race(_race_uploads(bases), bases[1])
    finally:
        for server in servers:
            server.stop()


def test_serve_sizes_the_fakes_embeddings(serve: Callable[..., _Serve]) -> None:
    server = serve("--embedding-dimensions", "16")
    with httpx2.Client(base_url=server.base, timeout=PATIENCE) as http:
        answer = http.post(
            "/v1/embeddings", json={"model": "text-embedding-3-large", "input": "a"}
        )
    assert len(answer.json()["data"][0]["embedding"]) == 16
    server.stop()
    refused = subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve", "--port", "1",
         "--embedding-dimensions", "8", "--upstream", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=PATIENCE, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr == (
        "batchfsm serve: --embedding-dimensions sizes the fake's embeddings: "
        "with --upstream, the upstream answers\n"
    )


@pytest.mark.parametrize(
    ("option", "text"),
    [
        ("--max-storage", "0"),
        ("--max-output-bytes", "-1"),
        ("--max-storage", "1 TB"),
        ("--embedding-dimensions", "0"),
    ],
)
def test_serve_refuses_a_bound_that_is_no_size_in_one_line(
    option: str, text: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve", "--port", "1", option, text],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"batchfsm serve: {option} must be a whole number")
    assert done.stderr.count("\n") == 1


#: The big batch's shape: ~82 MB of output (457 KB a line).
BIG_BATCH_LINES = 180
#: What it may add to serve's resident memory while it runs, and keep after.
BIG_BATCH_PEAK, BIG_BATCH_AFTER = 48 * MiB, 30 * MiB


@pytest.mark.skipif(not PROC.exists(), reason="reads resident memory from /proc")
# Not the memory store: it keeps every file, results too, in memory.
@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)
def test_a_big_batchs_results_are_never_held_whole_nor_kept_after(
    serve: Callable[..., _Serve],
) -> None:
    server = serve("--speed", "1000")
    lines = b"".join(
        json.dumps(
            {
                "custom_id": f"r{n}",
                "method": "POST",
                "url": EMBEDDINGS,
                "body": {
                    "model": "text-embedding-3-large",
                    "input": ["a few words"] * 16,
                    "dimensions": 3072,
                },
            }
        ).encode()
        + b"\n"
        for n in range(BIG_BATCH_LINES)
    )
    with httpx2.Client(base_url=server.base, timeout=PATIENCE) as http:
        upload = http.post(
            "/v1/files",
            files={"file": ("in.jsonl", lines)},
            data={"purpose": "batch"},
        ).json()
        time.sleep(0.5)
        before = server.resident()
        peak = server.peak_from_now()
        batch = http.post(
            "/v1/batches",
            json={
                "input_file_id": upload["id"],
                "endpoint": EMBEDDINGS,
                "completion_window": "24h",
            },
        ).json()
        deadline = time.monotonic() + PATIENCE  # a hang guard
        while batch["status"] != "completed" and time.monotonic() < deadline:
            time.sleep(0.1)
            batch = http.get(f"/v1/batches/{batch['id']}").json()
        assert batch["status"] == "completed"
        added = peak() - before
        output = http.get(f"/v1/files/{batch['output_file_id']}").json()["bytes"]
        assert output > 64 * MiB
        time.sleep(1)
        after = server.resident() - before
    print(f"{output / MiB:.0f} MiB of output: {added / MiB:.1f} MiB peak, "
          f"{after / MiB:.1f} MiB after")  # fmt: skip
    assert added < BIG_BATCH_PEAK, f"{added / MiB:.1f} MiB added while it ran"
    assert after < BIG_BATCH_AFTER, f"{after / MiB:.1f} MiB kept after it ended"


def test_a_file_deleted_mid_download_cuts_it_short_in_one_line(
    serve: Callable[..., _Serve],
) -> None:
    server = serve()
    with httpx2.Client(base_url=server.base, timeout=PATIENCE) as http:
        answer = _upload(http, BIG, "big.bin")
        assert answer.status_code == 200, answer.text
        file_id = answer.json()["id"]
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with conn:
            conn.connect(("127.0.0.1", server.port))
            conn.sendall(
                f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            received = len(conn.recv(65_536))  # it started; now it waits on us
            assert http.delete(f"/v1/files/{file_id}").status_code == 200
            conn.settimeout(PATIENCE)
            try:
                while data := conn.recv(1 << 20):
                    received += len(data)
            except ConnectionResetError:
                pass
    assert 0 < received < BIG  # short: the rest of the file was gone
    log = server.stop()
    assert f"a download of {file_id} was cut off: the file was deleted" in log
    assert "Traceback" not in log


def test_a_download_cut_by_a_store_outage_ends_short_without_a_traceback(caplog):
    from starlette.testclient import TestClient

    from batchfsm.emulator import Emulator, create_app
    from batchfsm.emulator._store_errors import StoreUnavailable

    emulator = Emulator()
    content = b'{"a": 1}\n' * 100_000  # several pieces
    file = emulator.create_file(content, "in.jsonl", "batch")
    reads = {"n": 0}
    read = emulator.files.read

    def flaky(file_id: str, offset: int, size: int) -> bytes | None:
        reads["n"] += 1
        if reads["n"] == 2:
            raise StoreUnavailable("db: connection lost")
        return read(file_id, offset, size)

    emulator.files.read = flaky  # type: ignore[method-assign]
    with (
        caplog.at_level("INFO", logger="batchfsm.emulator"),
        TestClient(create_app(emulator), raise_server_exceptions=True) as client,
        client.stream("GET", f"/v1/files/{file.id}/content") as answer,
    ):
        got = b"".join(answer.iter_bytes())  # never raises: a short body
    assert answer.status_code == 200 and 0 < len(got) < len(content)
    assert "the store is unavailable" in caplog.text
    assert emulator.outage.down
