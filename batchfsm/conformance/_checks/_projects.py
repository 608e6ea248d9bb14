"""Checks that another project's key sees none of this key's objects.

Run when the session has a client of a second API key, of another project
(``batchfsm conform --other-api-key KEY``), and skipped otherwise. The live
API scopes files and batches to the project of the API key (documented: a
project's resources are its own); that another project's id answers word for
word as an unknown id does is what projects are for, and is judged at the
``observed`` level.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from .._registry import check
from .._session import Session, SkippedError, expect, show

if TYPE_CHECKING:
    import httpx2

__all__: list[str] = []


def _other(s: Session) -> httpx2.Client:
    if s.other_http is None:
        raise SkippedError(
            "needs a second API key, of another project (--other-api-key)"
        )
    return s.other_http


def _paths(batch_id: str, file_id: str) -> list[tuple[str, str, str]]:
    """(method, path, the id it names) of every call naming one object."""
    return [
        ("GET", f"/v1/batches/{batch_id}", batch_id),
        ("POST", f"/v1/batches/{batch_id}/cancel", batch_id),
        ("GET", f"/v1/files/{file_id}", file_id),
        ("GET", f"/v1/files/{file_id}/content", file_id),
        ("DELETE", f"/v1/files/{file_id}", file_id),
    ]


def _listed(http: httpx2.Client, path: str) -> list[Any]:
    answer = http.get(path)
    expect(answer.status_code == 200, show(answer))
    data = answer.json().get("data")
    return [item.get("id") for item in data if isinstance(item, dict)]


@check("projects.invisible")
def invisible(s: Session) -> tuple[str, str]:
    """Another project's key gets 404 for this key's batch and file, lists neither (documented: API keys and projects)."""  # noqa: E501
    other = _other(s)
    file_id = s.input_file(3)
    batch_id = s.create(file_id)["id"]
    for method, path, _ in _paths(batch_id, file_id):
        answer = other.request(method, path)
        expect(answer.status_code == 404, f"the other key: {show(answer)}")
    listed = _listed(other, "/v1/batches?limit=100") + _listed(other, "/v1/files")
    expect(
        batch_id not in listed and file_id not in listed,
        f"the other key lists {[i for i in (batch_id, file_id) if i in listed]}",
    )
    mine = s.batch(s.call("GET", f"/v1/batches/{batch_id}"), "retrieve")
    expect(
        mine.get("status") not in ("cancelling", "cancelled"),
        f"the other key's cancel moved the batch: {s.dump(mine)}",
    )
    still = s.call("GET", f"/v1/files/{file_id}")
    expect(still.status_code == 200, f"the other key's delete took it: {show(still)}")
    return batch_id, file_id


def _unknown_like(object_id: str) -> str:
    """An id of no object, of the shape of ``object_id`` (prefix, length)."""
    cut = object_id.index("-" if object_id.startswith("file") else "_") + 1
    digits = len(object_id) - cut
    return object_id[:cut] + secrets.token_hex(digits)[:digits]


@check("projects.as_unknown", needs=["projects.invisible"], level="observed")
def as_unknown(s: Session) -> None:
    """Another project's id answers word for word as an unknown id does (observed: issue #24, the live API)."""  # noqa: E501
    other = _other(s)
    batch_id, file_id = s.result_of("projects.invisible")
    for method, path, named in _paths(batch_id, file_id):
        unknown = _unknown_like(named)
        got = other.request(method, path)
        want = other.request(method, path.replace(named, unknown))
        expect(
            (got.status_code, got.text.replace(named, "ID"))
            == (want.status_code, want.text.replace(unknown, "ID")),
            f"{show(got)} but for an unknown id: {show(want)}",
        )
