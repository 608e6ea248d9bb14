"""What a user of ``batchfsm conform`` and ``batchfsm check`` sees, as subprocesses."""

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from batchfsm.conformance import CHECKS
from tests.blocking import batchfsm_without

BATCHFSM = [sys.executable, "-m", "batchfsm"]


def batchfsm(
    *args: str, command: list[str] = BATCHFSM, stdin: str = "", tty: bool = False
) -> Any:
    """Run the command; with ``tty``, its standard error is a terminal (a pty)."""
    if not tty:
        return subprocess.run(
            [*command, *args], input=stdin, capture_output=True, text=True, check=False
        )
    import os
    import pty

    main, side = pty.openpty()
    done = subprocess.run(
        [*command, *args], input=stdin, stdout=subprocess.PIPE, stderr=side,
        text=True, check=False,
    )  # fmt: skip
    os.close(side)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other side is closed, all is read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    done.stderr = b"".join(chunks).decode().replace("\r\n", "\n")
    return done


def table(out: str) -> dict[str, tuple[str, list[str]]]:
    """The text report: id -> (outcome, the reason lines under it)."""
    rows: dict[str, tuple[str, list[str]]] = {}
    last = ""
    for line in out.splitlines():
        first = line.split(maxsplit=2)
        if first and first[0] in CHECKS:
            last = first[0]
            rows[last] = (first[1], [])
        elif line.lstrip().startswith("> ") and last:
            rows[last][1].append(line.lstrip()[2:])
    return rows


def progress(err: str) -> dict[str, str]:
    """The line per check on a terminal: id -> outcome (waiting lines left out)."""
    lines = (line.split("\x1b[K")[-1] for line in err.splitlines())
    pairs = (
        line.split() for line in lines if line.startswith("  ") and "...." not in line
    )
    return {check_id: outcome for outcome, check_id in pairs}


def test_the_emulator_passes_and_the_three_views_agree():
    text = batchfsm("conform", tty=True)
    assert text.returncode == 0, text.stderr
    rows = table(text.stdout)
    assert {i: o for i, (o, _) in rows.items()} == dict.fromkeys(CHECKS, "pass")
    assert progress(text.stderr) == dict.fromkeys(CHECKS, "pass")
    assert text.stdout.splitlines()[-1] == (
        f"{len(CHECKS)} passed, 0 failed, 0 warned, 0 skipped"
    )
    # While a check waits, the terminal says which and for what, in place.
    waits = re.findall(
        r"\r\x1b\[K  \.\.\.\.  ([a-z_.]+): waiting for (batch_\w+) to end "
        r"\((validating|in_progress|finalizing|cancelling) (\d+)/(\d+), (\d+) s\)",
        text.stderr,
    )
    assert waits and {check for check, *_ in waits} <= set(CHECKS)
    assert "happy.terminal" in {check for check, *_ in waits}
    assert text.stderr.endswith("\n")  # no waiting line left behind


def test_only_every_skip_has_its_reason_and_the_views_agree():
    text = batchfsm("conform", "--only", "happy.files", tty=True)
    as_json = batchfsm("conform", "--only", "happy.files", "--json", tty=True)
    assert text.returncode == as_json.returncode == 0, text.stderr
    rows = table(text.stdout)
    report = {r["id"]: r for r in json.loads(as_json.stdout)["results"]}
    assert {i: o for i, (o, _) in rows.items()} == {
        i: r["outcome"] for i, r in report.items()
    }
    assert (
        progress(text.stderr)
        == progress(as_json.stderr)
        == {i: r["outcome"] for i, r in report.items()}
    )
    ran = {"create.echo", "happy.terminal", "happy.files"}
    for check_id, (outcome, reasons) in rows.items():
        assert outcome == ("pass" if check_id in ran else "skip")
        assert reasons == ([] if check_id in ran else ["not selected"])


def test_nothing_to_judge_is_a_skip_with_its_reason_and_exit_2():
    result = batchfsm("conform", "--only", "schema.batch", "--only", "trace.legal")
    assert result.returncode == 2
    rows = table(result.stdout)
    reason = ["no Batch object was answered, so there is nothing to judge"]
    assert rows["schema.batch"] == rows["trace.legal"] == ("skip", reason)
    assert result.stdout.splitlines()[-1].endswith(": nothing was judged")


