"""The web view's routes without a browser: the key, filters, pages, live streams."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

import batchfsm as bf
from batchfsm.emulator import Emulator, _web_live, create_app
from batchfsm.emulator._projects import DEFAULT_PROJECT
from batchfsm.emulator._web import PAGE_SIZE, WebView, timeline
from batchfsm.emulator._web_live import LIVE_SECONDS, _changed

from .browser import KEY, LINE, create_batch, new_emulator, serving

STATIC = Path(bf.__file__).parent / "emulator" / "web" / "static"


def _client(emulator: Emulator, **app: object) -> TestClient:
    client = TestClient(create_app(emulator, api_key=KEY, **app))  # type: ignore[arg-type]
    client.post("/ui/login", data={"key": KEY}, follow_redirects=False)
    return client


def _add(emulator: Emulator, n: int) -> list[str]:
    file = emulator.create_file(LINE % 0, "in.jsonl", "batch")
    return [
        emulator.create_batch(
            input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
        ).id
        for _ in range(n)
    ]


def _shown(html: str) -> list[str]:
    return re.findall(r'<tr data-batch="(batch_\w+)">', html)


def test_the_list_is_paged_newest_first_and_the_pages_chain() -> None:
    emulator, _ = new_emulator()
    ids = _add(emulator, PAGE_SIZE + 3)
    client = _client(emulator)
    first = client.get("/ui")
    assert _shown(first.text) == ids[::-1][:PAGE_SIZE]
    (after,) = re.findall(r'class="next" href="/ui\?after=(batch_\w+)"', first.text)
    second = client.get(f"/ui?after={after}")
    assert _shown(second.text) == ids[::-1][PAGE_SIZE:]
    assert 'class="next"' not in second.text


def test_the_list_filters_by_status() -> None:
    emulator, _ = new_emulator()
    ids = _add(emulator, 3)
    emulator.cancel_batch(ids[1])
    client = _client(emulator)
    assert _shown(client.get("/ui?status=cancelling").text) == [ids[1]]
    assert _shown(client.get("/ui?status=validating").text) == [ids[2], ids[0]]
    assert _shown(client.get("/ui?status=completed").text) == []
    refused = client.get("/ui?status=done")
    assert refused.status_code == 400 and "No status &#39;done&#39;." in refused.text


def test_an_unknown_batch_or_cursor_is_a_page_saying_so() -> None:
    emulator, _ = new_emulator()
    client = _client(emulator)
    missing = client.get("/ui/batches/batch_nope")
    assert missing.status_code == 404
    assert "No batch found with id &#39;batch_nope&#39;." in missing.text
    assert client.get("/ui?after=batch_nope").status_code == 400


def test_without_the_key_every_route_refuses_and_shows_nothing() -> None:
    emulator, _ = new_emulator()
    (batch_id,) = _add(emulator, 1)
    file_id = emulator.retrieve_batch(batch_id).input_file_id
    client = TestClient(create_app(emulator, api_key=KEY))
    client.cookies.set("batchfsm_key", "c2std3Jvbmc=", path="/ui")  # "sk-wrong"
    for path in ("/ui", f"/ui/batches/{batch_id}"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    for path in (f"/ui/files/{file_id}", f"/ui/live?batch={batch_id}"):
        answer = client.get(path)
        assert answer.status_code == 401 and batch_id not in answer.text
    wrong = client.post("/ui/login", data={"key": "sk-wrong"}, follow_redirects=False)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert "Incorrect API key provided." in wrong.text


def test_the_cookie_is_http_only_strict_and_logout_clears_it() -> None:
    client = TestClient(create_app(Emulator(), api_key=KEY))
    answer = client.post("/ui/login", data={"key": KEY}, follow_redirects=False)
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert answer.headers["location"] == "/ui"  # the key is in no URL
    assert client.get("/ui").status_code == 200
    client.post("/ui/logout", follow_redirects=False)
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_no_key_set_means_an_open_view_as_the_api_is() -> None:
    client = TestClient(create_app(Emulator()))
    assert client.get("/ui").status_code == 200
    assert client.get("/ui/login", follow_redirects=False).status_code == 303


def test_no_ui_serves_no_view() -> None:
    client = TestClient(create_app(Emulator(), ui=False))
    assert client.get("/ui").status_code == 404
    assert client.get("/ui/static/app.js").status_code == 404


def test_the_pages_fetch_nothing_from_elsewhere() -> None:
    emulator, _ = new_emulator()
    (batch_id,) = _add(emulator, 1)
    client = _client(emulator)
    for path in ("/ui", f"/ui/batches/{batch_id}", "/ui/login"):
        answer = client.get(path, follow_redirects=False)
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert not re.search(r'(src|href)="(https?:)?//', answer.text)


def test_the_style_sheet_highlights_every_status() -> None:
    css = (STATIC / "app.css").read_text()
    for status in bf.BatchStatus:
        rule = (
            f'.diagram[data-current="{status.value}"] g[data-status="{status.value}"]'
        )
        assert rule in css


def test_the_timeline_orders_the_stamps_and_the_durations_between() -> None:
    rows = timeline({"created_at": 0, "cancelling_at": 3700, "in_progress_at": 10})
    assert [(r["name"], r["since"]) for r in rows] == [
        ("created_at", ""),
        ("in_progress_at", "0m 10s"),
        ("cancelling_at", "1h 01m 30s"),
    ]


def test_live_views_are_bounded_with_a_clear_refusal_and_seats_come_back() -> None:
    emulator, _ = new_emulator()
    base_headers = {"Cookie": "batchfsm_key=" + "c2std2ViLXZpZXctdGVzdA=="}
    with serving(emulator, max_live_views=2) as base:
        batch = create_batch(base, 1)
        url = f"{base}/ui/live?batch={batch['id']}"
        with httpx2.Client(headers=base_headers, timeout=10) as http:
            with http.stream("GET", url) as one, http.stream("GET", url) as two:
                assert one.status_code == two.status_code == 200
                # Kept while the third asks: an iterator dropped closes its stream.
                lines = one.iter_lines()
                assert next(lines) == "retry: 5000"
                refused = http.get(url)
                assert refused.status_code == 503
                assert refused.text == (
                    "Too many live views: at most 2 at once. "
                    "Close one, then reload this page."
                )
            deadline = time.monotonic() + 30  # the server sees the streams close
            while True:
                with http.stream("GET", url) as again:
                    if again.status_code == 200 or time.monotonic() > deadline:
                        break
                time.sleep(0.05)
            assert again.status_code == 200


def test_a_live_stream_sends_each_change_once() -> None:
    emulator, clock = new_emulator()
    with serving(emulator) as base:
        batch = create_batch(base, 2)
        headers = {"Cookie": "batchfsm_key=c2std2ViLXZpZXctdGVzdA=="}
        url = f"{base}/ui/live?batch={batch['id']}"
        with (
            httpx2.Client(headers=headers, timeout=10) as http,
            http.stream("GET", url) as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            seen = []
            for line in lines:
                if line.startswith("data: "):
                    seen.append(bf.BatchStatus(_status(line)))
                    if len(seen) == 1:
                        clock.advance(100)
                    if seen[-1] is bf.BatchStatus.COMPLETED:
                        break
    assert seen[0] is bf.BatchStatus.VALIDATING
    assert len(seen) == len(set(seen))  # nothing sent twice


def test_live_streams_share_what_they_see_so_tabs_cost_the_store_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator, clock = new_emulator()
    ids = _add(emulator, 3)
    context = create_app(emulator).state.context
    asked: list[str] = []
    retrieve = emulator.retrieve_batch

    def counted(batch_id: str, **kw: object) -> bf.Batch:
        asked.append(batch_id)
        return retrieve(batch_id, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(emulator, "retrieve_batch", counted)
    view = WebView()
    streams: list[dict[str, dict[str, object]]] = [{} for _ in range(10)]
    for sent in streams:  # ten tabs showing the same page, in one tick
        assert len(_changed(context, view.snapshots, ids, sent, DEFAULT_PROJECT)) == 3
    assert sorted(asked) == sorted(ids)  # each batch asked once, not ten times
    clock.advance(100)  # the batches finish
    time.sleep(LIVE_SECONDS)  # and the next tick comes
    for sent in streams:
        changed = _changed(context, view.snapshots, ids, sent, DEFAULT_PROJECT)
        assert {fields["status"] for fields in changed} == {"completed"}
    assert len(asked) == 2 * len(ids)


def test_live_streams_asking_from_threads_at_once_never_break_the_snapshots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The streams of a SQL store ask from worker threads: each asks anew
    # (LIVE_SECONDS 0) and the oldest keys go, racing the others' lookups.
    monkeypatch.setattr(_web_live, "LIVE_SECONDS", 0)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    snapshots, failed = _web_live.Snapshots(bound=8), []

    def stream(n: int) -> None:
        try:
            for i in range(20_000):
                snapshots.get("p", f"batch_{(i * 7 + n) % 40}", dict)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            failed.append(exc)

    try:
        threads = [threading.Thread(target=stream, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failed == []


def _status(line: str) -> str:
    import json

    status: str = json.loads(line[len("data: ") :])["status"]
    return status


@pytest.mark.parametrize("key", [KEY])
def test_the_cookie_holds_the_key_encoded(key: str) -> None:
    import base64

    assert base64.urlsafe_b64encode(key.encode()).decode() == "c2std2ViLXZpZXctdGVzdA=="
