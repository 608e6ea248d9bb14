import pytest

from tests.blocking import without

USER_TEST = """
import io, json
import pytest

@pytest.fixture
def batch_emulator_options():
    return {"request_seconds": 5}

def test_user_runs_a_batch(batch_emulator, batch_emulator_openai):
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/embeddings",
                       "body": {"model": "text-embedding-3-small", "input": "hi"}})
    upload = batch_emulator_openai.files.create(
        file=("in.jsonl", io.BytesIO(line.encode())), purpose="batch")
    batch = batch_emulator_openai.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h")
    assert batch_emulator.request_seconds == 5
    batch_emulator.clock.advance(60)
    assert batch_emulator_openai.batches.retrieve(batch.id).status == "completed"

def test_each_test_gets_a_fresh_emulator(batch_emulator_http):
    assert batch_emulator_http.get("/v1/batches").json()["data"] == []

@pytest.mark.parametrize("run", range(2))
def test_a_real_url_for_its_own_client(batch_emulator, batch_emulator_url, run):
    import httpx2
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/embeddings",
                       "body": {"model": "text-embedding-3-small", "input": "hi"}})
    with httpx2.Client(base_url=batch_emulator_url + "/") as http:
        assert http.get("batches").json()["data"] == []  # fresh each test
        upload = http.post("files", files={"file": ("in.jsonl", line.encode())},
                           data={"purpose": "batch"}).json()
        batch = http.post("batches", json={"input_file_id": upload["id"],
            "endpoint": "/v1/embeddings", "completion_window": "24h"}).json()
        batch_emulator.clock.advance(60)
        assert http.get("batches/" + batch["id"]).json()["status"] == "completed"

def test_the_events_its_code_caused(batch_emulator, batch_emulator_openai,
                                    batch_emulator_webhooks):
    client = batch_emulator_openai
    upload = client.files.create(file=("in.jsonl", io.BytesIO(b"{oops")),
                                 purpose="batch")
    batch = client.batches.create(input_file_id=upload.id,
        endpoint="/v1/embeddings", completion_window="24h")
    assert batch_emulator_webhooks.events() == []
    batch_emulator.clock.advance(60)
    (event,) = batch_emulator_webhooks.events()
    assert (event["type"], event["data"]["id"]) == ("batch.failed", batch.id)
    (got,) = batch_emulator_webhooks.receiver.received
    unwrapped = client.webhooks.unwrap(got.body, got.headers,
                                       secret=batch_emulator_webhooks.secret)
    assert unwrapped.data.id == batch.id
    assert batch_emulator_webhooks.url.startswith("http://127.0.0.1:")
"""


def _users_suite(pytester: pytest.Pytester) -> None:
    # A user's suite has no ``tests`` package of ours (a plain install ships none).
    pytester.makeconftest(without("tests"))
    pytester.makepyfile(test_user=USER_TEST)


def test_the_fixtures_work_in_a_users_suite(pytester: pytest.Pytester):
    _users_suite(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester):
    _users_suite(pytester)
    result = pytester.runpytest_subprocess(
        "-p", "no:batchfsm", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(errors=5)


@pytest.mark.parametrize(
    ("missing", "fixture", "extra"),
    [
        ("openai", "batch_emulator_openai", "openai"),
        ("httpx2", "batch_emulator_http", "server"),
        ("starlette", "batch_emulator_http", "server"),
        ("uvicorn", "batch_emulator_url", "server"),
    ],
)
def test_a_fixture_missing_its_extra_is_an_error_naming_it(
    pytester: pytest.Pytester, missing, fixture, extra
):
    pytester.makeconftest(without(missing))
    pytester.makepyfile(f"def test_it({fixture}):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    hint = f"install it with: pip install 'batchfsm[{extra}]'"
    report = result.stdout.str().split(" ERROR at setup of test_it ")[1]
    assert report.splitlines()[1] == f"{missing} is not installed; {hint}"
    assert "Traceback" not in report and "During handling" not in report


def test_the_emulator_fixture_needs_no_extra(pytester: pytest.Pytester):
    pytester.makeconftest(without("httpx2", "starlette", "uvicorn", "openai"))
    pytester.makepyfile(
        "def test_it(batch_emulator):\n    assert batch_emulator.clock.now() > 0\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


USER_DOUBLES_TEST = """
import json
import openai

def my_code_lists_batches():
    with openai.OpenAI(max_retries=0) as client:
        return client.batches.list().data

def my_retry_loop(attempts=5):
    for attempt in range(attempts):
        try:
            return my_code_lists_batches()
        except openai.RateLimitError:
            if attempt == attempts - 1:
                raise

def test_my_code_reaches_the_emulator(batch_emulator_env):
    assert my_code_lists_batches() == []
    batch_emulator_env.assert_called("GET", "/v1/batches", times=1)

def test_my_retry_loop_survives_two_429s(batch_emulator_env):
    batch_emulator_env.fail_next("/v1/batches", status=429, times=2)
    assert my_retry_loop() == []
    assert [c.status for c in batch_emulator_env.requests] == [429, 429, 200]

def test_models(batch_emulator_env):
    with openai.OpenAI() as client:
        assert "gpt-4o" in {m.id for m in client.models.list()}

def test_a_1_mb_upload_becomes_a_batch(batch_emulator_env):
    line = {"custom_id": "", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": "x" * 1000}}
    content = b"".join(json.dumps({**line, "custom_id": f"r{i}"}).encode() + b"\\n"
                       for i in range(1000))
    assert len(content) >= 1_000_000
    with openai.OpenAI() as client:
        upload = client.uploads.upload_file_chunked(
            file=content, bytes=len(content), filename="in.jsonl",
            mime_type="application/jsonl", purpose="batch", part_size=300_000)
        batch = client.batches.create(input_file_id=upload.file.id,
            endpoint="/v1/embeddings", completion_window="24h")
        batch_emulator_env.clock.advance(3600)
        assert client.batches.retrieve(batch.id).status == "completed"
"""


def test_the_test_double_habits_in_a_users_suite(pytester: pytest.Pytester):
    # OPENAI_* of the machine running our suite must not leak into it.
    pytester.makeconftest(without("tests"))
    pytester.makepyfile(test_user=USER_DOUBLES_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_the_async_fixtures(pytester: pytest.Pytester):
    pytester.makeconftest(without("tests"))
    pytester.makepyfile(
        """
import asyncio

def test_it(batch_emulator, batch_emulator_async_openai):
    batch_emulator.fail_next("/v1/models", status=500)
    async def main():
        async with batch_emulator_async_openai as client:
            try:
                await client.models.list()
            except Exception as exc:
                first = type(exc).__name__
            return first, len((await client.models.list()).data)
    first, count = asyncio.run(main())
    assert first == "InternalServerError" and count > 100
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
