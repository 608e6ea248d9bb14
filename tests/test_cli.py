import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs
import httpx2
import pytest
from hypothesis import given, settings

import batchfsm as bf
from batchfsm._cli import main
from batchfsm.strategies import traces

EXAMPLE_TRACE = Path(__file__).parents[1] / "docs" / "examples" / "trace.jsonl"


def test_the_example_trace_is_legal(capsys):
    assert main(["check", str(EXAMPLE_TRACE)]) == 0
    assert capsys.readouterr().out == "5 snapshot(s) of 1 batch(es): no violation(s)\n"


@settings(max_examples=20)
@given(traces())
def test_check_accepts_jsonl_arrays_and_list_pages(tmp_path_factory, trace):
    folder = tmp_path_factory.mktemp("traces")
    documents = [bf.to_dict(b) for b in trace]
    jsonl = folder / "trace.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in documents))
    array = folder / "trace.json"
    array.write_text(json.dumps(documents))
    pages = folder / "pages.jsonl"
    pages.write_text(
        "".join(
            json.dumps({"object": "list", "data": documents[i : i + 2]}) + "\n"
            for i in range(0, len(documents), 2)
        )
    )
    for path in (jsonl, array, pages):
        assert main(["check", str(path)]) == 0


def test_check_reports_each_violation_and_exits_1(tmp_path, capsys):
    batch = bf.new_batch(
        id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=100
    )
    running = bf.advance(batch, "start", at=110)
    jumped = attrs.evolve(running, status=bf.BatchStatus.COMPLETED, completed_at=120)
    path = tmp_path / "t.jsonl"
    path.write_text(
        "\n".join(json.dumps(bf.to_dict(b)) for b in (batch, running, jumped))
        + '\n{"id": "batch_2", "object": "batch"}\n'
    )
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "#2 batch_1 stamp.missing @ finalizing_at: "
        "finalizing_at is not set while status is completed"
    )
    assert "#3 batch_2 schema @ endpoint: required field missing" in out
    assert out[-1] == "4 snapshot(s) of 2 batch(es): 6 violation(s)"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", "line 1: not valid JSON"),
        ("[1, 2", "not valid JSON"),
        ('{"object": "list", "data": 3}\n', "a list page without a data array"),
        ('{"object": "list", "data": 3}\n{}\n', "line 1: a list page without a data"),
        ("[" * 100_000 + "\n", "nested too deeply"),
    ],
)
def test_unreadable_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_file_is_one_line_and_exit_2(capsys):
    assert main(["check", "/nonexistent/trace.jsonl"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_stdin_and_the_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "batchfsm", "check", "-"],
        input=EXAMPLE_TRACE.read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no violation" in result.stdout


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "svg"])
def test_diagram_formats(capsys, fmt):
    assert main(["diagram", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert all(status.value in out for status in bf.BatchStatus)


def test_bad_arguments_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as info:
        main(["diagram", "--format", "png"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["--version"]) == 0


def test_a_single_pretty_printed_object_and_odd_ids(tmp_path, capsys):
    batch = bf.new_batch(
        id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=100
    )
    path = tmp_path / "one.json"
    path.write_text(json.dumps(bf.to_dict(batch), indent=2))
    assert main(["check", str(path)]) == 0
    path.write_text('{"id": [1], "object": "batch"}\n')
    assert main(["check", str(path)]) == 1
    assert "schema @ id: expected str, got [1]" in capsys.readouterr().out


def test_serve_starts_answers_and_stops(serve):
    import httpx2

    base = serve("--api-key", "sk-x")
    answer = httpx2.get(f"{base}/v1/batches", headers={"Authorization": "Bearer sk-x"})
    assert answer.status_code == 200
    assert answer.json()["object"] == "list"
    denied = httpx2.get(f"{base}/v1/batches")
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_api_key"


def _serve_refusal(*args: str) -> str:
    """Run ``batchfsm serve ARGS``; it must refuse: exit 2, one line, nothing else."""
    done = subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""  # no banner: nothing was served
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("batchfsm serve: ")
    return lines[0]


@pytest.mark.parametrize("speed", ["inf", "nan", "0", "-1", "fast", "1e30", "-inf"])
def test_serve_refuses_a_speed_that_is_not_a_finite_number_above_0(speed):
    line = _serve_refusal(f"--speed={speed}")
    assert "--speed must be a finite number above 0" in line
    assert f"got {speed!r}" in line


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http", "\uff18\uff10"])
def test_serve_refuses_a_port_outside_1_to_65535(port):
    assert "--port must be an integer in 1..65535" in _serve_refusal(f"--port={port}")


def test_serve_refuses_a_seed_that_is_not_an_integer():
    assert "--seed must be an integer" in _serve_refusal("--seed", "x")


def test_serve_refuses_a_host_that_does_not_resolve():
    line = _serve_refusal("--host", "no-such-host.invalid", "--port", "8000")
    assert "cannot resolve host 'no-such-host.invalid'" in line


def test_serve_refuses_a_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _serve_refusal("--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in line


def test_serve_prints_its_banner_once_bound():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "batchfsm", "serve", "--port", str(port), "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        assert banner == f"batchfsm emulator: base_url=http://127.0.0.1:{port}/v1\n"
        # Announced means bound: a connection is accepted (queued) at once.
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout:
            server.stdout.close()


def test_serve_logs_a_malformed_upload_only_in_its_answer():
    # The multipart parser's own warnings went to stderr bare, one per bad
    # upload: the 400 answer already says what is wrong.
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
        answer = httpx2.post(
            f"http://127.0.0.1:{port}/v1/files",
            content=b"{}",
            headers={"content-type": "multipart/form-data; boundary=x"},
            timeout=30,
        )
        assert answer.status_code == 400
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    assert "boundary" not in errors


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "\uff18", ""])
def test_serve_refuses_store_threads_that_are_no_whole_number_above_0(value):
    line = _serve_refusal(f"--store-threads={value}")
    assert f"--store-threads must be a whole number above 0, got {value!r}" in line


@pytest.mark.parametrize("value", ["0", "0MB", "-1", "1.5GB", "10XB", "1 G", "MB"])
def test_serve_refuses_an_upload_budget_that_is_no_count_of_bytes(value):
    line = _serve_refusal(f"--upload-budget={value}")
    assert "--upload-budget must be a whole number of bytes above 0" in line
    assert f"got {value!r}" in line


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1000", 1000),
        ("7B", 7),
        ("400MB", 400 * 10**6),
        ("400mb", 400 * 10**6),
        ("2kB", 2000),
        ("3GB", 3 * 10**9),
        ("1GiB", 2**30),
        ("64 KiB", 64 * 2**10),
        ("5MiB", 5 * 2**20),
    ],
)
def test_an_upload_budget_takes_decimal_and_binary_units(text, count):
    from batchfsm._cli import BYTE_UNITS, _whole

    assert _whole("--upload-budget", text, BYTE_UNITS) == count


