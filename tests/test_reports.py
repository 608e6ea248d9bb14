"""``conform --format junit|json|text --output``, and ``check --format json``."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import xmlschema

from batchfsm._reports import WAIT_LINE_SECONDS, Progress, junit
from batchfsm.conformance import Report, Result

ROOT = Path(__file__).parent.parent
SCHEMA = xmlschema.XMLSchema(
    str(Path(__file__).parent / "data" / "junit" / "JUnit.xsd")
)
EXAMPLES = Path(__file__).parent / "data" / "examples"


def _batchfsm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchfsm", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_a_mixed_report_is_valid_junit_and_reads_back_case_by_case() -> None:
    report = Report(
        (
            Result("create.echo", "pass"),
            Result("happy.terminal", "fail", "ended 'failed'\nsecond line"),
            Result("cancel.retry", "warn", "answered 409"),
            Result("trace.legal", "skip", "nothing to judge"),
        )
    )
    xml = junit(report, seconds=1.5, target="http://x")
    SCHEMA.validate(xml)
    suite = ET.fromstring(xml)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == (
        "4",
        "1",
        "2",
    )
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == [
        "create.echo",
        "happy.terminal",
        "cancel.retry",
        "trace.legal",
    ]
    assert list(cases["create.echo"]) == []
    (failure,) = cases["happy.terminal"]
    assert failure.tag == "failure" and failure.get("message") == "ended 'failed'"
    assert "second line" in (failure.text or "")
    (warned,) = cases["cancel.retry"]
    assert warned.tag == "skipped"
    assert warned.get("message") == "warning: answered 409"
    (skipped,) = cases["trace.legal"]
    assert skipped.get("message") == "nothing to judge"


def test_conform_writes_junit_to_a_file_and_no_progress_into_a_pipe(
    tmp_path: Path,
) -> None:
    out = tmp_path / "conform.xml"
    done = _batchfsm("conform", "--format", "junit", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "batchfsm conform: judging the built-in emulator (in-process, virtual clock)"
    ]  # stderr is a pipe: no progress line per check
    SCHEMA.validate(str(out))
    suite = ET.parse(out).getroot()
    names = [c.get("name") for c in suite.iter("testcase")]
    assert len(names) == len(set(names)) == int(suite.get("tests") or 0) > 10
    assert suite.get("failures") == "0"


def test_conform_json_format_and_the_old_flag_agree() -> None:
    one = _batchfsm("conform", "--format", "json", "--only", "create.echo")
    two = _batchfsm("conform", "--json", "--only", "create.echo")
    assert one.returncode == two.returncode == 0
    first, second = json.loads(one.stdout), json.loads(two.stdout)
    assert [r["id"] for r in first["results"]] == [r["id"] for r in second["results"]]


def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    done = _batchfsm(
        "conform", "--only", "create.echo", "--output", str(tmp_path / "no" / "x.xml")
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("batchfsm conform: --output ")


def test_check_format_json(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps(
            {
                "id": "batch_1",
                "object": "batch",
                "endpoint": "/v1/embeddings",
                "input_file_id": "file-1",
                "completion_window": "24h",
                "status": "validating",
                "created_at": 1,
                "expires_at": 86401,
            }
        )
        + "\n"
    )
    done = _batchfsm("check", "--format", "json", str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads(done.stdout)
    assert verdict == {"snapshots": 1, "batches": 1, "passed": True, "violations": []}
    bad = tmp_path / "bad.jsonl"
    record = json.loads(good.read_text())
    bad.write_text(json.dumps({**record, "expires_at": 5}) + "\n")
    done = _batchfsm("check", "--format", "json", str(bad))
    assert done.returncode == 1
    verdict = json.loads(done.stdout)
    assert verdict["passed"] is False and verdict["violations"]
    assert set(verdict["violations"][0]) == {
        "rule",
        "message",
        "path",
        "index",
        "batch_id",
    }
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = _batchfsm("check", "--format", "json", str(empty))
    assert done.returncode == 1 and json.loads(done.stdout)["snapshots"] == 0


def test_a_failed_run_without_a_failed_check_is_a_failed_case_in_junit() -> None:
    refused = Report(
        (Result("create.echo", "skip", "needs a key"),),
        refused="every request was refused: 401 Incorrect API key provided.",
    )
    xml = junit(refused)
    SCHEMA.validate(xml)
    suite = ET.fromstring(xml)
    assert suite.get("failures") == "1" and suite.get("tests") == "2"
    (verdict,) = [
        c for c in suite.iter("testcase") if c.get("name") == "conform.verdict"
    ]
    (failure,) = verdict
    assert failure.get("message", "").startswith("every request was refused")
    nothing = ET.fromstring(junit(Report((Result("trace.legal", "skip", "x"),))))
    assert "nothing was judged" in ET.tostring(nothing, encoding="unicode")
    passed = ET.fromstring(junit(Report((Result("trace.legal", "pass"),))))
    assert [c.get("name") for c in passed.iter("testcase")] == ["trace.legal"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_into_a_pipe_waits_are_told_seldom_and_no_line_per_check() -> None:
    out, clock = io.StringIO(), _Clock()
    shown = Progress(out, tty=False, clock=clock)
    for clock.now in (0.0, 10.0, WAIT_LINE_SECONDS + 1, WAIT_LINE_SECONDS + 20):
        shown.waiting("happy.terminal", f"waiting for batch_1 to end ({clock.now} s)")
    shown.ended(Result("happy.terminal", "pass"))
    shown.close()
    assert out.getvalue().splitlines() == [
        "batchfsm conform: happy.terminal: waiting for batch_1 to end (31.0 s)"
    ]


def test_on_a_terminal_the_waiting_line_is_redrawn_in_place_and_cleared() -> None:
    out, clock = io.StringIO(), _Clock()
    shown = Progress(out, tty=True, clock=clock)
    shown.waiting("happy.terminal", "waiting (1)")
    clock.now = 0.01
    shown.waiting("happy.terminal", "waiting (2)")  # too soon: not redrawn
    clock.now = 1.0
    shown.waiting("happy.terminal", "waiting (3)")
    shown.ended(Result("happy.terminal", "pass"))
    shown.waiting("happy.files", "waiting (4)")
    shown.close()
    assert out.getvalue() == (
        "\r\x1b[K  ....  happy.terminal: waiting (1)"
        "\r\x1b[K  ....  happy.terminal: waiting (3)"
        "\r\x1b[K  pass  happy.terminal\n"
        "\r\x1b[K  ....  happy.files: waiting (4)"
        "\r\x1b[K"
    )


def test_a_poll_tells_what_it_waits_for() -> None:
    from batchfsm.conformance import emulator_client, run

    told: list[tuple[str, str]] = []
    http, wait = emulator_client()
    with http:
        run(
            http,
            wait=wait,
            only={"happy.terminal"},
            waiting=lambda check, what: told.append((check, what)),
        )
    assert told
    check, what = told[0]
    assert check == "happy.terminal"
    assert re.fullmatch(r"waiting for batch_\w+ to end \(\w+ \d+/\d+, \d+ s\)", what)
