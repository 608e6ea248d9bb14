"""One root: every refusal batchfsm makes on purpose is a BatchFSMError."""

import pickle
from typing import Any

import pytest

import batchfsm as bf
from batchfsm._errors import UnknownEvent
from batchfsm._graph import TableError, check_table
from batchfsm._table import MOVES, Move
from batchfsm.emulator import ApiError
from batchfsm.testing import Refused

BASE: dict[str, Any] = {
    "id": "batch_1",
    "endpoint": "/v1/embeddings",
    "input_file_id": "file-1",
    "completion_window": "24h",
    "status": "validating",
    "created_at": 1,
}


def _new():
    return bf.new_batch(
        id="batch_1", input_file_id="file-1", endpoint="/v1/embeddings", created_at=1
    )


REFUSALS = {
    "unknown event (advance)": lambda: bf.advance(_new(), "begin", at=2),
    "unknown event (can)": lambda: bf.can(_new(), "begin"),
    "unknown event (BatchMachine)": lambda: bf.BatchMachine(_new()).trigger("begin"),
    "illegal move": lambda: bf.advance(_new(), "complete", at=2),
    "progress where no work runs": lambda: bf.progress(
        _new(), request_counts=bf.BatchRequestCounts(total=1, completed=0, failed=0)
    ),
    "bad document": lambda: bf.from_dict({"object": "batch"}),
    "bad text": lambda: bf.loads("{"),
    "bad window": lambda: bf.new_batch(
        id="b",
        input_file_id="f",
        endpoint="/v1/embeddings",
        created_at=1,
        completion_window="1h",
    ),
    "bad metadata at construction": lambda: bf.Batch(**BASE, metadata={"k": 1}),  # type: ignore[dict-item]
    "bad object at construction": lambda: bf.Batch(**BASE, object="file"),  # type: ignore[arg-type]
    "broken table": lambda: check_table(
        (
            *MOVES,
            Move(bf.Event.START, (bf.BatchStatus.COMPLETED,), bf.BatchStatus.FAILED),
        )
    ),
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_every_refusal_shares_the_root_and_pickles(refusal):
    with pytest.raises(bf.BatchFSMError) as info:
        REFUSALS[refusal]()
    exc = info.value
    if not isinstance(exc, TableError):  # a bug in batchfsm, not in the input
        assert isinstance(exc, ValueError)
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is type(exc) and str(again) == str(exc)


def test_unknown_event_names_the_events():
    with pytest.raises(UnknownEvent, match="unknown event 'begin'; events are: start"):
        bf.advance(_new(), "begin", at=2)


def test_the_emulator_and_testing_refusals_share_the_root():
    assert issubclass(ApiError, bf.BatchFSMError)
    assert issubclass(Refused, bf.BatchFSMError)
    assert isinstance(
        ApiError(404, "No batch found with id 'batch_x'."), bf.BatchFSMError
    )
    assert isinstance(Refused(409, {}), bf.BatchFSMError)


def test_model_refusals_name_the_field():
    with pytest.raises(bf.SchemaError) as info:
        bf.Batch(**BASE, metadata={"k": 1, "x" * 65: "v"})  # type: ignore[dict-item]
    assert [path for path, _ in info.value.errors] == [
        "metadata.k",
        "metadata." + "x" * 65,
    ]
