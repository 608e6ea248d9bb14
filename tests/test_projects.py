"""Projects: keys bound to projects, objects scoped by them, in every layer."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from batchfsm._cli import main
from batchfsm.conformance import run
from batchfsm.emulator import (
    Emulator,
    EmulatorTransport,
    FileObject,
    VirtualClock,
    create_app,
    make_input_file,
    open_store,
)
from batchfsm.emulator._migrations import LATEST
from batchfsm.emulator._projects import DEFAULT_PROJECT, ApiKeys, parse_key

from .test_sql_stores import _postgres_at_version, _sqlite_at_version

CHAT = "/v1/chat/completions"
KEYS = {"sk-a": "proj_a", "sk-b": "proj_b"}


def _two_keys(
    emulator: Emulator,
) -> tuple[EmulatorTransport, httpx2.Client, httpx2.Client]:
    """A transport to ``emulator``, and clients of two keys in two projects."""
    transport = EmulatorTransport(create_app(emulator, api_keys=KEYS))
    a, b = (
        httpx2.Client(
            transport=transport,
            base_url="http://e/v1",
            headers={"Authorization": f"Bearer {key}"},
        )
        for key in KEYS
    )
    return transport, a, b


@pytest.fixture
def clients() -> Iterator[tuple[Emulator, httpx2.Client, httpx2.Client]]:
    """An emulator, and clients of two keys in two projects."""
    emulator = Emulator(clock=VirtualClock())
    transport, a, b = _two_keys(emulator)
    yield emulator, a, b
    transport.close()


def _upload(http: httpx2.Client, requests: int = 2) -> str:
    answer = http.post(
        "/files",
        files={"file": ("in.jsonl", make_input_file(requests))},
        data={"purpose": "batch"},
    )
    assert answer.status_code == 200, answer.text
    file_id: str = answer.json()["id"]
    return file_id


def _create(http: httpx2.Client, file_id: str) -> dict[str, Any]:
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    answer = http.post("/batches", json=body)
    assert answer.status_code == 200, answer.text
    batch: dict[str, Any] = answer.json()
    return batch


# -- keys ---------------------------------------------------------------------------


def test_a_setting_is_a_key_or_a_key_and_its_project() -> None:
    assert parse_key("sk-a=team_1") == ("sk-a", "team_1")
    assert parse_key("sk-a") == ("sk-a", DEFAULT_PROJECT)
    assert parse_key("a=b=team") == ("a=b", "team")  # split at the last '='
    assert parse_key("c2VjcmV0==") == ("c2VjcmV0==", DEFAULT_PROJECT)  # padding


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("sk x=team", "--api-key must be one or more printable"),
        ("=team", "--api-key must be one or more printable"),
        ("sk-a=team one", "--api-key's project must be 1 to 64"),
        ("sk-a=t\u00e9am", "--api-key's project must be 1 to 64"),
    ],
)
def test_a_bad_setting_names_what_is_wrong_never_the_key(
    setting: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_key(setting, "--api-key")
    assert "sk x" not in str(info.value) and "sk-a" not in str(info.value)


def test_each_key_finds_its_project_and_no_other_key_passes() -> None:
    keys = ApiKeys(KEYS)
    assert [keys.project(f"Bearer {k}") for k in ("sk-a", "sk-b", "sk-c", "")] == [
        "proj_a",
        "proj_b",
        None,
        None,
    ]
    assert keys.project("sk-a") is None and keys.project("Bearer sk-a ") is None


def test_create_app_refuses_a_key_in_two_projects_and_bad_projects() -> None:
    with pytest.raises(ValueError, match="another project"):
        create_app(Emulator(), api_key="sk-a", api_keys={"sk-a": "proj_a"})
    with pytest.raises(ValueError, match="project must be 1 to 64"):
        create_app(Emulator(), api_keys={"sk-a": "no spaces"})
    with pytest.raises(ValueError, match="api_key must be one or more"):
        create_app(Emulator(), api_keys={"sk a": "proj_a"})


def test_a_wrong_key_is_refused_when_there_are_several(clients: Any) -> None:
    _, a, _ = clients
    for headers in ({"Authorization": "Bearer sk-c"}, {"Authorization": ""}):
        answer = a.get("/batches", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_api_key"


# -- scoping over HTTP --------------------------------------------------------------


def test_another_projects_ids_answer_word_for_word_as_unknown_ones(
    clients: Any,
) -> None:
    _, a, b = clients
    file_id = _upload(a)
    batch_id = _create(a, file_id)["id"]
    unknown_file = "file-" + "0" * (len(file_id) - 5)
    unknown_batch = "batch_" + "0" * (len(batch_id) - 6)
    for method, path, mine, unknown in [
        ("GET", "/batches/{}", batch_id, unknown_batch),
        ("POST", "/batches/{}/cancel", batch_id, unknown_batch),
        ("GET", "/batches?after={}", batch_id, unknown_batch),
        ("GET", "/files/{}", file_id, unknown_file),
        ("GET", "/files/{}/content", file_id, unknown_file),
        ("DELETE", "/files/{}", file_id, unknown_file),
        ("GET", "/files?after={}", file_id, unknown_file),
    ]:
        got = b.request(method, path.format(mine))
        want = b.request(method, path.format(unknown))
        assert got.status_code == want.status_code and got.status_code in (400, 404)
        assert got.text.replace(mine, "ID") == want.text.replace(unknown, "ID")
    # and nothing happened to them: still a's, uncancelled, undeleted
    assert a.get(f"/batches/{batch_id}").json()["status"] == "validating"
    assert a.get(f"/files/{file_id}/content").content == make_input_file(2)


def test_each_key_lists_its_own_objects_only(clients: Any) -> None:
    emulator, a, b = clients
    mine = [_create(a, _upload(a))["id"] for _ in range(3)]
    theirs = _create(b, _upload(b))["id"]
    emulator.clock.advance(60)
    page = a.get("/batches?limit=2").json()
    assert [x["id"] for x in page["data"]] == mine[::-1][:2] and page["has_more"]
    page = b.get("/batches").json()
    assert [x["id"] for x in page["data"]] == [theirs] and not page["has_more"]
    finished = b.get(f"/batches/{theirs}").json()
    assert finished["status"] == "completed"
    # The result file is the batch's project's: b lists and reads it, a never.
    output = finished["output_file_id"]
    assert output in {f["id"] for f in b.get("/files").json()["data"]}
    assert output not in {f["id"] for f in a.get("/files").json()["data"]}
    assert b.get(f"/files/{output}/content").status_code == 200
    assert a.get(f"/files/{output}/content").status_code == 404
    assert len(a.get("/files").json()["data"]) == 3 + 3  # 3 uploads, 3 outputs


def test_a_batch_of_another_projects_file_fails_as_of_a_missing_one(
    clients: Any,
) -> None:
    emulator, a, b = clients
    foreign = _upload(a)
    unknown = "file-" + "0" * (len(foreign) - 5)
    theirs, missing = (_create(b, i)["id"] for i in (foreign, unknown))
    emulator.clock.advance(5)
    got, want = (b.get(f"/batches/{i}").json() for i in (theirs, missing))
    assert got["status"] == want["status"] == "failed"
    assert json.dumps(got["errors"]).replace(foreign, "ID") == json.dumps(
        want["errors"]
    ).replace(unknown, "ID")


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_sql_stores_worker_reads_only_the_batchs_own_projects_input(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # The SQL stores look the input up in one statement, joined on the
    # batch's project: another project's file is as good as missing there too.
    url = (
        str(tmp_path / "p.sqlite")
        if dialect == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    clock = VirtualClock()
    with open_store(url) as store:
        emulator = Emulator(
            clock=clock, store=store, files=store.files, ids=store.ids()
        )
        transport, a, b = _two_keys(emulator)
        try:
            foreign = _upload(a)
            theirs, mine = _create(b, foreign)["id"], _create(a, foreign)["id"]
            clock.advance(5)
            got = b.get(f"/batches/{theirs}").json()
            assert got["status"] == "failed"
            assert got["errors"]["data"][0]["param"] == "file_id"
            assert a.get(f"/batches/{mine}").json()["status"] != "failed"
        finally:
            transport.close()


def test_a_server_without_keys_is_one_project_the_default_one() -> None:
    emulator = Emulator()
    transport = EmulatorTransport(create_app(emulator))
    with httpx2.Client(transport=transport, base_url="http://e/v1") as http:
        batch_id = _create(http, _upload(http))["id"]
    assert emulator.retrieve_batch(batch_id).id == batch_id  # in-process: default
    assert emulator.batches.project(batch_id) == DEFAULT_PROJECT


def test_the_python_api_takes_the_project_and_defaults_to_the_default_one() -> None:
    emulator = Emulator()
    upload = emulator.create_file(make_input_file(1), "in.jsonl", "batch")
    other = emulator.create_file(
        make_input_file(1), "in.jsonl", "batch", project="proj_x"
    )
    assert emulator.retrieve_file(upload.id) == upload
    assert emulator.retrieve_file(other.id, project="proj_x") == other
    for call in (emulator.retrieve_file, emulator.delete_file, emulator.file_content):
        with pytest.raises(Exception, match=f"No such File object: {other.id}"):
            call(other.id)
    listed = emulator.list_files(project="proj_x")["data"]
    assert [f["id"] for f in listed] == [other.id]


def test_the_storage_bound_is_each_projects_own() -> None:
    emulator = Emulator(max_storage_bytes=100)
    emulator.create_file(b"x" * 80, "a.txt", "user_data", project="proj_a")
    emulator.create_file(b"x" * 80, "b.txt", "user_data", project="proj_b")
    with pytest.raises(Exception, match="Storage limit reached"):
        emulator.create_file(b"x" * 30, "c.txt", "user_data", project="proj_a")


# -- stores: a database made before projects ----------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_version_7_database_puts_its_objects_in_the_default_project(
    request: pytest.FixtureRequest, tmp_path: Path, dialect: str
) -> None:
    rows = [
        "INSERT INTO batchfsm_files (id, body, purpose) VALUES ('file-old', "
        '\'{"id": "file-old", "bytes": 0, "created_at": 1, "filename": "a.jsonl",'
        ' "purpose": "batch", "object": "file", "status": "processed",'
        ' "expires_at": null, "status_details": null}\', \'batch\')',
    ]
    if dialect == "sqlite":
        url = str(tmp_path / "v7.sqlite")
        _sqlite_at_version(url, 7)
        # closing(): a connection's own `with` commits but leaves it open.
        with contextlib.closing(sqlite3.connect(url)) as conn, conn:
            for row in rows:
                conn.execute(row)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        _postgres_at_version(url, 7)
        with psycopg.connect(url, autocommit=True) as pg:
            for row in rows:
                pg.execute(row)
    with open_store(url) as store:
        with store._db.transaction(write=False) as tx:
            assert store._db.version(tx) == LATEST
        old = store.files.get("file-old", project=DEFAULT_PROJECT)
        assert isinstance(old, FileObject)
        assert store.files.get("file-old", project="proj_a") is None
        emulator = Emulator(store=store, ids=store.ids())
        assert emulator.retrieve_file("file-old") == old
        assert emulator.list_files(project="proj_a")["data"] == []


# -- the command line ---------------------------------------------------------------


def test_serve_binds_keys_to_projects_from_flags_a_file_and_the_environment(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nsk-c=proj_c\n\nsk-d\n", encoding="utf-8")
    base = serve(
        "--api-key", "sk-a=proj_a", "--api-key", "sk-b", "--keys-file", str(keys)
    )
    made: dict[str, str] = {}
    sees: dict[str, set[str]] = {}
    for key in ("sk-a", "sk-b", "sk-c", "sk-d"):
        with httpx2.Client(
            base_url=f"{base}/v1", headers={"Authorization": f"Bearer {key}"}
        ) as http:
            made[key] = _upload(http)
            sees[key] = {f["id"] for f in http.get("/files").json()["data"]}
    assert sees["sk-a"] == {made["sk-a"]}
    assert sees["sk-c"] == {made["sk-c"]}
    # sk-b and sk-d are plain keys: both in the default project
    assert sees["sk-d"] == {made["sk-b"], made["sk-d"]}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--api-key", "sk-a=x", "--api-key", "sk-a=y"], None, "two projects"),
        (
            ["--keys-file", "KEYS"],
            "sk-a=ok\nsk b=proj\n",
            "line 2 must be one or more printable",
        ),
        (["--keys-file", "NONE"], None, "cannot be read"),
        ([], "", "BATCHFSM_API_KEY must be"),
    ],
)
def test_serve_refuses_bad_keys_in_one_line(
    tmp_path: Path, args: list[str], env: str | None, message: str
) -> None:
    keys = tmp_path / "keys"
    environ = {k: v for k, v in os.environ.items() if k != "BATCHFSM_API_KEY"}
    if env is not None and "KEYS" in args:
        keys.write_text(env, encoding="utf-8")
    elif env is not None:
        environ["BATCHFSM_API_KEY"] = env
    args = [
        str(keys) if a == "KEYS" else str(tmp_path / "none") if a == "NONE" else a
        for a in args
    ]
    done = subprocess.run(
        [sys.executable, "-m", "batchfsm", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environ,
    )
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "sk b" not in done.stderr


def test_the_environment_may_hold_several_keys(serve: Callable[..., str]) -> None:
    os.environ["BATCHFSM_API_KEY"] = "sk-e=proj_e sk-f=proj_f"
    try:
        base = serve()
    finally:
        del os.environ["BATCHFSM_API_KEY"]
    with httpx2.Client(
        base_url=f"{base}/v1", headers={"Authorization": "Bearer sk-e"}
    ) as e:
        file_id = _upload(e)
    with httpx2.Client(
        base_url=f"{base}/v1", headers={"Authorization": "Bearer sk-f"}
    ) as f:
        assert f.get(f"/files/{file_id}").status_code == 404
        assert f.get("/files").json()["data"] == []


# -- conform ------------------------------------------------------------------------

_ONLY = {"projects.invisible", "projects.as_unknown"}
#: The checks whose broken servers are here (tests/test_conformance.py has
#: the others'): each of them fails on one below.
PROJECTS_BROKEN = {"projects.invisible", "projects.as_unknown"}


def _telling(app: Any) -> Any:
    """``app``, but a 404 for an object of another project says so: it differs."""
    made: set[str] = set()

    async def told(scope: Any, receive: Any, send: Any) -> None:
        status = 0

        async def send_on(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                heads = [h for h in message["headers"] if h[0] != b"content-length"]
                message = {**message, "headers": heads}
            elif status == 404 and any(i in scope["path"] for i in made):
                message = {**message, "body": message["body"] + b" "}
            elif status == 200 and scope["method"] == "POST":
                made.add(json.loads(message["body"])["id"])
            await send(message)

        await app(scope, receive, send_on)

    return told


def _conform(
    keys: dict[str, str], wrap: Callable[[Any], Any] = lambda app: app
) -> dict[str, str]:
    clock = VirtualClock()
    transport = EmulatorTransport(
        wrap(create_app(Emulator(clock=clock), api_keys=keys))
    )
    first, other = (
        httpx2.Client(
            transport=transport,
            base_url="http://e",
            headers={"Authorization": f"Bearer {key}"},
        )
        for key in keys
    )
    with first, other:
        report = run(
            first, wait=clock.advance, only=_ONLY, other_http=other, strict=True
        )
    return {r.id: r.outcome for r in report.results if r.id in _ONLY}


def test_conform_passes_a_server_that_keeps_projects_apart() -> None:
    assert _conform(KEYS) == dict.fromkeys(_ONLY, "pass")


def test_conform_fails_a_server_that_leaks_across_keys() -> None:
    # Two keys that see one space: what a server without projects does.
    leaky = {"sk-a": "proj_same", "sk-b": "proj_same"}
    assert _conform(leaky)["projects.invisible"] == "fail"


def test_conform_fails_a_server_whose_404_tells_another_projects_id() -> None:
    outcomes = _conform(KEYS, _telling)
    assert outcomes == {"projects.invisible": "pass", "projects.as_unknown": "fail"}


def _failing_for_the_other_key(app: Any) -> Any:
    """``app``, but every request of the second key is answered 500."""
    other = f"Bearer {list(KEYS)[1]}".encode()

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        if (b"authorization", other) not in scope["headers"]:
            await app(scope, receive, send)
            return
        body = b'{"error": "boom"}'
        heads = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 500, "headers": heads})
        await send({"type": "http.response.body", "body": body})

    return failing


def test_conform_fails_a_5xx_to_the_other_key_at_the_required_level() -> None:
    clock = VirtualClock()
    app = _failing_for_the_other_key(create_app(Emulator(clock=clock), api_keys=KEYS))
    transport = EmulatorTransport(app)
    first, other = (
        httpx2.Client(
            transport=transport,
            base_url="http://e",
            headers={"Authorization": f"Bearer {key}"},
        )
        for key in KEYS
    )
    with first, other:
        report = run(first, wait=clock.advance, only=_ONLY, other_http=other)
    results = {r.id: r for r in report.results if r.id in _ONLY}
    invisible, as_unknown = (
        results["projects.invisible"],
        results["projects.as_unknown"],
    )
    assert (invisible.outcome, invisible.level) == ("fail", "required")
    assert ", status 500, " in invisible.evidence
    assert as_unknown.outcome == "skip"  # it needs projects.invisible
    assert not report.passed


def test_conform_skips_the_projects_checks_without_a_second_key() -> None:
    clock = VirtualClock()
    transport = EmulatorTransport(create_app(Emulator(clock=clock)))
    with httpx2.Client(transport=transport, base_url="http://e") as http:
        report = run(http, wait=clock.advance, only=_ONLY)
    outcomes = {r.id: (r.outcome, r.evidence) for r in report.results if r.id in _ONLY}
    assert outcomes["projects.invisible"] == (
        "skip",
        "needs a second API key, of another project (--other-api-key)",
    )


def test_conform_on_the_command_line_runs_them_with_two_keys(
    serve: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = serve(
        "--speed", "2000", "--api-key", "sk-a=proj_a", "--api-key", "sk-b=proj_b"
    )
    code = main(
        [
            "conform", "--base-url", base, "--api-key", "sk-a",
            "--other-api-key", "sk-b", "--only", "projects.as_unknown",
            "--time-scale", "0.0005",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"projects\.invisible +pass", out), out
    assert re.search(r"projects\.as_unknown +pass", out), out
