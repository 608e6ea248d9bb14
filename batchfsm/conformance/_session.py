"""What a check works with: the HTTP session, its recording and its verdicts.

A check body fails with :func:`expect` (at the check's own level) or
:func:`require` (always at the required level) with the evidence, skips with
:class:`SkippedError` and the reason it could judge nothing, or returns a value
that the checks needing it read with :meth:`Session.result_of`. The building
blocks hold the required part of every check (see ``_registry``): an answer
that must be a Batch object (:meth:`Session.batch`) or a refusal
(:meth:`Session.refusal`) fails at the required level, whatever the check's
level; only the exact wording a refusal is compared with
(:meth:`Session.refused_as`) is judged at the check's level.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._model import TERMINAL_STATUSES
from ._registry import Level

if TYPE_CHECKING:  # the HTTP client is an extra; the registry needs none
    import httpx2

    from ..emulator._receiver import WebhookReceiver

__all__ = [
    "ERROR_KEYS",
    "NOT_AN_API_AFTER",
    "TERMINAL",
    "FailedError",
    "NotJudgedError",
    "Session",
    "SkippedError",
    "api_shaped",
    "brief",
    "error_body",
    "expect",
    "labelled",
    "observed",
    "require",
    "show",
]

ERROR_KEYS = frozenset({"message", "type", "param", "code"})
#: Terminal statuses as the JSON spells them.
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)


class FailedError(Exception):
    """A check failed; the message is the evidence.

    ``level`` is the level it failed at: ``None`` for the check's own level.
    """

    def __init__(self, evidence: str, level: Level | None = None) -> None:
        super().__init__(evidence)
        self.level = level


class SkippedError(Exception):
    """A check could not judge anything; the message says why."""


class NotJudgedError(SkippedError):
    """The server is not a Batch API: nothing of the run can be judged."""


#: How many answers in a row, from the first, that are not the API's JSON (an
#: object with "object", or an "error" object) tell a server that is not a
#: Batch API. Not one: a Batch API's first answer may be a stray 5xx page.
NOT_AN_API_AFTER = 3


def expect(condition: bool, evidence: str) -> None:
    """Fail the check at its own level with ``evidence`` unless ``condition`` holds."""
    if not condition:
        raise FailedError(evidence)


def require(condition: bool, evidence: str) -> None:
    """Fail the check at the required level unless ``condition`` holds."""
    if not condition:
        raise FailedError(evidence, "required")


def observed(condition: bool, evidence: str) -> None:
    """Fail the check at the observed level unless ``condition`` holds.

    For what the live API was only seen doing, inside a check whose own
    level is required.
    """
    if not condition:
        raise FailedError(evidence, "observed")


def show(response: httpx2.Response) -> str:
    """The request and the answer, in one line, each part labelled, for evidence.

    A body that is not JSON (an HTML error page) is shown by its type and
    size and its first 80 characters, whitespace folded.
    """
    request = f"request {response.request.method} {response.request.url.path}"
    text = response.text
    try:
        json.loads(text)
    except ValueError:
        folded = " ".join(text.split())
        excerpt = f"{folded[:80]}{'…' if len(folded) > 80 else ''}"
        body = f"body ({_kind(response)}, {len(response.content)} bytes): {excerpt!r}"
    else:
        body = f"body: {text[:300]}{'…' if len(text) > 300 else ''}"
    return f"{request}, status {response.status_code}, {body}"


def _kind(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "no content-type").split(";")[0]


def brief(response: httpx2.Response) -> str:
    """The request, the status and the body's type, in a few words."""
    return (
        f"{response.request.method} {response.request.url.path} -> "
        f"{response.status_code} ({_kind(response)})"
    )


def labelled(**items: Any) -> str:
    """``name=value`` pairs, for evidence that compares several parts at once.

    Example:
        >>> labelled(status=409, code=None, message="Cannot cancel.")
        "status=409, code=None, message='Cannot cancel.'"
    """
    return ", ".join(f"{name}={value!r}" for name, value in items.items())


def api_shaped(response: httpx2.Response) -> bool:
    """Whether the answer is the API's JSON: an object with "object" or "error"."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and (
        "object" in body or isinstance(body.get("error"), dict)
    )


def error_body(response: httpx2.Response) -> str | None:
    """Why the answer is not the API's error body, or None if it is."""
    try:
        body = response.json()
    except ValueError:
        return "the body is not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not set(error) >= ERROR_KEYS:
        return 'the body is not {"error": {"message", "type", "param", "code"}}'
    if not isinstance(error["message"], str):
        return "error.message is not a string"
    return None


_HINTS = {
    401: "is the API key right?",
    403: "is the API key allowed to use batches?",
    404: "is --base-url the server's root (with or without /v1)?",
}


