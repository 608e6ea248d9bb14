"""Judge a Batch API server from the outside, check by check.

Each check has a stable id, a one-line description, an outcome (pass, fail or
skip) and evidence: the request and the offending snapshot or field. Every
Batch object the server answers is recorded; at the end each must parse and
pass :func:`batchfsm.check` (``schema.batch``) and all of them together must
pass :func:`batchfsm.check_trace` (``trace.legal``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import httpx2

from .._convert import from_dict
from .._errors import SchemaError
from .._invariants import COMPLETION_WINDOWS, check, check_trace
from .._model import Batch

__all__ = ["CHECKS", "Outcome", "Report", "Result", "run"]

#: Every check: id -> what it demands. Ids are stable; select with ``only``.
CHECKS: dict[str, str] = {
    "create.echo": "create answers validating, echoes its fields, expires in 24h",
    "happy.terminal": "a valid batch is polled to completed",
    "happy.files": "result files download in the API's line format, a line a request",
    "validation.failed": "a bad input file ends failed, with line-numbered errors",
    "cancel.accepted": "cancel of a running batch answers cancelling and cancelling_at",
    "cancel.retry": "a second cancel while cancelling is accepted, changes nothing",
    "cancel.finishes": "a cancelled batch ends cancelled, stamps present and ordered",
    "cancel.terminal": "cancel of a terminal batch is a 4xx with the API's error body",
    "list.pagination": "limit/after paging visits every batch once, newest first",
    "errors.not_found": "an unknown batch id is a 404 with the API's error body",
    "errors.bad_create": "a bad create parameter is a 400 with the API's error body",
    "schema.batch": "every Batch object answered parses and passes check()",
    "trace.legal": "all Batch objects answered, in order, pass check_trace()",
}

Outcome = str  # "pass" | "fail" | "skip"


@attrs.frozen
class Result:
    """The outcome of one check, with what shows it."""

    id: str
    outcome: Outcome
    evidence: str = ""

    @property
    def description(self) -> str:
        """What the check demands."""
        return CHECKS[self.id]


@attrs.frozen
class Report:
    """Every check's result, and the notes gathered on the way."""

    results: tuple[Result, ...]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        """No check failed."""
        return all(r.outcome != "fail" for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "passed": self.passed,
            "results": [
                {"id": r.id, "description": r.description, "outcome": r.outcome,
                 "evidence": r.evidence}
                for r in self.results
            ],
            "notes": list(self.notes),
        }  # fmt: skip


class _FailedError(Exception):
    """A check failed; the message is the evidence."""


class _SkippedError(Exception):
    """A check could not run; the message says why."""


_ERROR_KEYS = {"message", "type", "param", "code"}
_TERMINAL = {"completed", "failed", "expired", "cancelled"}


def _show(response: httpx2.Response) -> str:
    text = response.text
    return (
        f"{response.request.method} {response.request.url.path} -> "
        f"{response.status_code} {text[:300]}{'…' if len(text) > 300 else ''}"
    )


def _error_body(response: httpx2.Response) -> str | None:
    """Why the answer is not the API's error body, or None if it is."""
    try:
        body = response.json()
    except ValueError:
        return "the body is not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not set(error) >= _ERROR_KEYS:
        return 'the body is not {"error": {"message", "type", "param", "code"}}'
    if not isinstance(error["message"], str):
        return "error.message is not a string"
    return None


