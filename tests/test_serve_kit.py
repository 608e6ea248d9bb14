"""``batchfsm serve`` for tests: --admin over a real socket, a quiet SIGTERM."""

import signal
import socket
import subprocess
import sys
import time

import httpx2
import openai


def test_serve_admin_injects_faults_for_a_real_client(serve):
    base = serve("--admin", "--api-key", "sk-t")
    auth = {"Authorization": "Bearer sk-t"}
    assert httpx2.get(f"{base}/health").json()["status"] == "ok"
    fault = {"path": "/v1/batches", "status": 429, "times": 2, "retry_after": 0.01}
    assert httpx2.post(f"{base}/_admin/faults", json=fault, headers=auth).is_success
    with openai.OpenAI(api_key="sk-t", base_url=f"{base}/v1", max_retries=2) as client:
        assert client.batches.list().data == []
        assert len(client.models.list().data) > 100
    log = httpx2.get(f"{base}/_admin/requests", headers=auth).json()["data"]
    assert [c["status"] for c in log][-4:] == [429, 429, 200, 200]  # after readiness
    # The --speed clock moves on command too.
    before = httpx2.get(f"{base}/health").json()["time"]
    moved = httpx2.post(
        f"{base}/_admin/clock/advance", json={"seconds": 86_400}, headers=auth
    ).json()["time"]
    assert moved >= before + 86_400


def test_serve_without_admin_has_no_admin_routes(serve):
    base = serve()
    assert httpx2.post(f"{base}/_admin/reset").status_code == 404


def test_serve_stops_on_sigterm_in_one_line_with_status_0():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "batchfsm", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # bound
        deadline = time.monotonic() + 30  # a readiness wait, not a speed assertion
        while True:
            try:
                httpx2.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    said = [line for line in err.splitlines() if "SIGTERM" in line]
    assert said == [
        "batchfsm: INFO SIGTERM: stopping (open requests are finished first)"
    ]
    assert "Traceback" not in err


def test_check_accepts_a_file_with_a_byte_order_mark(tmp_path):
    import batchfsm as bf

    batch = bf.new_batch(
        id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=100
    )
    recording = tmp_path / "trace.jsonl"
    recording.write_bytes(b"\xef\xbb\xbf" + bf.dumps(batch).encode() + b"\n")
    for source, stdin in ((str(recording), None), ("-", recording.read_bytes())):
        done = subprocess.run(
            [sys.executable, "-m", "batchfsm", "check", source],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stderr) == (0, b""), done
