"""The web view honours projects and outages, as the API does (route level)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx2
from starlette.testclient import TestClient

from batchfsm.emulator import Emulator, StoreUnavailable, create_app
from batchfsm.emulator._stores import MemoryBatchStore
from batchfsm.emulator._web_live import Snapshots, _changed

from .browser import LINE, new_emulator, serving

KEYS = {"sk-team-a": "team_a", "sk-team-b": "team_b"}


def _login(app: Any, key: str) -> TestClient:
    client = TestClient(app)
    client.post("/ui/login", data={"key": key}, follow_redirects=False)
    return client


def _api(app: Any, key: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


def _batch(api: Any) -> dict[str, Any]:
    """A batch (and its input file) created through the HTTP API with ``api``'s key."""
    file = api.post(
        "/v1/files",
        files={"file": ("in.jsonl", LINE % 0)},
        data={"purpose": "batch"},
    ).json()
    batch: dict[str, Any] = api.post(
        "/v1/batches",
        json={
            "input_file_id": file["id"],
            "endpoint": "/v1/embeddings",
            "completion_window": "24h",
        },
    ).json()
    return batch


def _shown(html: str) -> list[str]:
    return re.findall(r'<tr data-batch="(batch_\w+)">', html)


def _two_projects() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    emulator, _ = new_emulator()
    app = create_app(emulator, api_keys=KEYS)
    return app, _batch(_api(app, "sk-team-a")), _batch(_api(app, "sk-team-b"))


def test_each_key_lists_its_own_projects_batches_only() -> None:
    app, mine, theirs = _two_projects()
    assert _shown(_login(app, "sk-team-a").get("/ui").text) == [mine["id"]]
    assert _shown(_login(app, "sk-team-b").get("/ui").text) == [theirs["id"]]
    filtered = _login(app, "sk-team-a").get("/ui?status=validating")
    assert _shown(filtered.text) == [mine["id"]]


def test_another_projects_batch_answers_as_an_unknown_one() -> None:
    app, mine, theirs = _two_projects()
    client = _login(app, "sk-team-a")
    assert client.get(f"/ui/batches/{mine['id']}").status_code == 200
    other = client.get(f"/ui/batches/{theirs['id']}")
    unknown = client.get("/ui/batches/batch_unknown")
    assert other.status_code == unknown.status_code == 404
    assert other.text.replace(theirs["id"], "ID") == unknown.text.replace(
        "batch_unknown", "ID"
    )
    assert "No batch found with id" in other.text


def test_another_projects_file_answers_as_an_unknown_one() -> None:
    app, mine, theirs = _two_projects()
    client = _login(app, "sk-team-a")
    own = client.get(f"/ui/files/{mine['input_file_id']}")
    assert own.status_code == 200 and own.content == LINE % 0
    assert own.headers["content-disposition"] == 'attachment; filename="in.jsonl"'
    other = client.get(f"/ui/files/{theirs['input_file_id']}")
    unknown = client.get("/ui/files/file-unknown")
    assert other.status_code == unknown.status_code == 404
    assert other.text.replace(theirs["input_file_id"], "ID") == unknown.text.replace(
        "file-unknown", "ID"
    )


def test_a_live_stream_never_sends_another_projects_batch() -> None:
    app, mine, theirs = _two_projects()
    context = app.state.context
    ids = [mine["id"], theirs["id"]]
    sent = _changed(context, Snapshots(bound=8), ids, {}, "team_a")
    assert [fields["id"] for fields in sent] == [mine["id"]]


def test_a_live_stream_over_http_sends_only_the_keys_batches() -> None:
    emulator, _ = new_emulator()
    with serving(emulator, api_key=None, api_keys=KEYS) as base:
        ids = {}
        for key in KEYS:
            with httpx2.Client(base_url=base) as http:
                ids[key] = _batch(_Http(http, key))["id"]
        cookie = {"Cookie": "batchfsm_key=" + _encoded("sk-team-b")}
        url = f"{base}/ui/live?batch={ids['sk-team-a']}&batch={ids['sk-team-b']}"
        with (
            httpx2.Client(headers=cookie, timeout=10) as http,
            http.stream("GET", url) as stream,
        ):
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[6:])["id"] == ids["sk-team-b"]
                    break