class _Session:
    """One conformance run: the HTTP client, the clock, and what was recorded."""

    def __init__(
        self,
        http: httpx2.Client,
        wait: Callable[[float], None],
        *,
        endpoint: str,
        model: str,
        timeout: float,
    ) -> None:
        self.http = http
        self.wait = wait
        self.endpoint = endpoint
        self.model = model
        self.timeout = timeout
        self.snapshots: list[tuple[str, Any]] = []  # (request, document)
        self.results: dict[str, Result] = {}
        self.notes: list[str] = []

    # -- recording ---------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        response = self.http.request(method, path, **kwargs)
        if path.startswith("/v1/batches") and response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            where = f"{method} {path}"
            if isinstance(data, dict) and data.get("object") == "list":
                pages = data.get("data")
                for item in pages if isinstance(pages, list) else []:
                    self.snapshots.append((where, item))
            elif data is not None:
                self.snapshots.append((where, data))
        return response

    def batch(self, response: httpx2.Response, step: str) -> dict[str, Any]:
        if response.status_code != 200:
            raise _FailedError(f"{step}: {_show(response)}")
        try:
            data = response.json()
        except ValueError:
            raise _FailedError(
                f"{step}: the answer is not JSON: {_show(response)}"
            ) from None
        if not isinstance(data, dict):
            raise _FailedError(
                f"{step}: the answer is not a JSON object: {_show(response)}"
            )
        return data

    # -- building blocks ------------------------------------------------------------

    def input_file(
        self, requests: int, *, bad_lines: dict[int, str] | None = None
    ) -> str:
        from ..emulator import make_input_file

        content = make_input_file(
            requests,
            endpoint=self.endpoint,
            model=self.model,
            custom_id="conform-{}",
            bad_lines=bad_lines,
        )
        answer = self.http.post(
            "/v1/files",
            files={"file": ("conformance.jsonl", content, "application/jsonl")},
            data={"purpose": "batch"},
        )
        if answer.status_code != 200 or "id" not in answer.json():
            raise _SkippedError(f"could not upload an input file: {_show(answer)}")
        return str(answer.json()["id"])  # fmt: skip

    def create(self, file_id: str, **extra: Any) -> dict[str, Any]:
        body = {
            "input_file_id": file_id,
            "endpoint": self.endpoint,
            "completion_window": "24h",
            **extra,
        }
        return self.batch(self.call("POST", "/v1/batches", json=body), "create")

    def poll(self, batch_id: str, until: set[str] = _TERMINAL) -> dict[str, Any]:
        waited, step = 0.0, 1.0
        while True:
            data = self.batch(self.call("GET", f"/v1/batches/{batch_id}"), "retrieve")
            if data.get("status") in until:
                return data
            if waited >= self.timeout:
                raise _FailedError(
                    f"batch {batch_id} still {data.get('status')!r} after "
                    f"{self.timeout:g} s of polling"
                )
            self.wait(step)
            waited += step
            step = min(step * 2, 60.0)

    def run(self, check_id: str, body: Callable[[], None]) -> None:
        try:
            body()
        except _FailedError as exc:
            self.results[check_id] = Result(check_id, "fail", str(exc))
        except _SkippedError as exc:
            self.results[check_id] = Result(check_id, "skip", str(exc))
        except httpx2.HTTPError as exc:
            self.results[check_id] = Result(check_id, "fail", f"HTTP error: {exc!r}")
        except Exception as exc:  # noqa: BLE001 - a broken answer fails this check only
            self.results[check_id] = Result(
                check_id, "fail", f"the server's answers broke the check: {exc!r}"
            )
        else:
            self.results.setdefault(check_id, Result(check_id, "pass"))


def _expect(condition: bool, evidence: str) -> None:
    if not condition:
        raise _FailedError(evidence)


