import pytest

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
"""


def test_the_fixtures_work_in_a_users_suite(pytester: pytest.Pytester):
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester):
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:batchfsm", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(errors=4)
