"""Files in the emulator, on every store: uploads go into the store a piece at a
time, a refused or cut-off upload leaves nothing behind, expired files are
purged (their content too) and the list never passes over them again.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from batchfsm.emulator import (
    ApiError,
    Emulator,
    FileObject,
    MemoryBatchStore,
    MemoryFileStore,
    create_app,
)
from batchfsm.emulator._app import MAX_UPLOAD_BYTES
from batchfsm.emulator._content import PIECE_BYTES, Content, Piece
from batchfsm.emulator._files import MAX_BATCH_FILE_BYTES

from . import test_stores
from .test_emulator import line, poll
from .test_stores import Stores, chunk_rows
from .test_uploads import Receive, multipart, post, whole

# Every store, as the store tests have them.
store_name = test_stores.store_name
stores = test_stores.stores

MiB = 1 << 20


def emulator(stores: Stores) -> Emulator:
    return Emulator(store=stores.batches, files=stores.files)


def assert_nothing_stored(emu: Emulator, stores: Stores) -> None:
    assert emu.list_files()["data"] == []
    assert stores.files.list() == [] and stores.files.page(None, 9) == ([], False)
    assert chunk_rows(stores) in (None, 0)


# -- uploads ---------------------------------------------------------------------------


class CutOff(io.BytesIO):
    """A file whose reads fail once ``good`` of them went through (a dying disk)."""

    def __init__(self, content: bytes, good: int) -> None:
        super().__init__(content)
        self.good = good

    def read(self, size: int | None = -1, /) -> bytes:
        if self.good == 0:
            raise OSError("Input/output error")
        self.good -= 1
        return super().read(size)


def test_an_upload_whose_reading_fails_midway_leaves_nothing(stores: Stores) -> None:
    emu = emulator(stores)
    source = CutOff(b"{}\n" * MiB, good=2)  # two pieces stored, then the failure
    with pytest.raises(OSError, match="Input/output error"):
        emu.create_file(source, "in.jsonl", "batch")
    assert source.good == 0  # it did fail midway, inside the store's write
    assert_nothing_stored(emu, stores)
    made = emu.create_file(CutOff(b"{}\n" * MiB, good=9), "in.jsonl", "batch")
    assert emu.file_content(made.id) == b"{}\n" * MiB


def test_an_upload_of_unknown_size_over_its_limit_is_refused_before_the_store(
    stores: Stores,
) -> None:
    emu = emulator(stores)
    handed = itertools.count()

    def over() -> Iterator[bytes]:
        piece = b"{}\n" * (MiB // 3) + b"\n"  # one MiB, the same object each time
        for _ in range(MAX_BATCH_FILE_BYTES // MiB + 10):
            next(handed)
            yield piece

    with pytest.raises(ApiError) as refused:
        emu.create_file(over(), "in.jsonl", "batch")
    assert refused.value.status_code == 413
    assert refused.value.body["error"] == {
        "message": f"File too large: more than {MAX_BATCH_FILE_BYTES} bytes; "
        f"a batch input file may be up to {MAX_BATCH_FILE_BYTES} bytes.",
        "type": "invalid_request_error",
        "param": "file",
        "code": "file_too_large",
    }
    # Read only until it passed the limit, and none of it reached the store.
    assert next(handed) == MAX_BATCH_FILE_BYTES // MiB + 1
    assert_nothing_stored(emu, stores)
    # Of unknown size but within the limit: spooled, then stored whole.
    made = emu.create_file(iter([b"{}", b"\n"]), "in.jsonl", "batch")
    assert (made.bytes, emu.file_content(made.id)) == (3, b"{}\n")


def test_an_upload_from_a_pipe_is_read_to_its_end_and_stored() -> None:
    # A pipe cannot say its size beforehand: it is spooled within its limit.
    emu = Emulator()
    content = b'{"a": 1}\n' * 200_000
    read, write = os.pipe()

    def feed() -> None:
        with os.fdopen(write, "wb") as sink:
            sink.write(content)

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(read, "rb") as pipe:
        made = emu.create_file(pipe, "in.jsonl", "batch")
    writer.join()
    assert made.bytes == len(content) and emu.file_content(made.id) == content


def _disconnecting(body: bytes) -> Receive:
    """A body of which half arrives, then the client goes away."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if len(messages) > 1 else messages[0]

    return receive