def _scenarios(s: _Session) -> Iterator[tuple[str, Callable[[], None]]]:
    """Each check id with its body, in the order they run."""
    state: dict[str, Any] = {}

    def create_echo() -> None:
        file_id = s.input_file(3)
        state["file_id"] = file_id
        batch = s.create(file_id, metadata={"conformance": "batchfsm"})
        state["happy"] = batch
        _expect(
            batch.get("status") == "validating" or batch.get("status") == "in_progress",
            f"created as {batch.get('status')!r}: {json.dumps(batch)[:300]}",
        )
        for key, value in (
            ("input_file_id", file_id),
            ("endpoint", s.endpoint),
            ("completion_window", "24h"),
            ("metadata", {"conformance": "batchfsm"}),
        ):
            _expect(
                batch.get(key) == value,
                f"create answered {key}={batch.get(key)!r}, sent {value!r}",
            )
        created, expires = batch.get("created_at"), batch.get("expires_at")
        _expect(
            isinstance(created, int) and expires == created + COMPLETION_WINDOWS["24h"],
            f"expires_at={expires!r} for created_at={created!r}",
        )

    def happy_terminal() -> None:
        if "happy" not in state:
            raise _SkippedError("create.echo did not create a batch")
        done = s.poll(state["happy"]["id"])
        state["done"] = done
        _expect(done.get("status") == "completed", f"ended {done.get('status')!r}")
        # Once more: a terminal batch must not change (trace.legal judges it).
        s.call("GET", f"/v1/batches/{done['id']}")

    def happy_files() -> None:
        done = state.get("done")
        if not done or done.get("status") != "completed":
            raise _SkippedError("no completed batch to read")
        seen: list[str] = []
        for key in ("output_file_id", "error_file_id"):
            file_id = done.get(key)
            if file_id is None:
                continue
            answer = s.http.get(f"/v1/files/{file_id}/content")
            _expect(answer.status_code == 200, f"{key}: {_show(answer)}")
            for number, line in enumerate(answer.text.splitlines(), start=1):
                where = f"{key} line {number}"
                try:
                    item = json.loads(line)
                except ValueError:
                    raise _FailedError(f"{where} is not JSON: {line[:200]}") from None
                _expect(
                    isinstance(item, dict)
                    and {"id", "custom_id", "response", "error"} <= set(item),
                    f"{where} lacks id/custom_id/response/error: {line[:200]}",
                )
                response = item["response"]
                _expect(
                    response is None
                    or (
                        isinstance(response, dict)
                        and {"status_code", "request_id", "body"} <= set(response)
                    ),
                    f"{where}: response lacks status_code, request_id or body: "
                    f"{line[:200]}",
                )
                _expect(
                    item["error"] is None
                    or (
                        isinstance(item["error"], dict)
                        and {"code", "message"} <= set(item["error"])
                    ),
                    f"{where}: error lacks code/message: {line[:200]}",
                )
                seen.append(item["custom_id"])
        expected = [f"conform-{i}" for i in range(3)]
        _expect(
            sorted(seen) == expected,
            f"result lines for {sorted(seen)}, expected one each for {expected}",
        )

    def validation_failed() -> None:
        file_id = s.input_file(3, bad_lines={2: "{this is not json"})
        failed = s.poll(s.create(file_id)["id"])
        _expect(
            failed.get("status") == "failed",
            f"a file with a bad line 2 ended {failed.get('status')!r}",
        )
        data = (failed.get("errors") or {}).get("data") or []
        _expect(
            any(isinstance(e, dict) and e.get("line") == 2 for e in data),
            f"no error names line 2: {json.dumps(failed.get('errors'))[:300]}",
        )

    def cancel_accepted() -> None:
        batch = s.create(s.input_file(50))
        state["cancel_id"] = batch["id"]
        answer = s.call("POST", f"/v1/batches/{batch['id']}/cancel")
        cancelling = s.batch(answer, "cancel")
        _expect(
            cancelling.get("status") in ("cancelling", "cancelled"),
            f"cancel answered {cancelling.get('status')!r}",
        )
        _expect(
            cancelling.get("cancelling_at") is not None,
            f"cancel answered no cancelling_at: {json.dumps(cancelling)[:300]}",
        )
        state["cancelling"] = cancelling

    def cancel_retry() -> None:
        first = state.get("cancelling")
        if not first:
            raise _SkippedError("cancel.accepted did not cancel a batch")
        if first.get("status") != "cancelling":
            raise _SkippedError("the batch was cancelled at once; nothing to retry")
        answer = s.call("POST", f"/v1/batches/{first['id']}/cancel")
        if 400 <= answer.status_code < 500:
            now = s.batch(s.call("GET", f"/v1/batches/{first['id']}"), "retrieve")
            if now.get("status") == "cancelled":  # it finished before the retry
                raise _SkippedError("the batch was cancelled before the retry")
        again = s.batch(answer, "second cancel")
        _expect(
            again.get("status") in ("cancelling", "cancelled"),
            f"second cancel answered {again.get('status')!r}",
        )
        _expect(
            again.get("cancelling_at") == first.get("cancelling_at"),
            f"cancelling_at changed from {first.get('cancelling_at')} "
            f"to {again.get('cancelling_at')}",
        )

    def cancel_finishes() -> None:
        if "cancel_id" not in state:
            raise _SkippedError("cancel.accepted did not cancel a batch")
        done = s.poll(state["cancel_id"])
        _expect(
            done.get("status") == "cancelled",
            f"a cancelled batch ended {done.get('status')!r}",
        )
        stamps = [done.get(k) for k in ("created_at", "cancelling_at", "cancelled_at")]
        numbers = [v for v in stamps if isinstance(v, int)]
        _expect(
            len(numbers) == len(stamps) and numbers == sorted(numbers),
            f"created_at, cancelling_at, cancelled_at = {stamps}",
        )

    def cancel_terminal() -> None:
        done = state.get("done")
        if not done or done.get("status") not in _TERMINAL:
            raise _SkippedError("no terminal batch to cancel")
        answer = s.call("POST", f"/v1/batches/{done['id']}/cancel")
        _expect(
            400 <= answer.status_code < 500 and answer.status_code != 404,
            f"cancel of a {done.get('status')} batch (the live API answers 409): "
            f"{_show(answer)}",
        )
        problem = _error_body(answer)
        _expect(problem is None, f"{problem}: {_show(answer)}")

    def list_pagination() -> None:
        file_id = state.get("file_id") or s.input_file(1)
        mine = [s.create(file_id)["id"] for _ in range(5)]
        seen: list[Any] = []
        after: str | None = None
        for _ in range(1000):
            params: dict[str, Any] = {"limit": 2}
            if after:
                params["after"] = after
            page = s.batch(s.call("GET", "/v1/batches", params=params), "list")
            data = page.get("data")
            if not isinstance(data, list) or len(data) > 2:
                raise _FailedError(f"a page of limit 2 held {data!r:.200}")
            ids = [b.get("id") if isinstance(b, dict) else None for b in data]
            _expect(page.get("object") == "list", f"object={page.get('object')!r}")
            if ids:
                _expect(
                    page.get("first_id") == ids[0] and page.get("last_id") == ids[-1],
                    f"first_id/last_id {page.get('first_id')}/{page.get('last_id')} "
                    f"for page {ids}",
                )
            seen += ids
            if not page.get("has_more") or all(m in seen for m in mine):
                break
            after = ids[-1] if ids else None
            _expect(after is not None, "has_more with an empty page")
        repeated = sorted({i for i in seen if seen.count(i) > 1})
        _expect(not repeated, f"pages repeated {repeated}")
        _expect(
            all(m in seen for m in mine),
            f"pages missed {[m for m in mine if m not in seen]}",
        )
        order = [seen.index(m) for m in mine]
        _expect(
            order == sorted(order, reverse=True),
            f"not newest first: {mine} seen at {order}",
        )

    def not_found() -> None:
        answer = s.call("GET", "/v1/batches/batch_conformance_does_not_exist")
        _expect(answer.status_code == 404, _show(answer))
        problem = _error_body(answer)
        _expect(problem is None, f"{problem}: {_show(answer)}")

    def bad_create() -> None:
        answer = s.call(
            "POST",
            "/v1/batches",
            json={
                "input_file_id": state.get("file_id", "file-x"),
                "endpoint": "/v1/not-an-endpoint",
                "completion_window": "24h",
            },
        )
        _expect(answer.status_code == 400, _show(answer))
        problem = _error_body(answer)
        _expect(problem is None, f"{problem}: {_show(answer)}")

    yield "create.echo", create_echo
    yield "cancel.accepted", cancel_accepted
    yield "cancel.retry", cancel_retry
    yield "happy.terminal", happy_terminal
    yield "happy.files", happy_files
    yield "cancel.finishes", cancel_finishes
    yield "cancel.terminal", cancel_terminal
    yield "validation.failed", validation_failed
    yield "list.pagination", list_pagination
    yield "errors.not_found", not_found
    yield "errors.bad_create", bad_create


