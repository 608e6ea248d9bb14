"""The handler seam and the upstream gateway (issue #23 items 1 and 2).

The seam: async handlers run many requests of a batch at once, within the
bound, in the lines' order of ids (so the fake on the seam makes the same
files as the synchronous fake). The gateway: against real upstreams, a second
``batchfsm serve`` process, and a small server of the tests' own that answers
429, 500, hangs, drops connections and trickles; each ends in its documented
line, never a stuck batch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx2
import openai
import pytest

from batchfsm import TERMINAL_STATUSES, BatchStatus
from batchfsm._cli import main
from batchfsm.emulator import (
    Emulator,
    Reply,
    RequestLine,
    UpstreamHandler,
    fake_handler,
    make_input_file,
)
from batchfsm.emulator._dispatch import run_on_loop
from batchfsm.emulator._handlers import prompt_tokens

from .fault_upstream import SERVER_ERROR, FaultUpstream, fault_upstream

CHAT: Final = "/v1/chat/completions"
#: A hang guard for waits on a server, never a speed assertion.
PATIENCE = 60


def chat_lines(contents: list[str], model: str = "gpt-4o-mini") -> bytes:
    """One chat request per content, its custom_id the content itself."""
    return "\n".join(
        json.dumps(
            {
                "custom_id": content,
                "method": "POST",
                "url": CHAT,
                "body": {
                    "model": model,
                    "messages": [{"role": "user", "content": content}],
                },
            }
        )
        for content in contents
    ).encode()


def run(emu: Emulator, data: bytes) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Run ``data`` as one batch to its end; the batch and its lines by custom_id."""
    upload = emu.create_file(data, "in.jsonl", "batch")
    batch = emu.create_batch(input_file_id=upload.id, endpoint=CHAT)
    for _ in range(100):
        emu.clock.advance(60)  # type: ignore[attr-defined]
        batch = emu.retrieve_batch(batch.id)
        if batch.status in TERMINAL_STATUSES:
            break
    lines: dict[str, dict[str, Any]] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id is not None:
            for line in emu.file_content(file_id).decode().splitlines():
                item = json.loads(line)
                lines[item["custom_id"]] = item
    return batch, lines


# -- the seam --------------------------------------------------------------------


def test_the_fake_on_the_async_seam_makes_the_same_files_as_the_sync_fake() -> None:
    data = (
        make_input_file(599)
        + b"\n"
        + chat_lines([""]).replace(
            b'"messages": [{"role": "user", "content": ""}]', b'"messages": []'
        )
    )
    files = []
    for handler in (None, fake_handler):
        emu = Emulator(seed=7) if handler is None else Emulator(seed=7, handler=handler)
        batch, _ = run(emu, data)
        assert batch.request_counts.completed == 599
        assert batch.request_counts.failed == 1
        files.append(
            (
                emu.file_content(batch.output_file_id),
                emu.file_content(batch.error_file_id),
                batch.usage,
            )
        )
    assert files[0] == files[1]


def test_an_async_handler_runs_requests_at_once_within_the_bound() -> None:
    flying, most = [0], [0]

    async def slow(request: RequestLine) -> Reply:
        flying[0] += 1
        most[0] = max(most[0], flying[0])
        await asyncio.sleep(0.001)
        flying[0] -= 1
        return Reply(200, {"n": request.custom_id}, 1, 1)

    emu = Emulator(handler=slow, concurrency=5)
    batch, lines = run(emu, make_input_file(40))
    assert most[0] == 5  # all at once up to the bound, never past it
    assert batch.request_counts.completed == 40
    assert batch.usage.total_tokens == 80
    assert lines["request-7"]["response"]["body"] == {"n": "request-7"}


def test_an_async_handler_that_fails_fails_its_request_alone() -> None:
    async def flaky(request: RequestLine) -> Reply:
        if request.custom_id == "request-1":
            raise RuntimeError("boom")
        if request.custom_id == "request-2":
            return {"status_code": 200}  # type: ignore[return-value]
        return Reply(200, {}, 0, 0)

    batch, lines = run(Emulator(handler=flaky), make_input_file(4))
    assert batch.status is BatchStatus.COMPLETED
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    for custom_id, said in (("request-1", "boom"), ("request-2", "answered dict")):
        response = lines[custom_id]["response"]
        assert response["status_code"] == 500
        assert said in response["body"]["error"]["message"]