@pytest.mark.parametrize(
    ("key", "root", "summary"),
    [
        ("sk-wrong", "", "every request was answered 401: is the API key right?"),
        ("sk-right", "/not/the/root", "every request was answered 404: is --base-url"),
    ],
)
def test_a_refusing_server_is_said_so_first_and_exit_1(serve, key, root, summary):
    base = serve("--api-key", "sk-right")
    result = batchfsm(
        "conform", "--base-url", base + root, "--api-key", key, "--time-scale", "0.01"
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0].startswith(summary)
    for outcome, reasons in table(result.stdout).values():
        assert outcome != "pass" or root
        assert outcome == "pass" or reasons  # every skip and fail says why


def test_a_failed_check_shows_its_evidence_and_exits_1(serve):
    base = serve("--speed", "2000")
    result = batchfsm(
        "conform", "--base-url", base, "--model", "no-such-model",
        "--time-scale", "0.005", "--strict",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = table(result.stdout)
    outcome, reasons = rows["happy.terminal"]
    assert outcome == "fail"
    (reason,) = reasons  # the batch's errors shown with it
    assert reason.startswith(
        'ended \'failed\'; its errors: [{"code": "model_not_found"'
    )
    assert rows["happy.files"] == ("skip", ["needs happy.terminal, which ended fail"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "nope"], "argument --only: invalid choice: 'nope' (choose from"),
        (["--timeout", "0"], "--time-scale and --timeout must be positive"),
        (["--base-url", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9"),
        (["--base-url", "http://[::1"], "--base-url 'http://[::1': Invalid port"),
        (["--base-url", "127.0.0.1:9"], "cannot reach 127.0.0.1:9: Request URL is"),
    ],
)
def test_usage_and_environment_problems_exit_2(args, message):
    result = batchfsm("conform", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_shows_defaults_and_the_check_ids():
    result = batchfsm("conform", "--help")
    text = " ".join(result.stdout.split())
    for expected in (
        "--endpoint ENDPOINT the batch endpoint",
        "(default: /v1/chat/completions)",
        "--model MODEL the model",
        "(default: gpt-4o-mini)",
        "(default: 3600.0)",
        "one of: " + ", ".join(CHECKS),
    ):
        assert expected in text


def test_help_lists_each_check_with_its_level_and_what_it_demands():
    text = " ".join(batchfsm("conform", "--help").stdout.split())
    for declared in CHECKS.values():
        description = " ".join(declared.description.split())
        assert f"{declared.id} [{declared.level}]: {description}" in text
    assert "(observed: OGX tests; stdapi.ai #240)" in text


@pytest.mark.parametrize(
    ("command", "module"), [("conform", "httpx2"), ("serve", "starlette")]
)
def test_a_command_without_the_server_extra_says_one_line_and_exits_2(command, module):
    # serve and conform say the one standard line (batchfsm._extras).
    result = batchfsm(command, command=batchfsm_without(module))
    assert result.returncode == 2
    assert result.stderr == (
        f"batchfsm {command}: {module} is not installed; "
        "install it with: pip install 'batchfsm[server]'\n"
    )


def test_conform_help_needs_no_server_extra():
    helped = batchfsm("conform", "--help", command=batchfsm_without("httpx2"))
    assert helped.returncode == 0 and "one of: create.echo" in helped.stdout


@pytest.mark.parametrize(
    "content", ["", "\n\n", "[]", '{"object": "list", "data": []}']
)
def test_check_of_an_input_without_a_batch_says_so_and_exits_1(content):
    result = batchfsm("check", "-", stdin=content)
    assert result.returncode == 1
    assert result.stdout == "no Batch object in the input: nothing to judge\n"


def test_check_needs_no_extra():
    result = batchfsm(
        "check", "-", stdin="[]",
        command=batchfsm_without("httpx2", "starlette", "hypothesis", "openai"),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (1, "")


def test_a_site_that_is_not_a_batch_api_is_said_in_one_line_and_exit_2():
    from tests.not_an_api import site

    with site() as (base, seen):
        result = batchfsm("conform", "--base-url", base, "--time-scale", "0.001")
    assert result.returncode == 2
    assert result.stdout == ""  # no table of error pages
    assert "DOCTYPE" not in result.stderr and "<html" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"batchfsm conform: {base}: the server is not a Batch API: its first 3 "
        "answers were not the API's JSON (POST /v1/files -> 404 (text/html); "
        "POST /v1/files -> 404 (text/html); POST /v1/files -> 404 (text/html)): "
        "is --base-url the server's root (with or without /v1)?"
    )
    assert len(seen) == 4  # the reachability probe, then the three answers
