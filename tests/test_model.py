from typing import Any

import attrs
import pytest

import batchfsm as bf

BASE: dict[str, Any] = {
    "id": "batch_1",
    "endpoint": "/v1/embeddings",
    "input_file_id": "file-1",
    "completion_window": "24h",
    "status": bf.BatchStatus.VALIDATING,
    "created_at": 1700000000,
}


def test_statuses_are_the_api_strings():
    assert [s.value for s in bf.BatchStatus] == [
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    ]
    assert str(bf.BatchStatus.IN_PROGRESS) == "in_progress"
    assert {"failed", "completed", "expired", "cancelled"} == bf.TERMINAL_STATUSES


def test_batches_are_frozen_and_slotted():
    batch = bf.Batch(**BASE)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        batch.status = bf.BatchStatus.FAILED  # type: ignore[misc]
    assert not hasattr(batch, "__dict__")


def test_metadata_is_copied_and_read_only():
    source = {"k": "v"}
    batch = bf.Batch(**BASE, metadata=source)
    source["k"] = "changed"
    assert batch.metadata == {"k": "v"}
    with pytest.raises(TypeError):
        batch.metadata["k"] = "x"  # type: ignore[index]
    assert "metadata={'k': 'v'}" in repr(batch)
    assert hash(batch) == hash(bf.Batch(**BASE, metadata={"k": "v"}))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            {str(i): "v" for i in range(17)},
            "metadata: at most 16 pairs allowed, got 17",
        ),
        ({"k" * 65: "v"}, "key longer than 64 characters"),
        ({"k": "v" * 513}, "metadata.k: value longer than 512 characters"),
        ({"k": 1}, "metadata.k: expected str, got 1"),
        ({1: "v"}, "metadata: keys must be str, got 1"),
    ],
)
def test_metadata_limits_are_enforced_at_construction(metadata, message):
    with pytest.raises(ValueError, match=message):
        bf.Batch(**BASE, metadata=metadata)


def test_metadata_at_the_limits_is_fine():
    metadata = {f"{i:064d}": "v" * 512 for i in range(16)}
    assert bf.Batch(**BASE, metadata=metadata).metadata == metadata


def test_object_is_always_batch():
    with pytest.raises(ValueError, match="object: expected 'batch'"):
        bf.Batch(**BASE, object="file")  # type: ignore[arg-type]