@pytest.mark.parametrize("ending", ["cancel", "expire"])
def test_the_seam_is_deterministic_through_a_cancel_and_an_expiry(ending: str) -> None:
    # Requests every 1,000 emulated seconds: the 24 h window holds 86 of 120.
    files = []
    for handler in (None, fake_handler):
        options: dict[str, Any] = {"seed": 3, "request_seconds": 1_000}
        if handler is not None:
            options["handler"] = handler
        emu = Emulator(**options)
        upload = emu.create_file(make_input_file(120), "in.jsonl", "batch")
        batch = emu.create_batch(input_file_id=upload.id, endpoint=CHAT)
        emu.clock.advance(40_000)  # type: ignore[attr-defined]
        if ending == "cancel":
            emu.cancel_batch(batch.id)
        emu.clock.advance(100_000)  # type: ignore[attr-defined]
        batch = emu.retrieve_batch(batch.id)
        assert batch.error_file_id and batch.output_file_id and batch.request_counts
        errors = emu.file_content(batch.error_file_id).decode().splitlines()
        codes = {json.loads(line)["error"]["code"] for line in errors}
        assert codes == {"batch_cancelled" if ending == "cancel" else "batch_expired"}
        assert 0 < batch.request_counts.completed < 120
        files.append((batch, emu.file_content(batch.output_file_id), "\n".join(errors)))
    assert files[0] == files[1]


def test_requests_timed_by_the_clock_stop_at_the_expiry() -> None:
    # request_seconds=0, as under --upstream: the clock alone says when the
    # window ends. It ends while request-4 runs: the run stops, nothing of it
    # is kept, and every request ends batch_expired.
    answered: list[str] = []

    async def slow(request: RequestLine) -> Reply:
        answered.append(request.custom_id)
        if request.custom_id == "request-4":
            emu.clock.advance(90_000)  # type: ignore[attr-defined]
        return Reply(200, {}, 1, 1)

    emu = Emulator(handler=slow, request_seconds=0, concurrency=1)
    batch, lines = run(emu, make_input_file(10))
    assert batch.status is BatchStatus.EXPIRED
    assert batch.expired_at == batch.expires_at
    assert {line["error"]["code"] for line in lines.values()} == {"batch_expired"}
    assert len(lines) == 10 and batch.usage.total_tokens == 0
    assert len(answered) <= 10  # and never sent again after the expiry


def test_a_handler_calling_the_emulator_does_not_wait_on_itself() -> None:
    seen: list[str] = []

    async def curious(request: RequestLine) -> Reply:
        seen.append(emu.retrieve_batch(batch_id).status.value)
        return Reply(200, {}, 0, 0)

    emu = Emulator(handler=curious)
    upload = emu.create_file(make_input_file(3), "in.jsonl", "batch")
    batch_id = emu.create_batch(input_file_id=upload.id, endpoint=CHAT).id
    emu.clock.advance(60)  # type: ignore[attr-defined]
    assert emu.retrieve_batch(batch_id).status is BatchStatus.COMPLETED
    assert seen == ["in_progress"] * 3


# -- the upstream handler against faults ------------------------------------------


@pytest.fixture
def faults() -> Iterator[FaultUpstream]:
    with fault_upstream() as upstream:
        yield upstream


@pytest.fixture
def gateway() -> Iterator[Callable[..., Emulator]]:
    """Emulators whose requests go upstream; their connections closed after."""
    handlers: list[UpstreamHandler] = []

    def make(url: str | dict[str, str], **options: Any) -> Emulator:
        settings = {"timeout": 0.5, "tries": 3, "backoff": 0.01, **options}
        handlers.append(UpstreamHandler(url, **settings))
        return Emulator(handler=handlers[-1], request_seconds=0, any_model=True, seed=1)

    yield make
    for handler in handlers:
        run_on_loop(handler.aclose())


