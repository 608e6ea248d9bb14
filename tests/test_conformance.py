"""The conformance run passes the emulator and fails broken servers by the right id."""

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from batchfsm._cli import main
from batchfsm.conformance import CHECKS, emulator_client, run
from batchfsm.emulator import Emulator, EmulatorTransport, VirtualClock, create_app

Mutation = Callable[[str, str, str, int, Any], tuple[int, Any] | None]


def broken(mutate: Mutation) -> Any:
    """An emulator behind an ASGI middleware that rewrites some answers."""
    clock = VirtualClock()
    app = create_app(Emulator(clock=clock))

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await app(scope, receive, capture)
        status, raw = start["status"], b"".join(chunks)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        query = scope.get("query_string", b"").decode()
        changed = mutate(scope["method"], scope["path"], query, status, body)
        if changed is not None:
            status, body = changed
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(raw)).encode()))
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": raw})

    http = httpx2.Client(transport=EmulatorTransport(middleware), base_url="http://b")
    return http, clock.advance


def batches_in(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and body.get("object") == "batch":
        return [body]
    if isinstance(body, dict) and body.get("object") == "list":
        return [b for b in body.get("data", []) if isinstance(b, dict)]
    return []


def each_batch(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(method: str, path: str, query: str, status: int, body: Any) -> Any:
        found = batches_in(body)
        for batch in found:
            change(batch)
        return (status, body) if found else None

    return mutate


def skip_cancelling_at(batch: dict[str, Any]) -> None:
    batch["cancelling_at"] = None


def rewind_a_stamp(batch: dict[str, Any]) -> None:
    if batch["status"] == "completed":
        batch["in_progress_at"] -= 1


def jump_to_completed(batch: dict[str, Any]) -> None:
    if batch["status"] in ("in_progress", "finalizing"):
        batch.update(
            status="validating",
            in_progress_at=None,
            finalizing_at=None,
            model=None,
            usage=None,
        )
    if batch["status"] == "completed":
        batch.update(in_progress_at=None, finalizing_at=None)


def decreasing_counts() -> Callable[[dict[str, Any]], None]:
    seen: set[str] = set()

    def change(batch: dict[str, Any]) -> None:
        if batch["status"] == "completed":
            if batch["id"] in seen:
                counts = batch["request_counts"]
                counts["completed"] -= 1
                counts["failed"] += 1
            seen.add(batch["id"])

    return change


def server_error_on_refused_cancel(method, path, query, status, body):
    if path.endswith("/cancel") and status == 409:
        return 500, "Internal Server Error"
    return None


def repeating_pages(method, path, query, status, body):
    if method == "GET" and path == "/v1/batches" and "after=" in query and body["data"]:
        body["data"] = [body["data"][0], *body["data"]]
        body["data"] = body["data"][:2]
        return status, body
    return None


def wrong_error_body(method, path, query, status, body):
    if status == 404:
        return 404, {"detail": "Not Found"}
    return None


def output_missing_lines(method, path, query, status, body):
    if path.endswith("/content") and isinstance(body, str) and body.count("\n") > 1:
        return status, "".join(body.splitlines(keepends=True)[:-1])
    return None


BROKEN = [
    ("skips cancelling_at", each_batch(skip_cancelling_at), "cancel.accepted"),
    ("rewinds a stamp", each_batch(rewind_a_stamp), "trace.legal"),
    ("jumps validating to completed", each_batch(jump_to_completed), "schema.batch"),
    ("decreases counts", each_batch(decreasing_counts()), "trace.legal"),
    ("500 on cancel of a completed batch", server_error_on_refused_cancel,
     "cancel.terminal"),
    ("pages repeat an item", repeating_pages, "list.pagination"),
    ("wrong error body", wrong_error_body, "errors.not_found"),
    ("output file missing lines", output_missing_lines, "happy.files"),
]  # fmt: skip


def test_the_emulator_passes_every_check():
    http, wait = emulator_client()
    with http:
        report = run(http, wait=wait)
    assert [(r.id, r.outcome) for r in report.results] == [(c, "pass") for c in CHECKS]
    assert report.passed


@pytest.mark.parametrize(
    ("mutation", "check_id"),
    [pytest.param(m, c, id=name) for name, m, c in BROKEN],
)
def test_a_broken_server_fails_the_right_check(mutation, check_id):
    http, wait = broken(mutation)
    with http:
        report = run(http, wait=wait)
    result = {r.id: r for r in report.results}[check_id]
    assert result.outcome == "fail", report.to_dict()
    assert result.evidence
    assert not report.passed


def test_only_selected_checks_are_reported():
    http, wait = emulator_client()
    with http:
        report = run(http, wait=wait, only={"errors.not_found"})
    outcomes = {r.id: r.outcome for r in report.results}
    assert outcomes["errors.not_found"] == "pass"
    assert outcomes["create.echo"] == "skip"
    with pytest.raises(ValueError, match="unknown check ids: nope"):
        run(http, only={"nope"})


def test_conform_command_json_and_exit_status(capsys):
    assert main(["conform", "--json", "--only", "list.pagination"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    assert {r["id"]: r["outcome"] for r in report["results"]}[
        "list.pagination"
    ] == "pass"


def test_conform_command_bad_arguments(capsys):
    assert main(["conform", "--only", "nope"]) == 2
    assert "unknown check id(s) nope" in capsys.readouterr().err
    assert main(["conform", "--base-url", "http://127.0.0.1:9", "--timeout", "5"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_conform_over_http_against_batchfsm_serve(serve, capsys):
    base = serve("--speed", "2000", "--api-key", "sk-c")
    status = main(
        ["conform", "--base-url", f"{base}/v1", "--api-key", "sk-c",
         "--time-scale", "0.005"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 failed" in out


def answers_without_ids(method, path, query, status, body):
    if method == "POST" and path == "/v1/batches" and isinstance(body, dict):
        body.pop("id", None)
        return status, body
    return None


def not_found_for_finished_batches(method, path, query, status, body):
    if path.endswith("/cancel") and status == 409:
        return 404, {
            "error": {"message": "no", "type": "x", "param": None, "code": None}
        }
    return None


def test_a_broken_answer_fails_checks_instead_of_crashing_the_run():
    http, wait = broken(answers_without_ids)
    with http:
        report = run(http, wait=wait)
    failed = {r.id for r in report.results if r.outcome == "fail"}
    assert {"cancel.accepted", "list.pagination", "schema.batch"} <= failed


def test_a_404_for_a_finished_batch_is_not_a_refusal():
    http, wait = broken(not_found_for_finished_batches)
    with http:
        report = run(http, wait=wait, only={"cancel.terminal"})
    assert {r.id: r.outcome for r in report.results}["cancel.terminal"] == "fail"


def test_only_runs_what_the_selected_checks_need():
    http, wait = emulator_client()
    requests: list[str] = []
    http.event_hooks["request"].append(lambda r: requests.append(r.url.path))
    with http:
        run(http, wait=wait, only={"errors.not_found"})
    assert requests == ["/v1/batches/batch_conformance_does_not_exist"]
