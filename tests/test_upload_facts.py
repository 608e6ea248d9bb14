"""Two facts of batch uploads (DESIGN §5, facts 19 and 20), through the official
client and on every store: a name without an extension is accepted (its lines
are validated at the batch, as a ``.jsonl`` file's are); a file that is not
UTF-8 is refused at upload, checked as it streams in, and nothing of it stays.
"""

from __future__ import annotations

import asyncio
import codecs
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from batchfsm.emulator import (
    ApiError,
    Emulator,
    EmulatorTransport,
    VirtualClock,
    create_app,
)
from batchfsm.emulator._content import PIECE_BYTES

from . import test_stores
from .test_emulator import line, poll
from .test_files import assert_nothing_stored, emulator
from .test_stores import Stores
from .test_uploads import multipart, post, whole

store_name = test_stores.store_name
stores = test_stores.stores

NOT_UTF8 = "Invalid file for Batch API. Must be utf-8 encoded"
NOT_JSONL = "Invalid file format for Batch API. Must be .jsonl"
#: Two requests, one of them not ASCII.
TEXT = line(0) + "\n" + line(1).replace('"hi"', '"héllo — ☃"') + "\n"


def client(emu: Emulator) -> openai.OpenAI:
    http = httpx2.Client(
        transport=EmulatorTransport(create_app(emu)), base_url="http://b/v1"
    )
    return openai.OpenAI(api_key="sk-test", base_url="http://b/v1", http_client=http)


def ends(emu: Emulator, file_id: str) -> Any:
    batch = emu.create_batch(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return poll(emu, batch.id)[-1]


def refused(call: Any) -> dict[str, Any]:
    """The error object of a 400 (the client hands over the body's `error`)."""
    with pytest.raises(openai.BadRequestError) as info:
        call()
    assert info.value.status_code == 400
    return info.value.body  # type: ignore[return-value]


# -- fact 19: a name without an extension -------------------------------------


@pytest.mark.parametrize("given", ["bytes", "BytesIO", "path"])
def test_an_upload_without_an_extension_is_accepted_and_runs(given, tmp_path):
    emu = Emulator(clock=VirtualClock())
    path = tmp_path / "batch_input"
    path.write_bytes(TEXT.encode())
    file: Any = {
        "bytes": TEXT.encode(),
        "BytesIO": io.BytesIO(TEXT.encode()),
        "path": path,
    }[given]
    made = client(emu).files.create(file=file, purpose="batch")
    assert made.filename == ("batch_input" if given == "path" else "upload")
    assert made.bytes == len(TEXT.encode())
    done = ends(emu, made.id)
    assert (done.status, done.request_counts.completed) == ("completed", 2)


def test_lines_of_a_file_without_an_extension_are_judged_at_the_batch():
    emu = Emulator(clock=VirtualClock())
    made = client(emu).files.create(file=b"{oops\n" + line(1).encode(), purpose="batch")
    done = ends(emu, made.id)
    assert done.status == "failed"
    assert [(e.code, e.line) for e in done.errors.data] == [("invalid_json_line", 1)]


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("notes.txt", False),
        ("in.jsonl.gz", False),
        ("in.json", False),
        ("in.JSONL", True),
        ("my.data.jsonl", True),
        ("upload", True),
        ("dir.d/upload", True),
    ],
)
def test_only_another_extension_is_refused(name, accepted):
    emu = Emulator(clock=VirtualClock())
    upload = lambda: client(emu).files.create(  # noqa: E731
        file=(name, TEXT.encode()), purpose="batch"
    )
    if accepted:
        assert upload().purpose == "batch"
    else:
        assert refused(upload) == {
            "message": NOT_JSONL, "type": "invalid_request_error", "param": None,
            "code": None,
        }  # fmt: skip


# -- fact 20: UTF-8 only -------------------------------------------------------


NOT_UTF8_FILES = {
    "UTF-16 with a BOM": TEXT.encode("utf-16"),
    "UTF-16-LE, no BOM": TEXT.encode("utf-16-le"),
    "UTF-16-BE, no BOM": TEXT.encode("utf-16-be"),
    "UTF-32": TEXT.encode("utf-32"),
    "Latin-1": line(0).replace('"hi"', '"héllo"').encode("latin-1"),
    "ASCII lines of UTF-16": line(0).encode("utf-16-le"),  # valid UTF-8 but NULs
    "cut mid-character": TEXT.encode()[:-2] + "é".encode()[:1],
    "a surrogate (CESU-8)": b'{"a": "\xed\xa0\x80"}\n',
}


