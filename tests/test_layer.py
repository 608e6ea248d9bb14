"""The app's one ASGI layer, and its lane for the route clients poll.

The lane (``_routes_batches.poll_lane``) answers ``GET /v1/batches/{id}``'s
200s without Starlette's request machinery: each test puts it beside the same
app with the lane off (the layer's ``poll`` None) and wants the same answers,
the same request log and the same metrics, and that the lane did answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.testclient import TestClient

from batchfsm.emulator import Emulator, SQLiteStore, create_app, make_input_file
from batchfsm.emulator._routes_batches import Poll

KEY = {"Authorization": "Bearer k"}


def _apps(emulator: Emulator) -> tuple[Starlette, Starlette, list[bool]]:
    """The app with its lane (answers noted: True for each 200 the lane gave), and
    the app without it."""
    fast = create_app(emulator, api_keys={"k": "proj_a", "other": "proj_b"})
    slow = create_app(emulator, api_keys={"k": "proj_a", "other": "proj_b"})
    (layer,) = fast.user_middleware
    lane = cast("Poll", layer.kwargs["poll"])
    assert callable(lane)
    answered: list[bool] = []

    def noted(scope: Any) -> bytes | None:
        content = lane(scope)
        answered.append(content is not None)
        return content

    layer.kwargs["poll"] = noted
    slow.user_middleware[0].kwargs["poll"] = None  # (before its first request)
    return fast, slow, answered


def _seen(answer: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (the request id's value masked) and body of an answer."""
    headers = [
        (
            k,
            "req_*"
            if k == "x-request-id" and re.fullmatch(r"req_[0-9a-f]{32}", v)
            else v,
        )
        for k, v in answer.headers.items()
    ]
    return answer.status_code, headers, answer.content


def _batch(emulator: Emulator, project: str = "proj_a") -> str:
    upload = emulator.create_file(
        make_input_file(2), "in.jsonl", "batch", project=project
    )
    return emulator.create_batch(
        input_file_id=upload.id, endpoint="/v1/chat/completions", project=project
    ).id


def _requests(
    batch_id: str, theirs: str
) -> Iterator[tuple[str, str, dict[str, str], bool]]:
    """(method, path, headers, whether the lane answers it) for each case."""
    path = f"/v1/batches/{batch_id}"
    yield "GET", path, KEY, True
    yield "GET", path + "?after=x", KEY, True  # the query is the log's
    yield "GET", path, {"authorization": "Bearer nope"}, False  # 401
    yield "GET", path, {}, False  # 401: no key
    yield "GET", f"/v1/batches/{theirs}", KEY, False  # another project's: 404
    yield "GET", "/v1/batches/batch_nope", KEY, False  # 404
    yield "GET", "/v1/batches/nope", KEY, False  # 400
    yield "HEAD", path, KEY, False  # the route's too
    yield "GET", path + "/", KEY, False  # no route: 404
    yield "GET", "/v1/batches", KEY, False  # the list


def _both(
    fast: Starlette, slow: Starlette, cases: list[Any], poll: str
) -> tuple[list[bool], list[str]]:
    """Each case asked of both apps in turn: the answers alike; the metrics."""
    wanted = []
    with TestClient(fast) as f, TestClient(slow) as s:
        for method, path, headers, lane in cases:
            assert _seen(f.request(method, path, headers=headers)) == _seen(
                s.request(method, path, headers=headers)
            ), (method, path, headers)
            wanted.append(lane)
        # Two Authorization headers: refused alike (the route says why).
        two = [("authorization", "Bearer k"), ("authorization", "Bearer other")]
        answers = [c.get(poll, headers=two) for c in (f, s)]
        assert _seen(answers[0]) == _seen(answers[1])
        assert answers[0].status_code == 400
        wanted.append(False)
        metrics = [c.get("/metrics", headers=KEY).text for c in (f, s)]
    return wanted, metrics


def _http_counts(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith(
            (
                "batchfsm_http_requests_total",
                "batchfsm_http_request_duration_seconds_count",
            )
        )
    ]


def _compare(emulator: Emulator) -> list[bool]:
    fast, slow, answered = _apps(emulator)
    mine, theirs = _batch(emulator), _batch(emulator, "proj_b")
    emulator.clear_requests()
    cases = list(_requests(mine, theirs))
    wanted, metrics = _both(fast, slow, cases, f"/v1/batches/{mine}")
    # Each request logged alike by both apps, in turn: the same calls, twice.
    calls = [(c.method, c.path, c.query, c.status, c.body) for c in emulator.requests]
    assert calls[0::2] == calls[1::2]
    assert calls[0] == ("GET", f"/v1/batches/{mine}", "", 200, b"")
    assert calls[2][2] == "after=x"
    # Counted and timed alike, under the route's template.
    assert _http_counts(metrics[0]) == _http_counts(metrics[1])
    assert (
        'batchfsm_http_requests_total{code="200",method="GET",'
        'route="/v1/batches/{batch_id}"} 2.0'
    ) in metrics[0]
    assert answered == wanted, "the lane answered other requests than expected"
    return answered


def test_the_lane_answers_the_polls_200s_as_the_route_does() -> None:
    assert any(_compare(Emulator()))


def test_the_lane_answers_alike_on_sqlite(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "lane.sqlite"))
    emulator = Emulator(store=store, files=store.files, ids=store.ids())
    emulator.start()  # its reads on the event loop need the worker running
    try:
        assert any(_compare(emulator))
    finally:
        emulator.stop()
        store.close()


def test_a_fault_on_command_comes_before_the_lane() -> None:
    emulator = Emulator()
    fast, _, answered = _apps(emulator)
    batch_id = _batch(emulator)
    emulator.fail_next("/v1/batches/*", status=429, method="GET")
    emulator.stall_next("/v1/batches/*", 0.01, method="GET")
    with TestClient(fast) as client:
        first = client.get(f"/v1/batches/{batch_id}", headers=KEY)
        second = client.get(f"/v1/batches/{batch_id}", headers=KEY)  # held, then 200
        third = client.get(f"/v1/batches/{batch_id}", headers=KEY)
    assert (first.status_code, second.status_code, third.status_code) == (429, 200, 200)
    assert second.content == third.content
    assert [c.status for c in emulator.requests] == [429, 200, 200]
    assert answered == [True, True]  # the stalled one and the last (not the 429)


def test_the_lane_calls_the_emulator_as_patched_after_the_app_was_made() -> None:
    # As the route does: a test that counts (or breaks) retrieves by patching
    # the emulator after create_app sees the lane's too.
    emulator = Emulator()
    batch_id = _batch(emulator)
    app = create_app(emulator, api_keys={"k": "proj_a"})
    seen: list[str] = []
    real = emulator.retrieve_batch

    def counted(batch_id: str, **options: Any) -> Any:
        seen.append(batch_id)
        return real(batch_id, **options)

    emulator.retrieve_batch = counted  # type: ignore[method-assign]
    with TestClient(app) as client:
        assert client.get(f"/v1/batches/{batch_id}", headers=KEY).status_code == 200
    assert seen == [batch_id]
