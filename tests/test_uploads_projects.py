"""Pending uploads are their project's: another project's id answers as an unknown one.

Two keys in two projects, on each store a completed upload's file goes to
(memory, SQLite, a real PostgreSQL). Whatever state the owner's upload is in
(pending, with parts, cancelled, completed, expired), the other key's add part,
complete and cancel answer exactly as they answer for an unknown id of the
same shape (status, body and headers but the request's own), and change
nothing: the owner's upload carries on.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from batchfsm.emulator import (
    Emulator,
    EmulatorTransport,
    MemoryBatchStore,
    SQLiteStore,
    SQLStore,
    VirtualClock,
    create_app,
    open_store,
)
from batchfsm.emulator._uploads import uploads_of

LINE = (
    b'{"custom_id": "r1", "method": "POST", "url": "/v1/embeddings", "body": '
    b'{"model": "text-embedding-3-small", "input": "hi"}}\n'
)
A = {"Authorization": "Bearer sk-a"}
B = {"Authorization": "Bearer sk-b"}
_PER_REQUEST = {"x-request-id", "date"}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def emu(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Emulator]:
    if request.param == "memory":
        yield Emulator(clock=VirtualClock(), store=MemoryBatchStore())
        return
    store: SQLStore
    if request.param == "sqlite":
        store = SQLiteStore(tmp_path / "db.sqlite")
    else:
        store = open_store(request.getfixturevalue("postgres_url"))
    try:
        yield Emulator(clock=VirtualClock(), store=store, ids=store.ids())
    finally:
        store.close()


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx2.Client]:
    app = create_app(emu, api_keys={"sk-a": "team_a", "sk-b": "team_b"})
    transport = EmulatorTransport(app)
    with httpx2.Client(transport=transport, base_url="http://e") as client:
        yield client
    transport.close()
    uploads_of(emu).clear()  # the parts still held: their temporary files


def _create(http: httpx2.Client, size: int) -> str:
    body = {"bytes": size, "filename": "in.jsonl", "mime_type": "text/jsonl",
            "purpose": "batch"}  # fmt: skip
    answer = http.post("/v1/uploads", json=body, headers=A)
    assert answer.status_code == 200, answer.text
    upload_id: str = answer.json()["id"]
    return upload_id


def _part(http: httpx2.Client, upload_id: str, headers: dict[str, str]) -> Any:
    return http.post(
        f"/v1/uploads/{upload_id}/parts", files={"data": ("p", LINE)}, headers=headers
    )


def _calls(part_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Each call another key tries: path under the upload, request options."""
    return [
        ("parts", {"files": {"data": ("p", LINE)}}),
        ("complete", {"json": {"part_ids": [part_id]}}),
        ("cancel", {}),
    ]


def _as_unknown(http: httpx2.Client, upload_id: str, part_id: str) -> None:
    """B's every call on A's ``upload_id`` answers as one on an unknown id."""
    unknown = "upload_" + secrets.token_hex(12)
    assert len(unknown) == len(upload_id)
    for call, options in _calls(part_id):
        got = http.post(f"/v1/uploads/{upload_id}/{call}", headers=B, **options)
        want = http.post(f"/v1/uploads/{unknown}/{call}", headers=B, **options)
        assert got.status_code == want.status_code == 404, (call, got.text)
        assert got.text.replace(upload_id, "ID") == want.text.replace(unknown, "ID")
        assert (
            want.json()["error"]["message"] == f"No upload found with id '{unknown}'."
        )
        heads = [
            {k: v for k, v in r.headers.items() if k not in _PER_REQUEST}
            for r in (got, want)
        ]
        assert heads[0] == heads[1]


def test_another_projects_pending_upload_is_unknown_and_untouched(emu, http):
    upload_id = _create(http, len(LINE))
    part = _part(http, upload_id, A).json()
    _as_unknown(http, upload_id, part["id"])
    # Nothing B tried took hold: no part added, not completed, not cancelled.
    done = http.post(
        f"/v1/uploads/{upload_id}/complete", json={"part_ids": [part["id"]]}, headers=A
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"
    file_id = done.json()["file"]["id"]
    assert http.get(f"/v1/files/{file_id}", headers=A).status_code == 200
    assert http.get(f"/v1/files/{file_id}", headers=B).status_code == 404
    assert emu.retrieve_file(file_id, project="team_a").bytes == len(LINE)


@pytest.mark.parametrize("state", ["cancelled", "completed", "expired"])
def test_another_projects_upload_is_unknown_whatever_its_state(emu, http, state):
    # The owner is told the state (400); the other project only "unknown" (404).
    upload_id = _create(http, len(LINE))
    part = _part(http, upload_id, A).json()
    if state == "cancelled":
        http.post(f"/v1/uploads/{upload_id}/cancel", headers=A)
    elif state == "completed":
        http.post(f"/v1/uploads/{upload_id}/complete",
                  json={"part_ids": [part["id"]]}, headers=A)  # fmt: skip
    else:
        emu.clock.advance(3600)
    own = http.post(f"/v1/uploads/{upload_id}/cancel", headers=A)
    assert own.status_code == 400 and f"is {state}" in own.json()["error"]["message"]
    _as_unknown(http, upload_id, part["id"])


def test_a_server_without_projects_keeps_uploads_as_before(emu):
    # One key (the default project): its uploads work as they always did.
    transport = EmulatorTransport(create_app(emu, api_keys={"sk-a": "proj_default"}))
    with httpx2.Client(transport=transport, base_url="http://e") as http:
        upload_id = _create(http, len(LINE))
        part = _part(http, upload_id, A).json()
        done = http.post(f"/v1/uploads/{upload_id}/complete",
                         json={"part_ids": [part["id"]]}, headers=A)  # fmt: skip
        assert done.json()["status"] == "completed"
        assert emu.retrieve_file(done.json()["file"]["id"]).bytes == len(LINE)
    transport.close()
    uploads_of(emu).clear()