@pytest.mark.parametrize("content", NOT_UTF8_FILES.values(), ids=list(NOT_UTF8_FILES))
@pytest.mark.parametrize("given", ["bytes", "BytesIO", "path"])
def test_a_file_not_utf8_is_refused_at_upload(content, given, tmp_path):
    emu = Emulator(clock=VirtualClock())
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    file: Any = {"bytes": content, "BytesIO": io.BytesIO(content), "path": path}[given]
    body = refused(lambda: client(emu).files.create(file=file, purpose="batch"))
    assert body == {
        "message": NOT_UTF8, "type": "invalid_request_error", "param": None,
        "code": None,
    }  # fmt: skip
    assert emu.list_files()["data"] == []


def test_other_purposes_are_not_read_for_their_encoding():
    emu = Emulator(clock=VirtualClock())
    made = client(emu).files.create(file=TEXT.encode("utf-16"), purpose="user_data")
    assert made.bytes == len(TEXT.encode("utf-16"))


def test_a_utf8_byte_order_mark_is_accepted_and_passed_over():
    emu = Emulator(clock=VirtualClock())
    content = codecs.BOM_UTF8 + TEXT.encode()
    made = client(emu).files.create(file=("in.jsonl", content), purpose="batch")
    assert emu.file_content(made.id) == content  # stored as it came
    done = ends(emu, made.id)
    assert (done.status, done.request_counts.completed) == ("completed", 2)


# -- streamed: checked piece by piece, nothing kept of a refused file ----------


def split_everywhere(content: bytes) -> Iterator[bytes]:
    """One byte a piece: every character cut between pieces."""
    return (content[i : i + 1] for i in range(len(content)))


def test_characters_cut_between_pieces_pass(stores: Stores) -> None:
    emu = emulator(stores)
    made = emu.create_file(split_everywhere(TEXT.encode()), "in.jsonl", "batch")
    assert emu.file_content(made.id) == TEXT.encode()


@pytest.mark.parametrize(
    "content",
    [
        b"{}\n" * PIECE_BYTES + "é".encode("latin-1"),  # past the first pieces
        b"{}\n" * PIECE_BYTES + "é".encode()[:1],  # a character cut at the end
        b"{}\n" * PIECE_BYTES + b"\0",
    ],
    ids=["Latin-1", "cut at the end", "NUL"],
)
def test_a_file_refused_midway_leaves_nothing(stores: Stores, content: bytes) -> None:
    emu = emulator(stores)
    for upload in (
        io.BytesIO(content),
        iter([content[:PIECE_BYTES], content[PIECE_BYTES:]]),
    ):
        with pytest.raises(ApiError, match=NOT_UTF8):
            emu.create_file(upload, "in.jsonl", "batch")
        assert_nothing_stored(emu, stores)


def test_over_http_a_file_refused_past_its_first_megabytes_leaves_nothing(
    stores: Stores,
) -> None:
    emu = emulator(stores)
    good = b'{"a": "\xc3\xa9"}\n' * (3 * PIECE_BYTES // 14)
    straddling = b"{}\n" * (PIECE_BYTES // 3) + "é".encode() + b"\n"
    assert straddling[PIECE_BYTES - 1 : PIECE_BYTES + 1] == "é".encode()

    async def scenario() -> None:
        app = create_app(emu)
        for content, status in ((good + b"\xff\n", 400), (straddling, 200)):
            body = multipart(content)
            answer = await post(app, whole(body), len(body))
            assert answer[0] == status, answer
            if status == 400:
                assert answer[1]["error"]["message"] == NOT_UTF8
                assert_nothing_stored(emu, stores)

    asyncio.run(scenario())
    [kept] = emu.list_files()["data"]
    assert emu.file_content(kept["id"]) == straddling


def test_the_check_reads_a_path_it_is_given_as_a_stream(tmp_path: Path) -> None:
    emu = Emulator(clock=VirtualClock())
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"{}\n" * PIECE_BYTES + b"\xe9\n")
    with path.open("rb") as file, pytest.raises(ApiError, match=NOT_UTF8):
        emu.create_file(file, "big.jsonl", "batch")
    assert emu.list_files()["data"] == []
