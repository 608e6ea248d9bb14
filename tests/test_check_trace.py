"""check_trace (and ``batchfsm check``): what is judged, and how often it is told."""

import json
from typing import Any

import attrs
import pytest

import batchfsm as bf
from batchfsm._cli import main


def _created(batch_id: str = "batch_1") -> bf.Batch:
    return bf.new_batch(
        id=batch_id, input_file_id="f", endpoint="/v1/embeddings", created_at=100
    )


def _broken() -> bf.Batch:
    """A batch wrong on its own: completed with no finalizing or in_progress stamp."""
    return attrs.evolve(_created(), status=bf.BatchStatus.COMPLETED, completed_at=120)


def _at(index: int, violations: list[bf.Violation]) -> list[bf.Violation]:
    return [attrs.evolve(v, index=index) for v in violations]


@pytest.mark.parametrize("as_dict", [False, True])
def test_the_first_snapshot_of_a_batch_is_judged_on_its_own(as_dict):
    broken = _broken()
    own = bf.check(broken)
    assert own  # the batch really is wrong
    snapshot = bf.to_dict(broken) if as_dict else broken
    assert bf.check_trace([snapshot]) == _at(0, own)
    # ... also when another batch came first.
    other = _created("batch_0")
    assert bf.check_trace([other, snapshot]) == _at(1, own)


def test_batchfsm_check_reports_a_first_snapshot_broken_on_its_own(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(bf.to_dict(_broken())) + "\n")
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("#0 batch_1 stamp.missing @ ")
    assert out[-1] == "1 snapshot(s) of 1 batch(es): 2 violation(s)"


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_broken_poll_repeated_is_reported_once(as_dict):
    # Equal copies, not the same object: a poller parses each answer afresh.
    def poll(batch: bf.Batch) -> Any:
        return bf.to_dict(batch) if as_dict else attrs.evolve(batch)

    broken = _broken()
    own = bf.check(broken)
    assert bf.check_trace([poll(broken) for _ in range(3)]) == _at(0, own)
    # A broken step, polled again unchanged, is told once too.
    running = bf.advance(_created(), "start", at=110)
    back = _created()  # in_progress back to validating
    trace = [poll(running), poll(back), poll(back), poll(back)]
    violations = bf.check_trace(trace)
    assert violations
    assert {v.index for v in violations} == {1}


def test_a_broken_poll_seen_again_after_a_change_is_judged_again():
    running = bf.advance(_created(), "start", at=110)
    back = _created()
    violations = bf.check_trace([running, back, running, back])
    assert {v.index for v in violations} == {1, 3}