def _awaited(
    batch_id: str, data: dict[str, Any], until: frozenset[str], waited: float
) -> str:
    """What a poll waits for, e.g. ``batch_1 to end (in_progress 12/20, 41 s)``."""
    goal = "to end" if until == TERMINAL else f"to be {' or '.join(sorted(until))}"
    counts = data.get("request_counts")
    done = ""
    if isinstance(counts, dict) and isinstance(counts.get("total"), int):
        finished = sum(
            c for k in ("completed", "failed") if isinstance(c := counts.get(k), int)
        )
        done = f" {finished}/{counts['total']}"
    status = data.get("status")
    return f"waiting for {batch_id} {goal} ({status}{done}, {waited:.0f} s)"


class Session:
    """One conformance run: the HTTP client, the clock, and what was recorded."""

    #: A client of a second API key, of another project, if the run has one.
    other_http: httpx2.Client | None = None
    #: Told (check id, what it waits for) before each wait, if set: the
    #: command line shows it while a check waits.
    waiting: Callable[[str, str], None] | None = None

    def __init__(
        self,
        http: httpx2.Client,
        wait: Callable[[float], None],
        *,
        endpoint: str,
        model: str,
        timeout: float,
        webhooks: WebhookReceiver | None = None,
    ) -> None:
        self.http = http
        #: The receiver the server delivers its webhook events to, if any.
        self.webhooks = webhooks
        self.wait = wait
        self.endpoint = endpoint
        self.model = model
        self.timeout = timeout
        #: Every Batch object answered: (request, document), in order.
        self.snapshots: list[tuple[str, Any]] = []
        #: How many answers of each status code, and failed connections (0).
        self.answers: collections.Counter[int] = collections.Counter()
        self.notes: list[str] = []
        #: The check running now, to which each call is attributed.
        self.current = ""
        #: Every answer of 5xx: (the check, "METHOD PATH -> STATUS"), in order.
        self.server_errors: list[tuple[str, str]] = []
        self._returned: dict[str, Any] = {}
        self._files: dict[tuple[int, str], str] = {}
        #: Why nothing can be judged (the server is not a Batch API), or None.
        self.not_judged: str | None = None
        #: The first answers, while none was the API's JSON (None after one was).
        self._strange: list[tuple[int, str]] | None = []

    def result_of(self, check_id: str) -> Any:
        """What the check ``check_id`` (a need of the caller, so passed) returned."""
        return self._returned[check_id]

    def keep(self, check_id: str, value: Any) -> None:
        """Remember what the check ``check_id`` returned, for the checks needing it."""
        self._returned[check_id] = value

    # -- recording ---------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        client: httpx2.Client | None = None,
        **kwargs: Any,
    ) -> httpx2.Response:
        """Send a request, counting the answer and recording any Batch objects.

        ``client``: another key's client (:attr:`other_http`) sends it instead.
        """
        import httpx2

        if self.not_judged is not None:  # no more requests to a server that is not
            raise NotJudgedError(self.not_judged)
        try:
            response = (client or self.http).request(method, path, **kwargs)
        except httpx2.TransportError:
            self.answers[0] += 1
            raise
        self.answers[response.status_code] += 1
        if self._strange is not None:
            self._judge_the_server(response)
        if response.status_code >= 500:
            self.server_errors.append(
                (self.current, f"{method} {path} -> {response.status_code}")
            )
        if path.startswith("/v1/batches") and response.status_code == 200:
            self._record(f"{method} {path}", response)
        return response

    def _judge_the_server(self, response: httpx2.Response) -> None:
        """Stop the run if its first answers show a server that is not a Batch API."""
        assert self._strange is not None
        if api_shaped(response):
            self._strange = None  # a Batch API: never asked again
            return
        self._strange.append((response.status_code, brief(response)))
        if len(self._strange) < NOT_AN_API_AFTER:
            return
        codes = {code for code, _ in self._strange}
        hint = _HINTS.get(codes.pop(), "") if len(codes) == 1 else ""
        answers = "; ".join(seen for _, seen in self._strange)
        self.not_judged = (
            f"the server is not a Batch API: its first {len(self._strange)} "
            f"answers were not the API's JSON ({answers})"
        ) + (f": {hint}" if hint else "")
        raise NotJudgedError(self.not_judged)

    def _record(self, where: str, response: httpx2.Response) -> None:
        try:
            data = response.json()
        except ValueError:
            return
        if isinstance(data, dict) and data.get("object") == "list":
            pages = data.get("data")
            for item in pages if isinstance(pages, list) else []:
                self.snapshots.append((where, item))
        else:
            self.snapshots.append((where, data))

    def refused_everything(self) -> str | None:
        """One line saying every request was refused, or None if one was not."""
        if not self.answers or any(0 < s < 400 for s in self.answers):
            return None
        if set(self.answers) == {0}:
            return "no request reached the server: every connection failed"
        codes = sorted(self.answers)
        if len(codes) == 1:
            code = codes[0]
            hint = _HINTS.get(code, "the server is failing" if code >= 500 else "")
            return f"every request was answered {code}" + (f": {hint}" if hint else "")
        counts = ", ".join(
            f"{'no connection' if c == 0 else c} x{self.answers[c]}" for c in codes
        )
        return f"every request was refused ({counts})"

    # -- building blocks ------------------------------------------------------------

    def batch(self, response: httpx2.Response, step: str) -> dict[str, Any]:
        """The Batch object answered, or fail at the required level naming ``step``."""
        require(response.status_code == 200, f"{step}: {show(response)}")
        try:
            data = response.json()
        except ValueError:
            data = None
        require(
            isinstance(data, dict),
            f"{step}: the answer is not a JSON object: {show(response)}",
        )
        return data  # type: ignore[no-any-return]

    def refusal(self, response: httpx2.Response, step: str) -> dict[str, Any]:
        """The ``error`` of a refusal: a 4xx with the API's error body (required)."""
        require(
            400 <= response.status_code < 500,
            f"{step}: expected a refusal (4xx), got {show(response)}",
        )
        problem = error_body(response)
        require(problem is None, f"{step}: {problem}: {show(response)}")
        return response.json()["error"]  # type: ignore[no-any-return]

    def refused_as(
        self,
        response: httpx2.Response,
        step: str,
        status: int,
        code: str | None,
        param: str | None,
        message: str,
    ) -> None:
        """A refusal (required) with exactly this status, code, param, message.

        The exact values are judged at the check's own level.
        """
        error = self.refusal(response, step)
        found = (response.status_code, error.get("code"), error.get("param"),
                 error.get("message"))  # fmt: skip
        wanted = labelled(status=status, code=code, param=param, message=message)
        expect(
            found == (status, code, param, message),
            f"{step}: expected {wanted}; got {show(response)}",
        )

    def input_file(self, requests: int, *, bad_line: str = "") -> str:
        """Upload (once per shape) an input file of ``requests`` lines.

        ``bad_line`` replaces line 2; such a file refused at upload fails the
        check at the observed level (the live API accepts it, fact 13).
        """
        key = (requests, bad_line)
        if key not in self._files:
            from ..emulator import make_input_file

            content = make_input_file(
                requests,
                endpoint=self.endpoint,
                model=self.model,
                custom_id="conform-{}",
                bad_lines={2: bad_line} if bad_line else None,
            )
            answer = self.call(
                "POST",
                "/v1/files",
                files={"file": ("conformance.jsonl", content, "application/jsonl")},
                data={"purpose": "batch"},
            )
            if bad_line and answer.status_code != 200:
                self.refusal(answer, "upload of a file with a malformed line 2")
                observed(False, "a file with a malformed line was refused at upload "
                         "(the live API accepts it and fails the batch, LiteLLM "
                         f"PR #37527): {show(answer)}")  # fmt: skip
            try:
                file_id = answer.json()["id"] if answer.status_code == 200 else None
            except (ValueError, KeyError, TypeError):
                file_id = None
            if not isinstance(file_id, str):
                raise SkippedError(f"could not upload an input file: {show(answer)}")
            self._files[key] = file_id
        return self._files[key]

    def create(self, file_id: str, **extra: Any) -> dict[str, Any]:
        """Create a batch of the input file ``file_id``."""
        body = {
            "input_file_id": file_id,
            "endpoint": self.endpoint,
            "completion_window": "24h",
            **extra,
        }
        return self.batch(self.call("POST", "/v1/batches", json=body), "create")

    def poll(
        self,
        batch_id: str,
        until: frozenset[str] = TERMINAL,
        *,
        client: httpx2.Client | None = None,
    ) -> dict[str, Any]:
        """Retrieve the batch, waiting ever longer, until its status is in ``until``.

        ``client``: retrieved with another key's client (:attr:`other_http`).
        """
        # A quarter second first, then half as long again each time, up to a
        # minute: a batch of seconds is seen soon after it ends (doubling
        # from one second saw a 5-second batch at 7), one of hours costs a
        # poll a minute.
        waited, step = 0.0, 0.25
        while True:
            answer = self.call("GET", f"/v1/batches/{batch_id}", client=client)
            data = self.batch(answer, "retrieve")
            if data.get("status") in until:
                return data
            require(
                waited < self.timeout,
                f"batch {batch_id} still {data.get('status')!r} after "
                f"{self.timeout:g} s of polling",
            )
            self.tell_wait(_awaited(batch_id, data, until, waited))
            self.wait(step)
            waited += step
            step = min(step * 1.5, 60.0)

    def tell_wait(self, what: str) -> None:
        """Say what the running check waits for (to :attr:`waiting`, if set)."""
        if self.waiting is not None:
            self.waiting(self.current, what)

    def dump(self, document: Any) -> str:
        """A document, shortened for evidence."""
        return json.dumps(document)[:300]
