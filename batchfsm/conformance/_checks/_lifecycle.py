"""Checks that drive batches through their lifecycle."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from typing import Any

from ..._invariants import COMPLETION_WINDOWS
from .._registry import check
from .._session import (
    TERMINAL,
    FailedError,
    Session,
    SkippedError,
    expect,
    labelled,
    require,
    show,
)

__all__: list[str] = []

_METADATA = {"conformance": "batchfsm"}
_RESULT_KEYS = {"id", "custom_id", "response", "error"}
_RESPONSE_KEYS = {"status_code", "request_id", "body"}
_CANCEL_STAMPS = ("created_at", "cancelling_at", "cancelled_at")


@check("create.echo")
def create_echo(s: Session) -> dict[str, Any]:
    """Create answers validating and echoes its fields."""
    file_id = s.input_file(3)
    batch = s.create(file_id, metadata=_METADATA)
    expect(
        batch.get("status") in ("validating", "in_progress"),
        f"created as {batch.get('status')!r}: {s.dump(batch)}",
    )
    for key, value in (
        ("input_file_id", file_id),
        ("endpoint", s.endpoint),
        ("completion_window", "24h"),
        ("metadata", _METADATA),
    ):
        expect(
            batch.get(key) == value,
            f"create answered {key}={batch.get(key)!r}, sent {value!r}",
        )
    return batch


@check("create.expires_at", needs=["create.echo"])
def create_expires_at(s: Session) -> None:
    """Create answers expires_at 24h after created_at."""
    # Its own check: a wrong expiry is one fault, and the batch still runs
    # (happy.* go on with it).
    batch = s.result_of("create.echo")
    created, expires = batch.get("created_at"), batch.get("expires_at")
    expect(
        isinstance(created, int) and expires == created + COMPLETION_WINDOWS["24h"],
        f"create answered {labelled(created_at=created, expires_at=expires)}, "
        "expected expires_at = created_at + 86400",
    )


@check("cancel.accepted")
def cancel_accepted(s: Session) -> dict[str, Any]:
    """Cancel of a running batch answers cancelling and cancelling_at."""
    batch = s.create(s.input_file(50))
    answer = s.call("POST", f"/v1/batches/{batch['id']}/cancel")
    cancelling = s.batch(answer, "cancel")
    expect(
        cancelling.get("status") in ("cancelling", "cancelled"),
        f"cancel answered {cancelling.get('status')!r}",
    )
    expect(
        cancelling.get("cancelling_at") is not None,
        f"cancel answered no cancelling_at: {s.dump(cancelling)}",
    )
    return cancelling


@check("cancel.retry", needs=["cancel.accepted"], level="observed")
def cancel_retry(s: Session) -> None:
    """A second cancel while cancelling is accepted, changes nothing."""
    first = s.result_of("cancel.accepted")
    if first.get("status") != "cancelling":
        raise SkippedError("the batch was cancelled at once; nothing to retry")
    answer = s.call("POST", f"/v1/batches/{first['id']}/cancel")
    if answer.status_code != 200:
        s.refusal(answer, "second cancel")
        now = s.batch(s.call("GET", f"/v1/batches/{first['id']}"), "retrieve")
        if now.get("status") == "cancelled":  # it finished before the retry
            raise SkippedError("the batch was cancelled before the retry")
        expect(False, f"second cancel refused (the live API answers 200, the "
                      f"batch unchanged): {show(answer)}")  # fmt: skip
    again = s.batch(answer, "second cancel")
    require(
        again.get("status") in ("cancelling", "cancelled"),
        f"second cancel answered {again.get('status')!r}",
    )
    require(
        again.get("cancelling_at") == first.get("cancelling_at"),
        f"cancelling_at changed from {first.get('cancelling_at')} "
        f"to {again.get('cancelling_at')}",
    )


@check("happy.terminal", needs=["create.echo"])
def happy_terminal(s: Session) -> Generator[None, None, dict[str, Any]]:
    """A valid batch is polled to completed."""
    yield  # create.echo started it
    done = s.poll(s.result_of("create.echo")["id"])
    errors = done.get("errors")
    if isinstance(errors, dict):  # the list object: its entries say it all
        errors = errors.get("data")
    why = f"; its errors: {s.dump(errors)}" if errors else ""
    expect(done.get("status") == "completed", f"ended {done.get('status')!r}{why}")
    # Once more: a terminal batch must not change (trace.legal judges it).
    s.call("GET", f"/v1/batches/{done['id']}")
    return done


def _result_line(where: str, line: str) -> str:
    """The custom_id of one result line, or fail saying what is wrong with it."""
    try:
        item = json.loads(line)
    except ValueError:
        raise FailedError(f"{where} is not JSON: {line[:200]}") from None
    expect(
        isinstance(item, dict) and set(item) >= _RESULT_KEYS,
        f"{where} lacks id/custom_id/response/error: {line[:200]}",
    )
    response, error = item["response"], item["error"]
    expect(
        response is None
        or (isinstance(response, dict) and set(response) >= _RESPONSE_KEYS),
        f"{where}: response lacks status_code, request_id or body: {line[:200]}",
    )
    expect(
        error is None
        or (isinstance(error, dict) and {"code", "message"} <= set(error)),
        f"{where}: error lacks code/message: {line[:200]}",
    )
    return str(item["custom_id"])


@check("happy.files", needs=["happy.terminal"])
def happy_files(s: Session) -> None:
    """Result files download in the API's line format, a line a request."""
    done = s.result_of("happy.terminal")
    seen: list[str] = []
    for key in ("output_file_id", "error_file_id"):
        file_id = done.get(key)
        if file_id is None:
            continue
        answer = s.call("GET", f"/v1/files/{file_id}/content")
        expect(answer.status_code == 200, f"{key}: {show(answer)}")
        for number, line in enumerate(answer.text.splitlines(), start=1):
            seen.append(_result_line(f"{key} line {number}", line))
    expected = [f"conform-{i}" for i in range(3)]
    expect(
        sorted(seen) == expected,
        f"result lines for {sorted(seen)}, expected one each for {expected}",
    )


