"""Assert on the requests the emulator received."""

import pytest


def test_the_request_log(batch_emulator, batch_emulator_http):
    batch_emulator_http.post("/v1/batches", json={"endpoint": "/v1/nowhere"})
    batch_emulator_http.get("/v1/batches", params={"limit": 5})

    create, listing = batch_emulator.requests
    assert (create.method, create.path, create.status) == ("POST", "/v1/batches", 400)
    assert create.json() == {"endpoint": "/v1/nowhere"}
    assert listing.query == "limit=5"
    batch_emulator.assert_called("GET", "/v1/batches", times=1)

    with pytest.raises(AssertionError, match="expected DELETE /v1/files/\\* at least"):
        batch_emulator.assert_called("DELETE", "/v1/files/*")
