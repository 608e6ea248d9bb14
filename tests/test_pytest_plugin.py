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
