"""Checks of listing and of the API's error answers."""

from __future__ import annotations

from typing import Any

from .._registry import check
from .._session import FailedError, Session, expect, show

__all__: list[str] = []


def _pages(s: Session, mine: list[str]) -> list[Any]:
    """Every id on the pages of limit 2, until all of ``mine`` were seen."""
    seen: list[Any] = []
    after: str | None = None
    for _ in range(1000):
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = s.batch(s.call("GET", "/v1/batches", params=params), "list")
        data = page.get("data")
        if not isinstance(data, list) or len(data) > 2:
            raise FailedError(f"a page of limit 2 held {data!r:.200}")
        ids = [b.get("id") if isinstance(b, dict) else None for b in data]
        expect(page.get("object") == "list", f"object={page.get('object')!r}")
        expect(
            not ids or (page.get("first_id"), page.get("last_id")) == (ids[0], ids[-1]),
            f"first_id/last_id {page.get('first_id')}/{page.get('last_id')} "
            f"for page {ids}",
        )
        seen += ids
        if not page.get("has_more") or all(m in seen for m in mine):
            break
        after = ids[-1] if ids else None
        expect(after is not None, "has_more with an empty page")
    return seen


@check("list.pagination")
def list_pagination(s: Session) -> None:
    """limit/after paging visits every batch once, newest first."""
    file_id = s.input_file(3)
    mine = [s.create(file_id)["id"] for _ in range(5)]
    seen = _pages(s, mine)
    repeated = sorted({i for i in seen if seen.count(i) > 1})
    expect(not repeated, f"pages repeated {repeated}")
    expect(
        all(m in seen for m in mine),
        f"pages missed {[m for m in mine if m not in seen]}",
    )
    order = [seen.index(m) for m in mine]
    expect(
        order == sorted(order, reverse=True),
        f"not newest first: {mine} seen at {order}",
    )


@check("errors.not_found")
def not_found(s: Session) -> None:
    """An unknown batch id is a 404 with the API's error body."""
    answer = s.call("GET", "/v1/batches/batch_conformance_does_not_exist")
    s.refusal(answer, "retrieve of an unknown batch")
    expect(answer.status_code == 404, show(answer))


@check("errors.bad_create")
def bad_create(s: Session) -> None:
    """A bad create parameter is a 400 with the API's error body."""
    body = {
        "input_file_id": s.input_file(3),
        "endpoint": "/v1/not-an-endpoint",
        "completion_window": "24h",
    }
    answer = s.call("POST", "/v1/batches", json=body)
    s.refusal(answer, "create with a bad endpoint")
    expect(answer.status_code == 400, show(answer))