def _judge_recording(s: _Session) -> None:
    problems: list[str] = []
    parsed: list[Batch] = []
    known = {a.name for a in attrs.fields(Batch)}
    unknown: set[str] = set()
    for where, document in s.snapshots:
        try:
            batch = from_dict(document)
        except SchemaError as exc:
            problems.append(f"{where}: {exc}")
            continue
        unknown |= set(document) - known if isinstance(document, dict) else set()
        parsed.append(batch)
        problems += [
            f"{where}: batch {v.batch_id}: {v.rule} @ {v.path}: {v.message}"
            for v in check(batch)
        ]
    if unknown:
        s.notes.append(
            "Batch objects carry keys batchfsm does not know: "
            + ", ".join(sorted(unknown))
        )
    s.results["schema.batch"] = Result(
        "schema.batch", "fail" if problems else "pass", "\n".join(problems[:20])
    )
    violations = check_trace(parsed)
    s.results["trace.legal"] = Result(
        "trace.legal",
        "fail" if violations else "pass",
        "\n".join(
            f"snapshot #{v.index} of batch {v.batch_id}: {v.rule} @ {v.path}: "
            f"{v.message}"
            for v in violations[:20]
        ),
    )


#: What each check needs run before it (the batches it works on).
_NEEDS: dict[str, tuple[str, ...]] = {
    "happy.terminal": ("create.echo",),
    "happy.files": ("happy.terminal",),
    "cancel.retry": ("cancel.accepted",),
    "cancel.finishes": ("cancel.accepted",),
    "cancel.terminal": ("happy.terminal",),
}