def test_each_fault_ends_in_its_documented_line(
    faults: FaultUpstream, gateway: Callable[..., Emulator]
) -> None:
    contents = ["ok", "429-once", "500", "hang", "drop", "drop-once", "trickle", "text"]
    batch, lines = run(gateway(faults.base), chat_lines(contents))
    assert batch.status is BatchStatus.COMPLETED  # never stuck
    status = {cid: line["response"]["status_code"] for cid, line in lines.items()}
    assert status == {
        "ok": 200,
        "429-once": 200,
        "drop-once": 200,
        "500": 500,
        "hang": 504,
        "trickle": 504,
        "drop": 502,
        "text": 502,
    }
    assert all(line["error"] is None for line in lines.values())  # HTTP: fact 8
    # The upstream's own error body, as it sent it.
    assert lines["500"]["response"]["body"] == SERVER_ERROR
    kinds = {
        cid: lines[cid]["response"]["body"]["error"]["type"]
        for cid, code in status.items()
        if code != 200
    }
    assert kinds["hang"] == kinds["trickle"] == "upstream_timeout"
    assert kinds["drop"] == "upstream_unavailable"
    assert kinds["text"] == "upstream_error"
    assert "'hello'" in lines["text"]["response"]["body"]["error"]["message"]
    # Tried again until an answer, or three times in all; never more.
    assert faults.tries == {
        "ok": 1,
        "429-once": 2,
        "drop-once": 2,
        "500": 3,
        "hang": 3,
        "drop": 3,
        "trickle": 3,
        "text": 1,  # an answer, if a wrong one: not tried again
    }
    counts = batch.request_counts
    assert (counts.completed, counts.failed) == (3, 5)
    # usage: the sum of the upstream's answers (3 + 2 tokens each of three).
    assert (batch.usage.input_tokens, batch.usage.output_tokens) == (9, 6)


def test_a_retry_after_longer_than_the_backoff_bound_ends_the_tries(
    faults: FaultUpstream, gateway: Callable[..., Emulator]
) -> None:
    emu = gateway(faults.base, max_backoff=0.01)  # Retry-After 0.05 is too long
    _, lines = run(emu, chat_lines(["429-once"]))
    assert lines["429-once"]["response"]["status_code"] == 429
    assert faults.tries["429-once"] == 1


def test_routes_by_model_with_a_default_and_the_api_key(
    faults: FaultUpstream, gateway: Callable[..., Emulator]
) -> None:
    with fault_upstream() as other:
        emu = gateway({"gpt-4o": faults.base, "*": other.base}, api_key="sk-up")
        run(emu, chat_lines(["ok"], model="gpt-4o"))
        run(emu, chat_lines(["ok"], model="gpt-4o-mini"))
    assert faults.tries["ok"] == other.tries["ok"] == 1
    assert faults.headers[0]["authorization"] == "Bearer sk-up"
    emu = gateway({"gpt-4o": faults.base})
    _, lines = run(emu, chat_lines(["ok"], model="gpt-4o-mini"))
    response = lines["ok"]["response"]
    assert response["status_code"] == 404
    assert response["body"]["error"]["code"] == "model_not_found"
    assert faults.tries["ok"] == 1  # never sent


def test_requests_per_minute_hold_requests_back(faults: FaultUpstream) -> None:
    # A bucket of 2 per minute: two go at once, a third would wait ~30 s.
    handler = UpstreamHandler(faults.base, requests_per_minute=2)
    body = {"model": "m", "messages": [{"role": "user", "content": "ok"}]}
    line = RequestLine("a", "POST", CHAT, body, 0)

    async def three() -> list[bool]:
        sent = [asyncio.ensure_future(handler(line)) for _ in range(3)]
        deadline = time.monotonic() + PATIENCE  # a hang guard
        while sum(task.done() for task in sent) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        result = [task.done() for task in sent]
        for task in sent:
            task.cancel()
        return result

    done = run_on_loop(three())
    run_on_loop(handler.aclose())
    assert sorted(done) == [False, True, True]


def test_requests_in_flight_reach_the_concurrency_and_never_pass_it(
    faults: FaultUpstream,
) -> None:
    # 20 at once: more than one client's connections (they are spread over
    # several clients), and 30 sent, so that 10 wait for a slot.
    handler = UpstreamHandler(faults.base, concurrency=20)
    body = {"model": "m", "messages": [{"role": "user", "content": "held"}]}
    line = RequestLine("a", "POST", CHAT, body, 0)

    async def send() -> list[Reply]:
        return await asyncio.gather(*(handler(line) for _ in range(30)))

    sent = asyncio.run_coroutine_threadsafe(send(), _handlers_loop())
    deadline = time.monotonic() + PATIENCE  # a hang guard
    while faults.held_now < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # room for a request past the bound to arrive (none may)
    faults.release()
    replies = sent.result(PATIENCE)
    run_on_loop(handler.aclose())
    assert [r.status_code for r in replies] == [200] * 30
    assert faults.held_most == 20


def _handlers_loop() -> asyncio.AbstractEventLoop:
    from batchfsm.emulator import _dispatch

    return _dispatch._the_loop()


# -- real upstream processes --------------------------------------------------------


