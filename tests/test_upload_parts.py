"""A pending upload's parts wait in temporary files only while it is pending.

On each store a completed upload's file goes to (memory, SQLite, a real
PostgreSQL), on a virtual clock: the parts' files (rolled over to disk: each
part is over the 1 MiB held in memory) are closed when the upload expires, at
the next sweep (the emulator's run of due work, or any call of the Uploads
API), and when it is cancelled, even while a part is still arriving. Counted
as the process's open file descriptors under a temporary directory of the
test's own. A real ``serve`` (memory, SQLite) closes them by its own sweep,
with no call after the parts.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from batchfsm.emulator import ApiError, Emulator
from batchfsm.emulator._uploads import UPLOAD_SECONDS, uploads_of

from .test_uploads_projects import A, emu, http  # noqa: F401 - the fixtures

PART = 1024 * 1024 + 1  # past what a part holds in memory: a file on disk


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the parts' temporary files go in this test."""
    where = tmp_path / "spool"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def _open_under(where: Path) -> int:
    """How many of this process's file descriptors are files under ``where``."""
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since it was listed
            continue
        held += target.startswith(str(where))
    return held


def _upload_with_parts(client: httpx2.Client, parts: int) -> str:
    body = {"bytes": PART * (parts + 1), "filename": "a.bin",
            "mime_type": "application/octet-stream",
            "purpose": "user_data"}  # fmt: skip
    upload_id: str = client.post("/v1/uploads", json=body, headers=A).json()["id"]
    for _ in range(parts):
        answer = client.post(
            f"/v1/uploads/{upload_id}/parts",
            files={"data": ("p", b"x" * PART)},
            headers=A,
        )
        assert answer.status_code == 200, answer.text
    return upload_id


pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc"
)


def test_an_expired_uploads_part_files_are_closed_at_the_next_sweep(
    emu: Emulator,  # noqa: F811
    http: httpx2.Client,  # noqa: F811
    spool: Path,
) -> None:
    first = _upload_with_parts(http, 2)
    assert _open_under(spool) == 2
    emu.clock.advance(UPLOAD_SECONDS // 2)  # type: ignore[attr-defined]
    second = _upload_with_parts(http, 1)
    third = _upload_with_parts(http, 1)
    assert _open_under(spool) == 4
    emu.clock.advance(UPLOAD_SECONDS // 2)  # type: ignore[attr-defined]
    emu.run()  # the due work's sweep: the first expired, the others not yet
    assert _open_under(spool) == 2
    emu.clock.advance(UPLOAD_SECONDS // 2)  # type: ignore[attr-defined]
    # Any call of the Uploads API sweeps too, before it answers.
    cancel = http.post(f"/v1/uploads/{second}/cancel", headers=A)
    assert cancel.status_code == 400 and "is expired" in cancel.text
    assert _open_under(spool) == 0
    for upload_id in (first, third):
        refused = http.post(
            f"/v1/uploads/{upload_id}/parts", files={"data": ("p", b"x")}, headers=A
        )
        assert refused.status_code == 400 and "is expired" in refused.text


def test_a_cancelled_uploads_part_files_are_closed_even_while_a_part_arrives(
    emu: Emulator,  # noqa: F811
    http: httpx2.Client,  # noqa: F811
    spool: Path,
) -> None:
    upload_id = _upload_with_parts(http, 2)
    assert _open_under(spool) == 2
    cancel = http.post(f"/v1/uploads/{upload_id}/cancel", headers=A)
    assert cancel.json()["status"] == "cancelled"
    assert _open_under(spool) == 0
    # A part still arriving when its upload is cancelled: refused, not kept.
    upload_id = _upload_with_parts(http, 1)
    uploads = uploads_of(emu)

    class CancelledMidway(io.BytesIO):
        def read(self, size: Any = -1) -> bytes:
            if self.tell() == PART // 2:  # halfway through this part's bytes
                uploads.cancel(upload_id, project="team_a")
            return super().read(min(size, PART // 2))

    with pytest.raises(ApiError, match="is cancelled") as refused:
        uploads.add_part(upload_id, CancelledMidway(b"x" * PART), project="team_a")
    assert refused.value.status_code == 400
    assert _open_under(spool) == 0


def test_a_part_whose_client_goes_midway_leaves_no_file_open(
    emu: Emulator,  # noqa: F811
    http: httpx2.Client,  # noqa: F811
    spool: Path,
) -> None:
    upload_id = _upload_with_parts(http, 0)
    uploads = uploads_of(emu)

    class GoneMidway(io.BytesIO):
        def read(self, size: Any = -1) -> bytes:
            if self.tell() >= PART // 2:
                raise ConnectionResetError("the client went")
            return super().read(min(size, PART // 2))

    with pytest.raises(ConnectionResetError):
        uploads.add_part(upload_id, GoneMidway(b"x" * PART), project="team_a")
    assert _open_under(spool) == 0


def _open_in(pid: int, where: Path) -> int:
    """How many of process ``pid``'s file descriptors are files under ``where``."""
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(where))
        except OSError:  # closed since it was listed
            continue
    return held


def _until(condition: Any) -> bool:
    """Whether ``condition()`` holds within a minute (a hang guard, not a timing)."""
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("db", ["memory", "sqlite"])
def test_serve_closes_an_expired_uploads_part_files_by_itself(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No call after the parts: serve's own run of due work sweeps them, as
    # its clock (300 times real time) passes the upload's hour.
    from .test_content import _Serve

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))  # serve's temporary files go there
    args = [] if db == "memory" else ["--db", f"sqlite:///{tmp_path / 'db.sqlite'}"]
    server = _Serve(*args, "--speed", "300")
    try:
        with httpx2.Client(base_url=server.base, timeout=60) as client:
            _upload_with_parts(client, 2)
            pid = server.process.pid
            assert _open_in(pid, spool) == 2
            assert _until(lambda: _open_in(pid, spool) == 0), "still open"
            refused = client.post("/v1/uploads/x/cancel", headers=A)
            assert refused.status_code == 404  # serve answers, all is well
    finally:
        server.stop()