def test_serve_shows_its_defaults_which_are_the_apps(capsys):
    from batchfsm._cli import STORE_THREADS, UPLOAD_BUDGET
    from batchfsm.emulator import _app

    assert int(STORE_THREADS) == _app.STORE_THREADS
    assert int(UPLOAD_BUDGET) == _app.MAX_UPLOAD_BYTES_IN_FLIGHT
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {STORE_THREADS})" in text
    assert f"default {UPLOAD_BUDGET}:" in text


def test_serve_bounds_uploads_in_flight_by_its_upload_budget(serve):
    base = serve("--upload-budget", "1kB")
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as held:
        # One upload declares 2,000 bytes and sends a few: alone, it passes.
        held.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        )
        for _ in range(600):  # until the server holds it (a bound, not a speed)
            answer = httpx2.post(
                f"{base}/v1/files",
                files={"file": ("in.jsonl", b"{}\n")},
                data={"purpose": "batch"},
            )
            if answer.status_code == 429:
                break
            time.sleep(0.05)
        assert answer.status_code == 429
        assert answer.json()["error"]["message"] == (
            "Too many uploads in flight: together they may hold 1000 bytes. "
            "Try again when they are done."
        )


@pytest.mark.parametrize("key", ["", " ", "sk x", "sk-\u00e9", "sk-\n"])
def test_serve_refuses_an_api_key_no_request_could_carry(key):
    # An empty key was accepted, then refused every request.
    line = _serve_refusal("--api-key", key)
    assert "--api-key must be" in line


