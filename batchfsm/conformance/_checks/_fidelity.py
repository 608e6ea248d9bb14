"""Checks that the server answers as the live Batch and Files API does.

Each check's first docstring line names its source (a documented or an
observed fact of the live API):
``required`` checks follow documented behaviour (the API reference, the
``openai`` client's types), ``observed`` checks follow answers of the live API
recorded in other projects' tests (exact wording, headers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..._endpoints import CATALOGUE, ENDPOINT_MODELS
from .._registry import check
from .._session import (
    FailedError,
    Session,
    SkippedError,
    expect,
    labelled,
    require,
    show,
)

__all__: list[str] = []

_THIRTY_DAYS = 2_592_000
_MISSING_FILE = "file-conformance-does-not-exist"
_NOT_UTF8 = "Invalid file for Batch API. Must be utf-8 encoded"
#: Dated snapshots to try per endpoint, the first the server's catalogue holds.
_SNAPSHOTS = ("gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125", "gpt-4o-2024-08-06")


def _upload(
    s: Session, content: bytes, *, filename: str = "conformance.jsonl", **form: str
) -> Any:
    return s.call(
        "POST",
        "/v1/files",
        files={"file": (filename, content, "application/jsonl")},
        data={"purpose": "batch", **form},
    )


def _file(s: Session, answer: Any, step: str) -> dict[str, Any]:
    try:
        data = answer.json()
    except ValueError:
        data = None
    if answer.status_code != 200 or not isinstance(data, dict) or "id" not in data:
        raise SkippedError(f"{step}: could not upload a file: {show(answer)}")
    return data


def _content(s: Session, requests: int, **kw: Any) -> bytes:
    from ...emulator import make_input_file

    return make_input_file(
        requests,
        endpoint=s.endpoint,
        model=kw.pop("model", s.model),
        custom_id="conform-{}",
        **kw,
    )


def _errors_of(s: Session, batch_id: str) -> list[Any]:
    failed = s.poll(batch_id)
    expect(
        failed.get("status") == "failed",
        f"batch {batch_id} ended {failed.get('status')!r}, expected failed",
    )
    data = (failed.get("errors") or {}).get("data")
    if not isinstance(data, list) or not data:
        raise FailedError(f"no errors.data: {s.dump(failed)}")
    return [e for e in data if isinstance(e, dict)]


@check("create.zero_usage", needs=["create.echo"], level="observed")
def create_zero_usage(s: Session) -> None:
    """Create answers request_counts 0/0/0 and usage all zeros (observed: openai-batch-manager and tidyllm fixtures)."""  # noqa: E501
    batch = s.result_of("create.echo")
    counts = batch.get("request_counts")
    expect(
        counts == {"total": 0, "completed": 0, "failed": 0},
        f"create answered request_counts={counts!r}",
    )
    usage = batch.get("usage")
    zero = {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    expect(usage == zero, f"create answered usage={usage!r}, expected all zeros")


@check("models.snapshot")
def models_snapshot(s: Session) -> Iterator[None]:
    """A dated snapshot model runs (documented: the openai client's model types)."""
    catalogue = ENDPOINT_MODELS.get(s.endpoint, frozenset())
    model = next((m for m in _SNAPSHOTS if m in catalogue), None)
    if model is None:
        raise SkippedError(f"no dated snapshot to try on {s.endpoint}")
    upload = _file(s, _upload(s, _content(s, 1, model=model)), "models.snapshot")
    batch = s.create(upload["id"])
    yield
    done = s.poll(batch["id"])
    expect(
        done.get("status") == "completed",
        f"a batch of {model} ended {done.get('status')!r}: {s.dump(done)}",
    )


@check("validation.required_fields", level="observed")
def validation_required_fields(s: Session) -> Iterator[None]:
    """A line without body.model or its main input fails with invalid_request, one entry each (observed: OGX tests)."""  # noqa: E501
    known = CATALOGUE.get(s.endpoint)
    if known is None:
        raise SkippedError(f"no known main input for {s.endpoint}")
    field = known.input_field
    rows = _content(s, 3).decode().splitlines()
    no_model, no_input = json.loads(rows[1]), json.loads(rows[2])
    del no_model["body"]["model"], no_input["body"][field]
    rows[1:3] = [json.dumps(no_model), json.dumps(no_input)]
    upload = _file(s, _upload(s, "\n".join(rows).encode()), "required fields")
    batch = s.create(upload["id"])
    yield
    found = [
        (e.get("code"), e.get("line"), e.get("param"), e.get("message"))
        for e in _errors_of(s, batch["id"])
    ]
    expected = [
        ("invalid_request", 2, "body.model", "Model parameter is required."),
        ("invalid_request", 3, f"body.{field}",
         f"{field.capitalize()} parameter is required."),
    ]  # fmt: skip
    expect(found == expected, f"errors [{_entries(found)}], expected "
                              f"[{_entries(expected)}]")  # fmt: skip


def _entries(errors: list[tuple[Any, ...]]) -> str:
    """Error entries (code, line, param, message), each part labelled."""
    return "; ".join(
        labelled(code=code, line=line, param=param, message=message)
        for code, line, param, message in errors
    )


@check("validation.missing_file", level="observed")
def validation_missing_file(s: Session) -> Iterator[None]:
    """A batch of an unknown input file is created, then fails naming file_id (observed: OGX tests; stdapi.ai #240)."""  # noqa: E501
    answer = s.call(
        "POST",
        "/v1/batches",
        json={"input_file_id": _MISSING_FILE, "endpoint": s.endpoint,
              "completion_window": "24h"},
    )  # fmt: skip
    if answer.status_code != 200:
        s.refusal(answer, "create of a missing input file")
        expect(False, "create refused a missing input file (the live API creates "
                      f"the batch, then fails it): {show(answer)}")  # fmt: skip
    batch = s.batch(answer, "create of a missing input file")
    yield
    [error, *more] = _errors_of(s, batch["id"])
    message = error.get("message")
    expect(
        (error.get("code"), error.get("line"), error.get("param"))
        == ("invalid_request", None, "file_id")
        and not more
        and isinstance(message, str)
        and message.startswith(f"Cannot find file {_MISSING_FILE}, or organization ")
        and message.endswith(" does not have access to it."),
        f"errors {[error, *more]}",
    )


@check("errors.endpoint_wording", level="observed")
def errors_endpoint_wording(s: Session) -> None:
    """A bad endpoint is 400 invalid_value "Invalid value: 'X'. Supported values are: …" (observed: openai-batch-manager fixtures)."""  # noqa: E501
    answer = s.call(
        "POST",
        "/v1/batches",
        json={"input_file_id": _MISSING_FILE, "endpoint": "/v1/invalid",
              "completion_window": "24h"},
    )  # fmt: skip
    error = s.refusal(answer, "create with endpoint /v1/invalid")
    message = error.get("message")
    expect(
        (answer.status_code, error.get("code"), error.get("param"))
        == (400, "invalid_value", "endpoint")
        and isinstance(message, str)
        and message.startswith(
            "Invalid value: '/v1/invalid'. Supported values are: "
            "'/v1/chat/completions', "
        ),
        show(answer),
    )


@check("errors.metadata_wording", level="observed")
def errors_metadata_wording(s: Session) -> None:
    """Wrongly typed metadata is 400 invalid_type "Invalid type for 'metadata.tags': …" (observed: OGX tests; LiteLLM #28425)."""  # noqa: E501
    for metadata, param, message in (
        ({"tags": ["a"]}, "metadata.tags",
         "Invalid type for 'metadata.tags': expected a string, but got an array "
         "instead."),
        ("tags", "metadata",
         "Invalid type for 'metadata': expected an object, but got a string "
         "instead."),
    ):  # fmt: skip
        # A real input file: a server that looks at the file first must not
        # be blamed for metadata it never read.
        answer = s.call(
            "POST",
            "/v1/batches",
            json={"input_file_id": s.input_file(1), "endpoint": s.endpoint,
                  "completion_window": "24h", "metadata": metadata},
        )  # fmt: skip
        s.refused_as(
            answer, f"create with metadata {metadata!r}", 400, "invalid_type", param,
            message,
        )  # fmt: skip


@check("errors.batch_id_wording", level="observed")
def errors_batch_id_wording(s: Session) -> None:
    """Unknown batch: 404, param null; an id not starting 'batch': 400 invalid_value (observed: openai-batch-manager fixtures)."""  # noqa: E501
    unknown = "batch_conformance_does_not_exist"
    s.refused_as(
        s.call("GET", f"/v1/batches/{unknown}"),
        "retrieve of an unknown batch",
        404,
        None,
        None,
        f"No batch found with id '{unknown}'.",
    )
    s.refused_as(
        s.call("GET", "/v1/batches/conformance"),
        "retrieve of a malformed id",
        400,
        "invalid_value",
        "batch_id",
        "Invalid 'batch_id': 'conformance'. Expected an ID that begins with 'batch'.",
    )


@check("headers.request_id", level="observed")
def headers_request_id(s: Session) -> None:
    """Every answer, errors included, carries an x-request-id that starts with 'req' (observed: openai-python's _request_id)."""  # noqa: E501
    for method, path in (
        ("GET", "/v1/batches?limit=1"),
        ("GET", "/v1/files?limit=1"),
        ("GET", "/v1/batches/batch_conformance_does_not_exist"),
    ):
        answer = s.call(method, path)
        if path.endswith("limit=1") and answer.status_code != 200:
            raise SkippedError(f"the server refused a list: {show(answer)}")
        request_id = answer.headers.get("x-request-id", "")
        expect(
            request_id.startswith("req_"),
            f"{method} {path} -> {answer.status_code} with x-request-id {request_id!r}",
        )


@check("files.expiry")
def files_expiry(s: Session) -> None:
    """A batch file expires 30 days after creation, or as expires_after says (documented: FileCreateParams)."""  # noqa: E501
    content = _content(s, 1)
    default = _file(s, _upload(s, content), "files.expiry")
    created = default.get("created_at")
    expect(
        isinstance(created, int)
        and default.get("expires_at") == created + _THIRTY_DAYS,
        f"a batch file created at {created!r} expires at "
        f"{default.get('expires_at')!r}, expected 30 days later",
    )
    two_hours = {"expires_after[anchor]": "created_at",
                   "expires_after[seconds]": "7200"}  # fmt: skip
    asked = _file(s, _upload(s, content, **two_hours), "files.expiry")
    created = asked.get("created_at")
    expect(
        isinstance(created, int) and asked.get("expires_at") == created + 7_200,
        f"a file asked to expire after 7200 s: created_at={created!r}, "
        f"expires_at={asked.get('expires_at')!r}",
    )


@check("files.jsonl_only", level="observed")
def files_jsonl_only(s: Session) -> None:
    """A batch upload not named .jsonl is 400 "Invalid file format for Batch API. Must be .jsonl" (observed: LiteLLM #37527)."""  # noqa: E501
    answer = _upload(s, _content(s, 1), filename="conformance.txt")
    s.refused_as(
        answer, "a batch upload named conformance.txt", 400, None, None,
        "Invalid file format for Batch API. Must be .jsonl",
    )  # fmt: skip


@check("files.no_extension", level="observed")
def files_no_extension(s: Session) -> Iterator[None]:
    """A batch upload named without an extension ('upload', as the openai client names raw bytes) is accepted and runs (observed: openai-python's multipart naming; LiteLLM #37527)."""  # noqa: E501
    answer = _upload(s, _content(s, 1), filename="upload")
    if answer.status_code != 200:
        s.refusal(answer, "a batch upload named upload")
        expect(False, "a batch upload named 'upload' (how the openai client names "
                      f"raw bytes) was refused: {show(answer)}")  # fmt: skip
    file_id = s.batch(answer, "a batch upload named upload").get("id")
    require(isinstance(file_id, str), f"the upload answered no id: {show(answer)}")
    batch = s.create(str(file_id))
    yield
    done = s.poll(batch["id"])
    expect(
        done.get("status") == "completed",
        f"a batch of a file named 'upload' ended {done.get('status')!r}: "
        f"{s.dump(done)}",
    )


@check("files.utf8", level="observed")
def files_utf8(s: Session) -> None:
    """A batch file in UTF-16 or Latin-1 is 400 "Invalid file for Batch API. Must be utf-8 encoded" at upload (observed: PSOpenAI #19)."""  # noqa: E501
    text = _content(s, 1).decode().replace("conform-", "conformé-")
    for encoding in ("utf-16", "latin-1"):
        answer = _upload(s, text.encode(encoding))
        step = f"a batch upload in {encoding}"
        expect(
            answer.status_code != 200,
            f"{step} was accepted (the live API refuses it at upload): {show(answer)}",
        )
        error = s.refusal(answer, step)
        expect(
            (answer.status_code, error.get("message")) == (400, _NOT_UTF8),
            f"{step}: expected {labelled(status=400, message=_NOT_UTF8)}; "
            f"got {show(answer)}",
        )


@check("files.list")
def files_list(s: Session) -> None:
    """GET /v1/files pages with limit, order and purpose: first_id, last_id, has_more (documented: Files API reference)."""  # noqa: E501
    content = _content(s, 1)
    ids = [_file(s, _upload(s, content), "files.list")["id"] for _ in range(2)]
    pages: dict[str, dict[str, Any]] = {}
    for order in ("desc", "asc"):
        answer = s.call(
            "GET", "/v1/files", params={"limit": 1, "order": order, "purpose": "batch"}
        )
        page = answer.json() if answer.status_code == 200 else None
        if not isinstance(page, dict):
            raise FailedError(f"list files: {show(answer)}")
        data = page.get("data")
        expect(
            page.get("object") == "list" and isinstance(data, list) and len(data) == 1,
            f"a page of limit 1: {show(answer)}",
        )
        first = data[0] if isinstance(data, list) else {}
        expect(
            page.get("first_id") == page.get("last_id") == first.get("id")
            and page.get("has_more") is True,
            f"first_id/last_id/has_more of a page of limit 1: {show(answer)}",
        )
        expect(
            first.get("purpose") == "batch",
            f"purpose=batch listed a {first.get('purpose')!r} file",
        )
        pages[order] = first
    expect(
        pages["desc"].get("id") == ids[-1],
        f"newest first: expected {ids[-1]}, got {pages['desc'].get('id')}",
    )
    expect(
        pages["asc"].get("id") != pages["desc"].get("id"),
        "order=asc and order=desc start with the same file",
    )