def test_a_wrong_key_sees_nothing_of_any_project() -> None:
    app, mine, theirs = _two_projects()
    client = _login(app, "sk-team-c")
    assert "batchfsm_key" not in client.cookies
    client.cookies.set("batchfsm_key", _encoded("sk-team-c"), path="/ui")
    answer = client.get("/ui", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
    for path in (f"/ui/files/{mine['input_file_id']}", f"/ui/live?batch={mine['id']}"):
        refused = client.get(path)
        assert refused.status_code == 401
        assert mine["id"] not in refused.text and theirs["id"] not in refused.text


class _AwayStore(MemoryBatchStore):
    """A memory store that can be made unavailable, as a lost database is."""

    away = False

    def page(self, *args: Any, **kwargs: Any) -> Any:
        if self.away:
            raise StoreUnavailable("test store: connection lost")
        return super().page(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if self.away:
            raise StoreUnavailable("test store: connection lost")
        return super().get(*args, **kwargs)


def test_while_the_store_is_away_the_view_answers_503_as_the_api() -> None:
    store = _AwayStore()
    emulator = Emulator(store=store)
    app = create_app(emulator, api_keys=KEYS)
    batch = _batch(_api(app, "sk-team-a"))
    client = _login(app, "sk-team-a")
    store.away = True
    for path in ("/ui", f"/ui/batches/{batch['id']}"):
        answer = client.get(path)
        assert answer.status_code == 503, path
        assert answer.headers["retry-after"] == "1"
        assert "The store is unavailable; retry in a moment." in answer.text
        assert "Traceback" not in answer.text
    api = _api(app, "sk-team-a").get(f"/v1/batches/{batch['id']}")
    assert api.status_code == 503 and api.headers["retry-after"] == "1"
    assert emulator.outage.down
    store.away = False
    assert client.get("/ui").status_code == 200
    assert not emulator.outage.down


def test_a_bug_is_a_500_page_not_a_traceback() -> None:
    class Broken(MemoryBatchStore):
        def page(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

    app = create_app(Emulator(store=Broken()))
    answer = TestClient(app, raise_server_exceptions=False).get("/ui")
    assert answer.status_code == 500
    assert "The emulator failed to answer: its bug." in answer.text


def test_without_the_view_its_routes_and_files_are_unknown_urls() -> None:
    client = TestClient(create_app(Emulator(), ui=False))
    for path in ("/ui", "/ui/login", "/ui/static/app.js", "/ui/batches/batch_x"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["message"] == f"Invalid URL (GET {path})"


class _Http:
    """An httpx2 client with a key, shaped as the TestClient ``_batch`` takes."""

    def __init__(self, http: httpx2.Client, key: str) -> None:
        self.http, self.headers = http, {"Authorization": f"Bearer {key}"}

    def post(self, path: str, **kwargs: Any) -> httpx2.Response:
        return self.http.post(path, headers=self.headers, **kwargs)


def _encoded(key: str) -> str:
    import base64

    return base64.urlsafe_b64encode(key.encode()).decode()


def test_the_view_and_metrics_stay_out_of_the_request_log() -> None:
    emulator, _ = new_emulator()
    app = create_app(emulator, api_keys=KEYS)
    batch = _batch(_api(app, "sk-team-a"))
    logged = len(emulator.requests)
    client = _login(app, "sk-team-a")
    for path in ("/ui", f"/ui/batches/{batch['id']}", "/ui/static/app.js"):
        assert client.get(path).status_code == 200
    assert _api(app, "sk-team-a").get("/metrics").status_code == 200
    assert len(emulator.requests) == logged == 2  # the upload and the create
