import openai.types
import pytest
from hypothesis import given

import batchfsm as bf
from batchfsm.strategies import api_dicts, batches, broken_dicts, lifecycles

from .conftest import BATCH_KEYS


@given(batches())
def test_drawn_batches_pass_check_and_round_trip(batch):
    assert bf.check(batch) == []
    data = bf.to_dict(batch)
    assert bf.from_dict(data, strict=True) == batch
    theirs = openai.types.Batch.model_validate(data)
    assert theirs.model_dump() == data
    assert bf.from_dict(theirs.model_dump()) == batch


@pytest.mark.parametrize("status", list(bf.BatchStatus))
def test_status_narrows_the_draw(status):
    @given(batches(status=status))
    def inner(batch):
        assert batch.status is status

    inner()


@given(lifecycles(polls=True))
def test_lifecycles_start_new_and_move_legally(snapshots):
    assert snapshots[0].status is bf.BatchStatus.VALIDATING
    assert bf.check_trace(snapshots) == []


@given(api_dicts())
def test_api_dicts_have_every_key(data):
    assert data.keys() == BATCH_KEYS
    assert bf.to_dict(bf.from_dict(data)) == data


def test_broken_dicts_refuses_unknown_rules():
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        broken_dicts(rule="nope")
