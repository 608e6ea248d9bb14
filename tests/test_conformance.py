"""The conformance run passes the emulator and fails broken servers by the right id."""

import itertools
import json
import re
import socket
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from batchfsm._cli import main
from batchfsm.conformance import CHECKS, _waiting, emulator_client, run
from batchfsm.conformance._registry import with_needs
from batchfsm.conformance._session import NOT_AN_API_AFTER
from batchfsm.emulator import Emulator, EmulatorTransport, VirtualClock, create_app

from .not_an_api import HTML_404, JSON_404, site
from .test_projects import PROJECTS_BROKEN

Mutation = Callable[[str, str, str, int, Any], tuple[int, Any] | None]
#: The body of the request being answered (for mutations that need it).
REQUEST: list[bytes] = []


def broken(mutate: Mutation, **options: Any) -> Any:
    """An emulator behind an ASGI middleware that rewrites some answers."""
    clock = VirtualClock()
    strip = options.pop("strip_headers", ())
    app = create_app(Emulator(clock=clock, **options))

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        REQUEST.clear()

        async def recording() -> Any:
            message = await receive()
            REQUEST.append(message.get("body", b""))
            return message

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await app(scope, recording, capture)
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
        headers = [
            (k, v)
            for k, v in start["headers"]
            if k != b"content-length" and k not in strip
        ]
        headers.append((b"content-length", str(len(raw)).encode()))
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": raw})

    http = httpx2.Client(transport=EmulatorTransport(middleware), base_url="http://b")
    return http, _waiting(clock)


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


def unchanged(method, path, query, status, body):
    return None


def create_drops_metadata(method, path, query, status, body):
    if method == "POST" and path == "/v1/batches" and status == 200:
        return status, {**body, "metadata": None}
    return None


def cancel_answer_without_cancelling_at(method, path, query, status, body):
    if path.endswith("/cancel") and status == 200:
        return status, {**body, "cancelling_at": None}
    return None


def second_cancel_refused() -> Mutation:
    cancelled: set[str] = set()

    def mutate(method, path, query, status, body):
        if not path.endswith("/cancel") or status != 200:
            return None
        if path in cancelled:
            error = {"message": "Already cancelling.", "type": "invalid_request_error"}
            return 409, {"error": {**error, "param": None, "code": None}}
        cancelled.add(path)
        return None

    return mutate


def never_finishes_a_cancel(batch: dict[str, Any]) -> None:
    if batch["status"] == "cancelled":
        batch.update(
            status="cancelling",
            cancelled_at=None,
            output_file_id=None,
            error_file_id=None,
        )


def forgets_the_line_of_an_error(batch: dict[str, Any]) -> None:
    for error in (batch.get("errors") or {}).get("data", []):
        error["line"] = None


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


def bad_request_on_refused_cancel(method, path, query, status, body):
    if path.endswith("/cancel") and status == 409:
        return 400, {"error": {**body["error"], "message": "Not now."}}
    return None


def missing_file_refused_at_create(method, path, query, status, body):
    missing = "file-conformance-does-not-exist"
    if method == "POST" and status == 200 and body.get("input_file_id") == missing:
        error = {"message": "No such file.", "type": "invalid_request_error"}
        return 400, {"error": {**error, "param": "input_file_id", "code": None}}
    return None


def uploads(method: str, path: str, status: int) -> bool:
    return method == "POST" and path == "/v1/files" and status in (200, 400)


def txt_accepted(method, path, query, status, body):
    if uploads(method, path, status) and ".jsonl" in str(body.get("error")):
        return 200, {"id": "file-x", "object": "file", "purpose": "batch"}
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


def unprocessable_bad_create(method, path, query, status, body):
    if method == "POST" and path == "/v1/batches" and status == 400:
        return 422, body
    return None


def output_missing_lines(method, path, query, status, body):
    if path.endswith("/content") and isinstance(body, str) and body.count("\n") > 1:
        return status, "".join(body.splitlines(keepends=True)[:-1])
    return None


