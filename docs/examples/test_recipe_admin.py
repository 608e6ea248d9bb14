"""A shared ``batchfsm serve --admin``, driven over HTTP (here in-process)."""

import httpx2
import pytest

from batchfsm.emulator import Emulator, EmulatorTransport, create_app


@pytest.fixture
def admin_http():
    # What `batchfsm serve --admin --api-key sk-test` serves, without a socket.
    app = create_app(Emulator(), api_key="sk-test", admin=True)
    transport = EmulatorTransport(app)
    headers = {"Authorization": "Bearer sk-test"}
    with httpx2.Client(
        transport=transport, base_url="http://emulator", headers=headers
    ) as http:
        yield http
    transport.close()


def test_faults_the_log_the_clock_and_reset_over_http(admin_http):
    assert admin_http.get("/health").json()["status"] == "ok"
    fault = {"path": "/v1/batches", "method": "GET", "status": 500, "times": 1}
    assert admin_http.post("/_admin/faults", json=fault).status_code == 200
    assert admin_http.get("/v1/batches").status_code == 500
    assert admin_http.get("/v1/batches").status_code == 200

    log = admin_http.get("/_admin/requests").json()["data"]
    assert [(c["method"], c["path"], c["status"]) for c in log] == [
        ("GET", "/v1/batches", 500),
        ("GET", "/v1/batches", 200),
    ]
    moved = admin_http.post("/_admin/clock/advance", json={"seconds": 60}).json()
    assert moved["time"] == 1_700_000_060
    assert admin_http.post("/_admin/reset").status_code == 200
    assert admin_http.get("/_admin/requests").json()["data"] == []
