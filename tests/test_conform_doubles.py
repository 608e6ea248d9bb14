"""conform's checks send what they mean to judge: seen in the emulator's request log."""

import httpx2

from batchfsm.conformance import run
from batchfsm.emulator import Emulator, EmulatorTransport, VirtualClock, create_app


def test_metadata_wording_creates_its_batches_with_a_real_file():
    clock = VirtualClock()
    emu = Emulator(clock=clock)
    transport = EmulatorTransport(create_app(emu))
    with httpx2.Client(transport=transport, base_url="http://emulator") as http:
        report = run(http, wait=clock.advance, only={"errors.metadata_wording"})
    transport.close()
    assert report.passed
    creates = emu.assert_called("POST", "/v1/batches", status=400, times=2)
    for call in creates:
        assert emu.files.get(call.json()["input_file_id"]) is not None, call


def test_happy_terminal_shows_the_errors_of_a_batch_that_failed():
    clock = VirtualClock()
    emu = Emulator(clock=clock, models={"/v1/chat/completions": frozenset({"other"})})
    transport = EmulatorTransport(create_app(emu))
    with httpx2.Client(transport=transport, base_url="http://emulator") as http:
        report = run(http, wait=clock.advance, only={"happy.terminal"})
    transport.close()
    (result,) = [r for r in report.results if r.id == "happy.terminal"]
    assert result.outcome == "fail"
    assert "ended 'failed'; its errors: " in result.evidence
    assert "model_not_found" in result.evidence
