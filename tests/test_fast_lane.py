"""The fast lane: a batch is finished by the first retrieve after its creation."""

import io

import openai
import pytest

import batchfsm as bf
from batchfsm.emulator import Emulator, SystemClock, VirtualClock, make_input_file

STAMPS = ("in_progress_at", "finalizing_at", "completed_at")


def created(emu: Emulator, content: bytes) -> bf.Batch:
    upload = emu.create_file(content, "in.jsonl", "batch")
    return emu.create_batch(input_file_id=upload.id, endpoint="/v1/chat/completions")


def test_the_first_retrieve_answers_it_completed_with_every_stamp():
    clock = VirtualClock()
    emu = Emulator(clock=clock, finish_on_retrieve=True)
    batch = created(emu, make_input_file(5))
    assert batch.status is bf.BatchStatus.VALIDATING
    done = emu.retrieve_batch(batch.id)
    assert done.status is bf.BatchStatus.COMPLETED
    assert [getattr(done, s) for s in STAMPS] == [batch.created_at] * 3
    assert done.request_counts == bf.BatchRequestCounts(total=5, completed=5, failed=0)
    assert bf.check_trace([batch, done]) == []
    assert clock.now() == batch.created_at  # no time had to pass
    assert done.output_file_id is not None
    lines = emu.file_content(done.output_file_id).splitlines()
    assert len(lines) == 5


def test_its_end_is_written_as_any_batch_end_is():
    emu = Emulator(finish_on_retrieve=True)
    batch = created(emu, make_input_file(2))
    done = emu.retrieve_batch(batch.id)
    assert bf.check(done) == []  # the stamps of every status it passed
    [event] = emu.webhook_events()
    assert (event.type, event.batch_id) == ("batch.completed", batch.id)


def test_the_fast_lane_holds_with_a_background_worker():
    # serve runs a worker thread; a retrieve still waits for the batch's work.
    emu = Emulator(clock=SystemClock(), finish_on_retrieve=True)
    emu.start()
    try:
        for _ in range(20):
            batch = created(emu, make_input_file(3))
            done = emu.retrieve_batch(batch.id)
            assert done.status is bf.BatchStatus.COMPLETED, done
            assert bf.check_trace([batch, done]) == []
    finally:
        emu.stop()


def test_without_the_fast_lane_the_first_retrieve_finds_it_running():
    emu = Emulator(clock=SystemClock())
    emu.start()
    try:
        batch = created(emu, make_input_file(3))
        assert emu.retrieve_batch(batch.id).status is not bf.BatchStatus.COMPLETED
    finally:
        emu.stop()


def test_a_bad_input_fails_at_the_first_retrieve_with_its_errors():
    emu = Emulator(finish_on_retrieve=True)
    bad = created(emu, make_input_file(3, bad_lines={2: "{nope"}))
    failed = emu.retrieve_batch(bad.id)
    assert failed.status is bf.BatchStatus.FAILED
    assert failed.errors is not None and failed.errors.data is not None
    assert failed.errors.data[0].line == 2
    assert bf.check_trace([bad, failed]) == []


def test_phase_seconds_given_are_kept():
    emu = Emulator(finish_on_retrieve=True, request_seconds=2)
    assert (emu.validation_seconds, emu.request_seconds) == (0, 2)
    assert Emulator().request_seconds == Emulator().validation_seconds == 1


@pytest.mark.parametrize("db", [None, "sqlite"])
def test_serve_finish_on_retrieve_with_the_official_client(serve, tmp_path, db):
    args = ["--finish-on-retrieve"]
    if db:
        args += ["--db", str(tmp_path / "batches.db")]
    base = serve(*args)
    with openai.OpenAI(api_key="sk", base_url=f"{base}/v1") as client:
        for _ in range(3):
            upload = client.files.create(
                file=("in.jsonl", io.BytesIO(make_input_file(3))), purpose="batch"
            )
            batch = client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            done = client.batches.retrieve(batch.id)
            assert done.status == "completed"
            assert bf.check_trace([batch, done]) == []
            assert done.output_file_id is not None
            content = client.files.content(done.output_file_id).text
            assert len(content.splitlines()) == 3


def test_a_retrieve_runs_the_work_of_a_batch_another_process_created():
    # A batch its create did not run (another serve process's, on a shared
    # database): the worker looks every 0.5 s; the retrieve does not wait.
    from batchfsm.emulator import Work

    emu = Emulator(clock=SystemClock(), finish_on_retrieve=True)
    upload = emu.create_file(make_input_file(2), "in.jsonl", "batch")
    emu.start()
    try:
        for number in range(5):
            batch = bf.new_batch(
                id=f"batch_other{number}",
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                created_at=int(emu.clock.now()),
            )
            emu.batches.insert(batch, Work(due_at=batch.created_at))
            done = emu.retrieve_batch(batch.id)
            assert done.status is bf.BatchStatus.COMPLETED
    finally:
        emu.stop()