def test_an_upload_refused_or_cut_off_over_http_leaves_nothing(stores: Stores) -> None:
    emu = emulator(stores)
    body = multipart(b'{"a": 1}\n' * 500_000)  # 4.5 MB: on disk while parsed

    async def scenario() -> None:
        app = create_app(emu)
        status, _ = await post(app, _disconnecting(body), len(body))
        assert status == 400
        status, _ = await post(app, _disconnecting(body), None)
        assert status == 400
        assert (await post(app, whole(body), MAX_UPLOAD_BYTES + 1))[0] == 413
        text = body.replace(b'filename="in.jsonl"', b'filename="in.txt"')
        assert (await post(app, whole(text), len(text)))[0] == 400
        odd = multipart(b"{}\n", purpose="nope")
        assert (await post(app, whole(odd), len(odd)))[0] == 400

    asyncio.run(scenario())
    assert_nothing_stored(emu, stores)


class RecordingFiles(MemoryFileStore):
    """A memory file store that notes the size of each piece it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[int] = []

    def add(
        self,
        file: FileObject,
        content: Content,
        *,
        project: str = "proj_default",
        max_stored: int | None = None,
    ) -> None:
        def noted() -> Iterator[Piece]:
            for piece in [content] if isinstance(content, bytes) else content:
                self.pieces.append(len(piece))
                yield piece

        super().add(file, noted(), project=project, max_stored=max_stored)


def test_an_upload_over_http_reaches_the_store_in_pieces_never_whole() -> None:
    files = RecordingFiles()
    emu = Emulator(store=MemoryBatchStore(files))
    content = b'{"a": 1}\n' * (3 * MiB // 9 + 1)

    async def scenario() -> None:
        body = multipart(content)
        status, made = await post(create_app(emu), whole(body), len(body))
        assert status == 200 and made["bytes"] == len(content)

    asyncio.run(scenario())
    assert max(files.pieces) <= PIECE_BYTES < len(content)
    assert sum(files.pieces) == len(content) and len(files.pieces) == 4
    [stored] = files.list()
    assert files.content(stored.id) == content


# -- expiry ----------------------------------------------------------------------------


def test_expired_files_are_purged_and_the_list_never_passes_over_them(
    stores: Stores,
) -> None:
    emu = emulator(stores)
    kept = emu.create_file(b"k" * 70_000, "notes.txt", "user_data")  # never expires
    short = [
        emu.create_file(b"{}\n" * 30_000, "in.jsonl", "batch", expires_after=3_600)
        for _ in range(20)  # more than one purge step
    ]
    month = emu.create_file(b"{}\n", "in.jsonl", "batch")  # 30 days
    emu.clock.advance(3_599)  # type: ignore[attr-defined]
    assert len(emu.list_files()["data"]) == 22
    emu.clock.advance(1)  # type: ignore[attr-defined]
    listed = emu.list_files()
    assert [f["id"] for f in listed["data"]] == [month.id, kept.id]
    # Purged, not hidden: the store holds neither their rows nor their bytes,
    # so no listing passes over them, with or without a time.
    for gone in short:
        assert stores.files.get(gone.id) is None
        assert stores.files.read(gone.id, 0, 1) is None
        with pytest.raises(ApiError, match=f"No such File object: {gone.id}"):
            emu.retrieve_file(gone.id)
    assert stores.files.page(None, 99)[0] == [month, kept]
    assert chunk_rows(stores) in (None, 2 + 1)
    assert emu.file_content(kept.id) == b"k" * 70_000


def test_a_batchs_expired_result_files_are_still_named_but_gone(stores: Stores) -> None:
    emu = emulator(stores)
    upload = emu.create_file(
        "\n".join(
            [line(0), line(1, body={"model": "gpt-4o-mini", "messages": []})]
        ).encode(),
        "in.jsonl",
        "batch",
    )
    batch = emu.create_batch(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        output_expires_after={"anchor": "created_at", "seconds": 3_600},
    )
    done = poll(emu, batch.id)[-1]
    results = [done.output_file_id, done.error_file_id]
    assert None not in results
    assert all(emu.file_content(f) for f in results if f is not None)
    emu.clock.advance(3_600)  # type: ignore[attr-defined]
    # As the live API does, the batch still names its result files...
    assert emu.retrieve_batch(batch.id) == done
    for file_id in results:
        assert file_id is not None
        # ...but they are gone: 404 everywhere, their content purged.
        for call in (emu.retrieve_file, emu.file_content):
            with pytest.raises(ApiError) as missing:
                call(file_id)
            assert missing.value.status_code == 404
        assert stores.files.get(file_id) is None
        assert stores.files.read(file_id, 0, 1) is None
    assert [f["id"] for f in emu.list_files()["data"]] == [upload.id]


def _slow_batch(emu: Emulator, expires_after: int = 3_600) -> tuple[str, str]:
    """A 5-request batch, its input expiring ``expires_after`` s after creation.

    With ``request_seconds=1_000``, a request every 1,000 s.
    """
    upload = emu.create_file(
        "\n".join(line(i) for i in range(5)).encode(),
        "in.jsonl",
        "batch",
        expires_after=expires_after,
    )
    batch = emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")
    return upload.id, batch.id


def test_an_input_file_that_expires_mid_run_fails_the_requests_due_after(
    stores: Stores,
) -> None:
    # An expired file is gone everywhere, an input file as any other: the
    # requests due from its expiry on fail, as for an input deleted mid-run.
    emu = Emulator(store=stores.batches, files=stores.files, request_seconds=1_000)
    upload_id, batch_id = _slow_batch(emu)
    done = poll(emu, batch_id, seconds=100)[-1]
    assert stores.files.get(upload_id) is None  # purged
    assert done.status.value == "completed" and done.request_counts is not None
    # Due at 1,001, 2,001 and 3,001 s: run; at 4,001 and 5,001 s: failed.
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 2)


def test_an_expiring_input_gives_the_same_batch_in_one_step_or_many() -> None:
    # Whether the purge came before the requests were due or not: the same.
    done = []
    for seconds in (100, 10_000):
        emu = Emulator(seed=3, request_seconds=1_000)
        _, batch_id = _slow_batch(emu)
        done.append(poll(emu, batch_id, seconds=seconds)[-1])
        assert done[-1].request_counts is not None
        assert done[-1].request_counts.completed == 3
    assert done[0].request_counts == done[1].request_counts


def test_a_purge_by_another_process_never_takes_an_input_its_holder_still_needs(
    tmp_path: Any,
) -> None:
    # Two processes share a database. A holds the batch but is behind (slow,
    # or busy elsewhere); B, whose time is past the input's expiry, purges.
    # The requests due before the expiry still run once A catches up: the
    # outcome is the emulated time's, never the purge's timing.
    from batchfsm.emulator import SQLiteStore, VirtualClock

    path = tmp_path / "shared.sqlite"
    start = 1_764_073_668
    with SQLiteStore(path) as a_store, SQLiteStore(path) as b_store:
        clock = VirtualClock(start)
        a = Emulator(store=a_store, clock=clock, request_seconds=1_000)
        upload_id, batch_id = _slow_batch(a)
        clock.advance(1)
        a.run()  # validated: A holds it now
        assert a.retrieve_batch(batch_id).status.value == "in_progress"
        b = Emulator(store=b_store, clock=VirtualClock(start + 10_000))
        b.run()  # not B's batch; the input expired an hour in, by B's time
        clock.advance(10_000)
        done = a.retrieve_batch(batch_id)
        assert done.status.value == "completed" and done.request_counts is not None
        # Due at 1,001, 2,001 and 3,001 s: run; at 4,001 and 5,001 s: failed.
        assert (done.request_counts.completed, done.request_counts.failed) == (3, 2)
        b.run()
        assert b_store.files.get(upload_id) is None  # purged once none needs it


def test_a_request_due_the_second_its_input_expires_fails() -> None:
    # Expired at its expires_at, as everywhere (is_live): not a second later.
    emu = Emulator(request_seconds=1_000)
    _, batch_id = _slow_batch(emu, expires_after=3_001)
    done = poll(emu, batch_id, seconds=100)[-1]
    assert done.request_counts is not None
    # Due at 1,001 and 2,001 s: run; at 3,001 s, the second it expires: failed.
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)