def _finish(client: openai.OpenAI, batch_id: str) -> Any:
    deadline = time.monotonic() + PATIENCE
    batch = client.batches.retrieve(batch_id)
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"stuck in {batch.status}"
        time.sleep(0.05)
        batch = client.batches.retrieve(batch_id)
    return batch


def _lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    text = client.files.content(file_id).text
    return {json.loads(x)["custom_id"]: json.loads(x) for x in text.splitlines()}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_serve_upstream_runs_a_batch_on_another_serve(
    serve: Callable[..., str],
    store: str,
    tmp_path: Path,
    official_client: Callable[[str], openai.OpenAI],
) -> None:
    # The gateway holds up to 64 connections to it from one address.
    upstream = serve("--seed", "3", "--max-connections-per-address", "128")
    db = () if store == "memory" else ("--db", str(tmp_path / "gateway.sqlite"))
    base = serve("--upstream", upstream, "--speed", "100", *db)
    client = official_client(base)
    data = make_input_file(120)
    lines = data.split(b"\n")
    # A message without a role: the upstream's 400.
    lines[9] = lines[9].replace(b'{"role":"user","content":"Say 9."}', b'"Say 9."')
    upload = client.files.create(file=("in.jsonl", b"\n".join(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
    )
    batch = _finish(client, batch.id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (119, 1)
    out, errors = (
        _lines(client, batch.output_file_id),
        _lines(client, batch.error_file_id),
    )
    assert len(out) == 119 and set(errors) == {"request-9"}
    bodies = [json.loads(x)["body"] for x in lines if x]
    # usage is the sum of what the upstream (the fake) counted.
    assert batch.usage.input_tokens == sum(
        prompt_tokens(CHAT, body) for i, body in enumerate(bodies) if i != 9
    )
    wrong = errors["request-9"]["response"]
    assert wrong["status_code"] == 400
    assert wrong["body"]["error"]["param"] == "messages[0]"
    # The upstream's direct answer to that body is the same error body.
    direct = httpx2.post(f"{upstream}{CHAT}", json=bodies[9])
    assert direct.json() == wrong["body"]


def test_two_gateways_on_postgresql_send_each_request_once(
    serve: Callable[..., str],
    faults: FaultUpstream,
    postgres_url: str,
    official_client: Callable[[str], openai.OpenAI],
) -> None:
    gateways = [
        serve("--db", postgres_url, "--upstream", faults.base, "--speed", "100")
        for _ in range(2)
    ]
    clients = [official_client(base) for base in gateways]
    ids = []
    for j in range(6):
        client = clients[j % 2]
        data = chat_lines([f"b{j}-r{i}" for i in range(40)])
        upload = client.files.create(file=("in.jsonl", data), purpose="batch")
        ids.append(
            client.batches.create(
                input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
            ).id
        )
    for batch_id in ids:
        batch = _finish(clients[1], batch_id)
        assert batch.status == "completed"
        assert batch.request_counts.completed == 40
        assert len(_lines(clients[0], batch.output_file_id)) == 40
    # No crash, no takeover: every request went upstream exactly once.
    assert len(faults.tries) == 240 and set(faults.tries.values()) == {1}


def test_a_cancel_stops_dispatching_and_ends_cancelled(
    serve: Callable[..., str],
    faults: FaultUpstream,
    official_client: Callable[[str], openai.OpenAI],
) -> None:
    base = serve(
        "--upstream",
        faults.base,
        "--upstream-concurrency",
        "4",
        "--speed",
        "10",
    )
    client = official_client(base)
    data = chat_lines(["hang"]).decode()
    many = "\n".join(
        data.replace('"custom_id": "hang"', f'"custom_id": "r{i}"') for i in range(20)
    )
    upload = client.files.create(file=("in.jsonl", many.encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
    )
    deadline = time.monotonic() + PATIENCE
    while len(faults.log) < 4:  # the first four are in flight, hanging
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.batches.cancel(batch.id)
    batch = _finish(client, batch.id)
    assert batch.status == "cancelled"
    assert (batch.request_counts.total, batch.request_counts.failed) == (20, 20)
    errors = _lines(client, batch.error_file_id)
    assert len(errors) == 20
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
    assert len(faults.log) == 4  # nothing dispatched after the cancel


def test_serve_refuses_a_bad_upstream_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--upstream", "ftp://x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--upstream must be URL or MODEL=URL" in err
    assert main(["serve", "--upstream", "http://x", "--upstream-tries", "0"]) == 2
    assert "--upstream-tries" in capsys.readouterr().err