def create_expires_in_a_day_and_a_second(method, path, query, status, body):
    if method == "POST" and path == "/v1/batches" and status == 200:
        return status, {**body, "expires_at": body["expires_at"] + 1}
    return None


def create_without_usage(method, path, query, status, body):
    if method == "POST" and path == "/v1/batches" and status == 200:
        return status, {**body, "usage": None}
    return None


def rewrite_errors(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def each(batch: dict[str, Any]) -> None:
        for error in (batch.get("errors") or {}).get("data", []):
            change(error)

    return each_batch(each)


def model_missing_as_model_not_found(error: dict[str, Any]) -> None:
    if error["param"] == "body.model":
        error.update(code="model_not_found", message="The model None does not exist.")


def missing_file_as_before(error: dict[str, Any]) -> None:
    if error["param"] == "file_id":
        error.update(code="missing_input_file", param="input_file_id")


def refusal_reworded(param_prefix: str, **changes: Any) -> Mutation:
    def mutate(method, path, query, status, body):
        error = body.get("error") if isinstance(body, dict) else None
        if status >= 400 and error and str(error["param"]).startswith(param_prefix):
            return status, {"error": {**error, **changes}}
        return None

    return mutate


def not_found_names_batch_id(method, path, query, status, body):
    if status == 404 and path.startswith("/v1/batches/"):
        return status, {"error": {**body["error"], "param": "batch_id"}}
    return None


def files_never_expire(method, path, query, status, body):
    if method == "POST" and path == "/v1/files" and status == 200:
        return status, {**body, "expires_at": None}
    return None


def any_file_format(method, path, query, status, body):
    if uploads(method, path, status) and ".jsonl" in str(body.get("error")):
        return status, {"error": {**body["error"], "message": "Bad file."}}
    return None


def refuses_a_name_without_extension(method, path, query, status, body):
    if uploads(method, path, status) and body.get("filename") == "upload":
        message = "Invalid file format for Batch API. Must be .jsonl"
        error = {"message": message, "type": "invalid_request_error"}
        return 400, {"error": {**error, "param": None, "code": None}}
    return None


def accepts_any_encoding(method, path, query, status, body):
    if uploads(method, path, status) and "utf-8" in str(body.get("error")):
        return 200, {"id": "file-x", "object": "file", "purpose": "batch"}
    return None


def encoding_refused_as_detail(method, path, query, status, body):
    if uploads(method, path, status) and "utf-8" in str(body.get("error")):
        return 400, {"detail": body["error"]["message"]}
    return None


def refuses_malformed_lines_at_upload(method, path, query, status, body):
    if (
        method == "POST"
        and path == "/v1/files"
        and b"{this is not json" in b"".join(REQUEST)
    ):
        error = {"message": "Line 2 is not JSON.", "type": "invalid_request_error"}
        return 400, {"error": {**error, "param": "file", "code": None}}
    return None


def files_list_without_cursors(method, path, query, status, body):
    if method == "GET" and path == "/v1/files" and status == 200:
        return status, {"object": "list", "data": body["data"], "has_more": False}
    return None


def without_snapshot() -> dict[str, frozenset[str]]:
    from batchfsm.emulator import DEFAULT_MODELS

    chat = DEFAULT_MODELS[CHAT] - {"gpt-4o-mini-2024-07-18"}
    return {**DEFAULT_MODELS, CHAT: chat}


CHAT = "/v1/chat/completions"


#: One broken server per check, breaking that check's promise; the checks that
#: must fail (their required part broken) and those that must only warn (only
#: the exact observed part broken) in a run that is not strict.
BROKEN: list[tuple[str, Mutation, dict[str, Any], set[str], set[str]]] = [
    ("create drops metadata", create_drops_metadata, {},
     {"create.echo"}, set()),
    # The retrieves answer the right expiry: a stamp that changed.
    ("create answers expires_at a second late", create_expires_in_a_day_and_a_second,
     {}, {"create.expires_at", "schema.batch", "trace.legal"}, set()),
    ("cancel answers without cancelling_at", cancel_answer_without_cancelling_at, {},
     {"cancel.accepted", "schema.batch", "trace.legal"}, set()),
    ("a second cancel is refused", second_cancel_refused(), {},
     set(), {"cancel.retry"}),
    ("valid batches fail", unchanged, {"models": {}},
     {"happy.terminal", "models.snapshot"},
     {"validation.required_fields", "files.no_extension"}),
    ("output file missing lines", output_missing_lines, {},
     {"happy.files"}, set()),
    ("a cancel never finishes", each_batch(never_finishes_a_cancel), {},
     {"cancel.finishes"}, set()),
    ("500 on cancel of a completed batch", server_error_on_refused_cancel, {},
     {"cancel.terminal"}, set()),
    ("400 on cancel of a completed batch", bad_request_on_refused_cancel, {},
     set(), {"cancel.terminal"}),
    ("errors without line numbers", each_batch(forgets_the_line_of_an_error), {},
     {"validation.failed"}, {"validation.required_fields"}),
    ("pages repeat an item", repeating_pages, {},
     {"list.pagination"}, set()),
    ("wrong error body", wrong_error_body, {},
     {"errors.not_found", "errors.batch_id_wording"}, set()),
    ("422 for a bad create", unprocessable_bad_create, {},
     {"errors.bad_create"}, {"errors.endpoint_wording", "errors.metadata_wording"}),
    ("jumps validating to completed", each_batch(jump_to_completed), {},
     {"schema.batch", "trace.legal"}, set()),
    ("rewinds a stamp", each_batch(rewind_a_stamp), {},
     {"trace.legal"}, set()),
    ("decreases counts", each_batch(decreasing_counts()), {},
     {"trace.legal"}, set()),
    ("create answers usage null", create_without_usage, {},
     set(), {"create.zero_usage"}),
    ("dated snapshots unknown", unchanged, {"models": without_snapshot()},
     {"models.snapshot"}, set()),
    ("a missing model is model_not_found",
     rewrite_errors(model_missing_as_model_not_found), {},
     set(), {"validation.required_fields"}),
    ("a missing file is missing_input_file", rewrite_errors(missing_file_as_before),
     {}, set(), {"validation.missing_file"}),
    ("a missing file refused at create", missing_file_refused_at_create, {},
     set(), {"validation.missing_file"}),
    ("bad endpoint reworded", refusal_reworded("endpoint", message="Bad."), {},
     set(), {"errors.endpoint_wording"}),
    ("bad metadata coded invalid_value",
     refusal_reworded("metadata", code="invalid_value"), {},
     set(), {"errors.metadata_wording"}),
    ("404 names batch_id", not_found_names_batch_id, {},
     set(), {"errors.batch_id_wording"}),
    ("no x-request-id", unchanged, {"strip_headers": (b"x-request-id",)},
     set(), {"headers.request_id"}),
    ("batch files never expire", files_never_expire, {},
     {"files.expiry"}, set()),
    ("another wording for a .txt batch file", any_file_format, {},
     set(), {"files.jsonl_only"}),
    ("a .txt batch file accepted", txt_accepted, {},
     {"files.jsonl_only"}, set()),
    ("files list without first_id/last_id/has_more", files_list_without_cursors, {},
     {"files.list"}, set()),
    ("a batch upload named upload refused", refuses_a_name_without_extension, {},
     set(), {"files.no_extension"}),
    ("malformed lines refused at upload", refuses_malformed_lines_at_upload, {},
     set(), {"validation.failed"}),
    ("a UTF-16 batch file accepted", accepts_any_encoding, {},
     set(), {"files.utf8"}),
    ("a UTF-16 batch file refused without the error body",
     encoding_refused_as_detail, {}, {"files.utf8"}, set()),
]  # fmt: skip


#: The checks that need a second key, of another project: skipped without.
NEEDS_OTHER_KEY = PROJECTS_BROKEN | {"webhooks.own_project"}


def test_the_emulator_passes_every_check():
    from batchfsm.emulator import WebhookEndpoint
    from batchfsm.emulator._receiver import WebhookReceiver

    from .test_webhooks import SECRET

    with WebhookReceiver(SECRET) as receiver:
        hooks = [WebhookEndpoint(receiver.url, SECRET)]
        http, wait = emulator_client(webhooks=hooks)
        with http:
            report = run(http, wait=wait, webhooks=receiver)
    # Without a second key the projects checks skip (tests/test_projects.py
    # runs them with one, against the emulator and broken servers), and so
    # does the check of project events (tests/test_webhooks.py runs it).
    assert [(r.id, r.outcome) for r in report.results] == [
        (c, "skip" if c in NEEDS_OTHER_KEY else "pass") for c in CHECKS
    ]
    assert report.passed


def test_every_check_has_a_broken_server():
    # The projects checks' broken servers are in tests/test_projects.py, the
    # webhook checks' in tests/test_webhooks.py.
    elsewhere = NEEDS_OTHER_KEY | {"webhooks.signed"}
    assert {c for *_, f, w in BROKEN for c in f | w} | elsewhere == set(CHECKS)
    observed = {i for i, c in CHECKS.items() if c.level == "observed"}
    # and validation.failed, whose upload's acceptance is observed (fact 13)
    expected = (observed - elsewhere) | {"validation.failed"}
    assert {c for *_, w in BROKEN for c in w} == expected


@pytest.mark.parametrize(
    ("mutation", "options", "failing", "warning"),
    [pytest.param(m, o, f, w, id=name) for name, m, o, f, w in BROKEN],
)
def test_a_broken_server_fails_exactly_the_broken_checks(
    mutation, options, failing, warning
):
    http, wait = broken(mutation, **options)
    with http:
        report = run(http, wait=wait)
    judged = [r for r in report.results if r.outcome in ("fail", "warn")]
    outcomes = {r.id: r.outcome for r in judged}
    assert outcomes == dict.fromkeys(failing, "fail") | dict.fromkeys(warning, "warn")
    levels = {r.id: r.level for r in judged}
    assert levels == dict.fromkeys(failing, "required") | dict.fromkeys(
        warning, "observed"
    )
    assert all(r.evidence for r in report.results if r.outcome != "pass")
    assert report.passed == (not failing)


def test_strict_fails_a_run_that_only_warned():
    http, wait = broken(bad_request_on_refused_cancel)
    with http:
        report = run(http, wait=wait, strict=True)
    result = next(r for r in report.results if r.id == "cancel.terminal")
    assert (result.outcome, result.level) == ("fail", "observed")
    assert result.evidence.startswith(
        "cancel of a completed batch: expected status=409, code=None, param=None, "
        "message=\"Cannot cancel a batch with status 'completed'.\"; got request "
        "POST /v1/batches/"
    )
    assert result.evidence.endswith(
        "/cancel, status 400, body: "
        '{"error": {"message": "Not now.", "type": "invalid_request_error", '
        '"param": null, "code": null}}'
    )
    assert not report.passed


def test_a_5xx_fails_the_check_and_the_run_naming_the_call():
    http, wait = broken(server_error_on_refused_cancel)
    with http:
        report = run(http, wait=wait)
    result = next(r for r in report.results if r.id == "cancel.terminal")
    assert (result.outcome, result.level) == ("fail", "required")
    assert re.fullmatch(
        r"the server answered 5xx: POST /v1/batches/batch_\w+/cancel -> 500\n"
        r"cancel of a completed batch: expected a refusal \(4xx\), got .*",
        result.evidence,
    )
    [call] = report.server_errors
    assert re.fullmatch(
        r"POST /v1/batches/batch_\w+/cancel -> 500 \(during cancel.terminal\)", call
    )
    assert not report.passed
    assert report.to_dict()["server_errors"] == [call]


def calls_of(only: set[str]) -> int:
    """How many requests a run of ``only`` (and what it needs) makes."""
    http, wait = emulator_client()
    made: list[str] = []
    http.event_hooks["request"].append(lambda r: made.append(r.url.path))
    with http:
        run(http, wait=wait, only=only)
    return len(made)


def server_error_at(number: int) -> Mutation:
    """Answer 500 to the request ``number`` (from 1), and only to it."""
    seen = itertools.count(1)

    def mutate(method, path, query, status, body):
        return (500, "Internal Server Error") if next(seen) == number else None

    return mutate


#: The checks that make no request of their own: they judge the answers other
#: checks were given (create.echo's, and every Batch object recorded).
JUDGE_ONLY = {"create.zero_usage", "create.expires_at", "schema.batch", "trace.legal"}


@pytest.mark.parametrize(
    "check_id", sorted(set(CHECKS) - NEEDS_OTHER_KEY - {"webhooks.signed"})
)
def test_a_5xx_where_a_check_should_not_get_one_fails_it_required(check_id):
    # (the projects checks need a second key: tests/test_projects.py has theirs)
    declared = CHECKS[check_id]
    before = calls_of(with_needs(declared.needs)) if declared.needs else 0
    if check_id in JUDGE_ONLY:
        assert calls_of({check_id}) == before
        return
    http, wait = broken(server_error_at(before + 1))
    with http:
        report = run(http, wait=wait, only={check_id})
    result = next(r for r in report.results if r.id == check_id)
    assert (result.outcome, result.level) == ("fail", "required"), result
    assert result.evidence.startswith("the server answered 5xx: ")
    [call] = report.server_errors
    assert call.endswith(f"-> 500 (during {check_id})")
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
    with pytest.raises(SystemExit) as info:
        main(["conform", "--only", "nope"])
    assert info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
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


@pytest.mark.parametrize(("bound", "status"), [("proj_a", 0), ("*", 1)])
def test_conform_judges_project_events_at_a_real_serve(serve, capsys, bound, status):
    # serve delivers to conform's receiver the events of proj_a only (passes),
    # or of every project (fails): observable from outside with a second key.
    from .test_webhooks import SECRET

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = serve(
        "--speed",
        "2000",
        "--api-key",
        "sk-a=proj_a",
        "--api-key",
        "sk-b=proj_b",
        "--webhook-secret",
        SECRET,
        "--webhook-url",
        f"{bound}=http://127.0.0.1:{port}/webhooks",
    )
    assert (
        main(
            [
                "conform",
                "--base-url",
                base,
                "--api-key",
                "sk-a",
                "--other-api-key",
                "sk-b",
                "--webhook-secret",
                SECRET,
                "--webhook-listen",
                f"127.0.0.1:{port}",
                "--time-scale",
                "0.005",
                "--only",
                "webhooks.own_project",
                "--json",
            ]
        )
        == status
    )
    results = {r["id"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert results["webhooks.signed"]["outcome"] == "pass"
    own = results["webhooks.own_project"]
    assert own["outcome"] == ("pass" if status == 0 else "fail"), own
    if status:
        assert "a batch of the other key's project, reached" in own["evidence"]


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
        report = run(http, wait=wait, only={"cancel.terminal"}, strict=True)
    assert {r.id: r.outcome for r in report.results}["cancel.terminal"] == "fail"


def test_only_runs_what_the_selected_checks_need():
    http, wait = emulator_client()
    requests: list[str] = []
    http.event_hooks["request"].append(lambda r: requests.append(r.url.path))
    with http:
        run(http, wait=wait, only={"errors.not_found"})
    assert requests == ["/v1/batches/batch_conformance_does_not_exist"]


def refusing(status: int) -> Mutation:
    def mutate(method, path, query, old_status, body):
        error = {"message": "no", "type": "x", "param": None, "code": None}
        return status, {"error": error}

    return mutate


@pytest.mark.parametrize(
    ("status", "summary"),
    [
        (401, "every request was answered 401: is the API key right?"),
        (404, "every request was answered 404: is --base-url the server's root"),
        (503, "every request was answered 503: the server is failing"),
    ],
)
def test_a_server_refusing_everything_is_said_so_and_judges_nothing(status, summary):
    http, wait = broken(refusing(status))
    with http:
        report = run(http, wait=wait)
    assert report.refused is not None and report.refused.startswith(summary)
    outcomes = {r.id: r.outcome for r in report.results}
    assert outcomes["schema.batch"] == outcomes["trace.legal"] == "skip"
    assert "pass" not in outcomes.values() or status == 404
    assert not report.passed


def test_nothing_recorded_is_a_skip_never_a_pass():
    http, wait = emulator_client()
    with http:
        report = run(http, wait=wait, only={"schema.batch", "trace.legal"})
    for result in report.results[-2:]:
        assert (result.outcome, result.evidence) == (
            "skip",
            "no Batch object was answered, so there is nothing to judge",
        )
    assert not report.passed


def test_a_check_whose_need_failed_is_skipped_with_the_reason():
    http, wait = broken(create_drops_metadata)
    with http:
        report = run(http, wait=wait, only={"happy.files"})
    results = {r.id: r for r in report.results}
    assert results["happy.terminal"].evidence == ("needs create.echo, which ended fail")
    assert results["happy.files"].evidence == "needs happy.terminal, which ended skip"
    assert results["list.pagination"].evidence == "not selected"


def test_checks_are_declared_once_with_valid_needs():
    from batchfsm.conformance import check

    ids = list(CHECKS)
    assert ids[-2:] == ["schema.batch", "trace.legal"]  # they judge the others
    for position, declared in enumerate(CHECKS.values()):
        assert all(ids.index(n) < position for n in declared.needs)
        assert declared.level in ("required", "observed")
    with pytest.raises(ValueError, match=r"'create\.echo' is declared twice"):
        check("create.echo")(lambda s: None)
    with pytest.raises(ValueError, match="needs nope, not declared before it"):
        check("new.one", needs=["nope"])(lambda s: None)
    with pytest.raises(ValueError, match="level 'maybe'"):
        check("new.one", level="maybe")(lambda s: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no docstring"):
        check("new.one")(lambda s: None)
    assert "new.one" not in CHECKS


def test_no_check_is_longer_than_a_screen():
    import inspect

    for declared in CHECKS.values():
        lines, _ = inspect.getsourcelines(declared.body)
        assert len(lines) <= 40, declared.id


def test_refusals_of_several_kinds_are_counted_in_one_line():
    answers = iter(range(10_000))

    def mutate(method, path, query, status, body):
        code = (401, 503)[next(answers) % 2]
        return code, {
            "error": {"message": "no", "type": "x", "param": None, "code": None}
        }

    http, wait = broken(mutate)
    with http:
        report = run(http, wait=wait)
    assert report.refused is not None
    assert re.fullmatch(
        r"every request was refused \(401 x\d+, 503 x\d+\)", report.refused
    )


NOT_THE_SHAPE = 'the body is not {"error": {"message", "type", "param", "code"}}'


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("Not Found", "the body is not JSON"),  # shown by its type, size, excerpt
        ({"error": "no"}, NOT_THE_SHAPE),
        (
            {"error": {"message": 1, "type": "x", "param": None, "code": None}},
            "error.message is not a string",
        ),
    ],
)
def test_an_error_body_is_judged_key_by_key(body, problem):
    def mutate(method, path, query, status, old):
        return (404, body) if status == 404 else None

    http, wait = broken(mutate)
    with http:
        report = run(http, wait=wait, only={"errors.not_found"})
    result = report.results[list(CHECKS).index("errors.not_found")]
    assert result.outcome == "fail"
    assert result.evidence.startswith(
        f"retrieve of an unknown batch: {problem}: request GET /v1/batches/"
        "batch_conformance_does_not_exist, status 404, body"
    )


def test_the_fidelity_checks_cite_a_source_that_matches_their_level():
    from batchfsm.conformance._checks import _fidelity

    mine = [c for c in CHECKS.values() if c.body.__module__ == _fidelity.__name__]
    assert len(mine) == 13
    for declared in mine:
        kind = "documented" if declared.level == "required" else "observed"
        assert f"({kind}: " in declared.description, declared


def test_every_batch_starts_before_the_run_first_waits():
    """Checks that wait start their batches first: the run waits for the
    slowest batch, not for each in turn."""
    http, advance = emulator_client()
    events: list[str] = []
    http.event_hooks["request"].append(
        lambda r: events.append(f"{r.method} {r.url.path}")
    )

    def wait(seconds: float) -> None:
        events.append("wait")
        advance(seconds)

    with http:
        report = run(http, wait=wait)
    assert report.passed
    first_wait = events.index("wait")
    created = [i for i, e in enumerate(events) if e == "POST /v1/batches"]
    assert len(created) > 8 and max(created) < first_wait
    # Only the first batch polled waits; the rest ended meanwhile.
    polled = {e for e in events[first_wait:] if e.startswith("GET /v1/batches/")}
    assert events.count("wait") == 7 and len(polled) == 7


def test_the_report_keeps_the_declaration_order_whatever_ended_first():
    http, wait = emulator_client()
    told: list[str] = []
    with http:
        report = run(http, wait=wait, progress=lambda r: told.append(r.id))
    assert told == [r.id for r in report.results] == list(CHECKS)


def test_a_wrong_expiry_at_create_is_one_fault_and_the_happy_path_goes_on():
    http, wait = broken(create_expires_in_a_day_and_a_second)
    with http:
        report = run(http, wait=wait, only={"happy.files", "create.expires_at"})
    results = {r.id: r for r in report.results}
    assert {
        i: results[i].outcome for i in with_needs(["happy.files"])
    } == dict.fromkeys(["create.echo", "happy.terminal", "happy.files"], "pass")
    assert results["create.expires_at"].outcome == "fail"
    assert re.fullmatch(
        r"create answered created_at=(\d+), expires_at=(\d+), "
        r"expected expires_at = created_at \+ 86400",
        results["create.expires_at"].evidence,
    )


@pytest.mark.parametrize(
    ("body", "kind"), [(HTML_404, "text/html"), (JSON_404, "application/json")]
)
def test_a_server_that_is_not_a_batch_api_stops_the_run_at_once(body, kind):
    with site(body, kind) as (base, seen), httpx2.Client(base_url=base) as http:
        report = run(http, wait=lambda seconds: None)
    assert len(seen) == NOT_AN_API_AFTER  # then no more requests
    assert report.not_judged == (
        "the server is not a Batch API: its first 3 answers were not the API's "
        f"JSON ({'; '.join([f'POST /v1/files -> 404 ({kind})'] * 3)}): is "
        "--base-url the server's root (with or without /v1)?"
    )
    assert {r.outcome for r in report.results} == {"skip"}
    assert {r.evidence for r in report.results} == {
        "not judged: the server is not a Batch API"
    }
    assert not report.passed and not report.judged
    assert report.server_errors == () and report.refused is None
    assert report.to_dict()["not_judged"] == report.not_judged


def test_one_stray_page_first_does_not_make_a_batch_api_unjudged():
    http, wait = broken(server_error_at(1))
    with http:
        report = run(http, wait=wait, only={"happy.files"})
    assert report.not_judged is None
    assert report.judged


def checks_the_input_file_first() -> Mutation:
    """Refuse a create naming a file not uploaded, before reading its metadata."""
    uploaded: set[str] = set()

    def mutate(method, path, query, status, body):
        if method == "POST" and path == "/v1/files" and status == 200:
            uploaded.add(body["id"])
        if method == "POST" and path == "/v1/batches":
            file_id = json.loads(b"".join(REQUEST)).get("input_file_id")
            if file_id not in uploaded:
                error = {"message": f"No such file: {file_id}", "type": "x"}
                return 400, {"error": {**error, "param": "input_file_id", "code": None}}
        return None

    return mutate


def test_metadata_wording_is_not_blamed_on_a_server_that_reads_the_file_first():
    http, wait = broken(checks_the_input_file_first())
    with http:
        report = run(http, wait=wait, only={"errors.metadata_wording"}, strict=True)
    result = next(r for r in report.results if r.id == "errors.metadata_wording")
    assert (result.outcome, result.evidence) == ("pass", "")