def test_serve_refuses_an_empty_api_key_from_the_environment():
    done = subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "BATCHFSM_API_KEY": ""},
    )
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("batchfsm serve: BATCHFSM_API_KEY must be")
    assert "it is empty" in done.stderr


def _first_lines_of_serve(*args: str) -> tuple[str, str]:
    """Start ``batchfsm serve ARGS`` on a free port; its banner and its stderr."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "BATCHFSM_API_KEY"}
    server = subprocess.Popen(
        [sys.executable, "-m", "batchfsm", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        httpx2.get(f"http://127.0.0.1:{port}/v1/batches", timeout=30)  # it serves
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    return banner, errors


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serve_warns_when_it_listens_beyond_loopback_without_a_key(host):
    if host == "::" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    _, errors = _first_lines_of_serve("--host", host)
    warnings = [line for line in errors.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, errors
    assert "without an API key" in warnings[0]
    assert "--api-key" in warnings[0]


@pytest.mark.parametrize(
    "args", [("--host", "0.0.0.0", "--api-key", "sk-x"), ("--host", "127.0.0.1")]
)
def test_serve_is_quiet_on_loopback_or_with_a_key(args):
    _, errors = _first_lines_of_serve(*args)
    assert "WARNING" not in errors


def test_serve_shows_its_connection_bounds_which_are_the_servers(capsys):
    from batchfsm import _cli
    from batchfsm.emulator import _protocol

    limits = _protocol.Limits()
    assert int(_cli.MAX_CONNECTIONS) == limits.max_connections
    assert int(_cli.MAX_CONNECTIONS_PER_ADDRESS) == limits.max_connections_per_address
    assert float(_cli.HEAD_SECONDS) == limits.head_seconds
    assert float(_cli.REQUEST_SECONDS) == limits.request_seconds
    assert limits.max_connections_per_address < limits.max_connections / 4
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [
        ("--max-connections N", _cli.MAX_CONNECTIONS),
        ("--max-connections-per-address N", _cli.MAX_CONNECTIONS_PER_ADDRESS),
        ("--head-seconds S", _cli.HEAD_SECONDS),
        ("--request-seconds S", _cli.REQUEST_SECONDS),
    ]:
        assert option in text
        assert f"(default {default}" in text


@pytest.mark.parametrize(
    ("args", "per_address", "head_seconds"),
    [
        (["--request-seconds", "5"], 64, 5.0),
        (["--max-connections", "32"], 32, 10.0),
        (["--max-connections", "32", "--max-connections-per-address", "8"], 8, 10.0),
    ],
)
def test_lowering_one_connection_bound_alone_is_never_refused(
    args, per_address, head_seconds
):
    from batchfsm import _cli

    parsed = _cli._parser().parse_args(["serve", *args])
    limits = _cli._limits(parsed)
    assert limits.max_connections_per_address == per_address
    assert limits.head_seconds == head_seconds


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-connections", "0"), "--max-connections must be a whole number"),
        (("--max-connections-per-address", "x"), "--max-connections-per-address"),
        (
            ("--max-connections", "10", "--max-connections-per-address", "11"),
            "--max-connections-per-address must be at most --max-connections (10)",
        ),
        (("--head-seconds", "nan"), "--head-seconds must be a finite number above 0"),
        (("--request-seconds", "-1"), "--request-seconds must be a finite number"),
        (
            ("--head-seconds", "31"),
            "--head-seconds must be at most --request-seconds (30), got 31",
        ),
    ],
)
def test_serve_refuses_connection_bounds_it_cannot_hold(args, message):
    assert message in _serve_refusal(*args)