def _with_needs(only: set[str]) -> set[str]:
    wanted, todo = set(only), list(only)
    while todo:
        for need in _NEEDS.get(todo.pop(), ()):
            if need not in wanted:
                wanted.add(need)
                todo.append(need)
    return wanted


def run(
    http: httpx2.Client,
    *,
    wait: Callable[[float], None] = time.sleep,
    only: set[str] | None = None,
    endpoint: str = "/v1/chat/completions",
    model: str = "gpt-4o-mini",
    timeout: float = 600.0,
    progress: Callable[[Result], None] | None = None,
) -> Report:
    """Run the checks against the server ``http`` talks to.

    Args:
        http: a client whose ``base_url`` is the server's root (``/v1/...`` is
            appended) and which carries any auth header.
        wait: how to let ``seconds`` of server time pass (sleep, or move a
            virtual clock).
        only: run only these check ids, and what they need first (the others
            are reported as skipped).
        endpoint: the batch endpoint to use.
        model: the model the requests name.
        timeout: server seconds to poll a batch before giving up.
        progress: called with each result as it is known.
    """
    unknown = (only or set()) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown check ids: {', '.join(sorted(unknown))}; see CHECKS")
    session = _Session(http, wait, endpoint=endpoint, model=model, timeout=timeout)
    wanted = _with_needs(only) if only else set(CHECKS)
    for check_id, body in _scenarios(session):
        if check_id not in wanted:
            continue
        session.run(check_id, body)
        if progress:
            progress(session.results[check_id])
    _judge_recording(session)
    if progress:
        progress(session.results["schema.batch"])
        progress(session.results["trace.legal"])
    results = tuple(
        session.results[c]
        if not only or c in only
        else Result(c, "skip", "not selected")
        for c in CHECKS
    )
    return Report(results, tuple(session.notes))