@check("cancel.finishes", needs=["cancel.accepted"])
def cancel_finishes(s: Session) -> Iterator[None]:
    """A cancelled batch ends cancelled, stamps present and ordered."""
    yield  # cancel.accepted cancelled it
    done = s.poll(s.result_of("cancel.accepted")["id"])
    expect(
        done.get("status") == "cancelled",
        f"a cancelled batch ended {done.get('status')!r}",
    )
    stamps = [done.get(k) for k in _CANCEL_STAMPS]
    numbers = [v for v in stamps if isinstance(v, int)]
    expect(
        len(numbers) == len(stamps) and numbers == sorted(numbers),
        labelled(**dict(zip(_CANCEL_STAMPS, stamps, strict=True))),
    )


@check("cancel.terminal", needs=["happy.terminal"], level="observed")
def cancel_terminal(s: Session) -> None:
    """Cancel of a terminal batch is a 4xx with the API's error body; exactly 409 "Cannot cancel a batch with status 'completed'." (observed: OGX tests)."""  # noqa: E501
    done = s.result_of("happy.terminal")
    status = done.get("status")
    if status not in TERMINAL:
        raise SkippedError("no terminal batch to cancel")
    answer = s.call("POST", f"/v1/batches/{done['id']}/cancel")
    step = f"cancel of a {status} batch"
    s.refusal(answer, step)
    require(answer.status_code != 404, f"{step} answered as if it were gone: "
                                       f"{show(answer)}")  # fmt: skip
    s.refused_as(
        answer, step, 409, None, None, f"Cannot cancel a batch with status '{status}'."
    )


@check("validation.failed")
def validation_failed(s: Session) -> Iterator[None]:
    """A bad input file is accepted at upload, then ends failed, with line-numbered errors."""  # noqa: E501
    file_id = s.input_file(3, bad_line="{this is not json")
    batch = s.create(file_id)
    yield
    failed = s.poll(batch["id"])
    expect(
        failed.get("status") == "failed",
        f"a file with a bad line 2 ended {failed.get('status')!r}",
    )
    errors = failed.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    expect(
        isinstance(data, list)
        and any(isinstance(e, dict) and e.get("line") == 2 for e in data),
        f"no error names line 2: {s.dump(errors)}",
    )
