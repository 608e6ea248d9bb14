"""check and check_trace take the official client's own objects and API dicts."""

import openai.types
import pytest

import batchfsm as bf


def _batch():
    b = bf.new_batch(
        id="batch_1", input_file_id="file-1", endpoint="/v1/embeddings",
        created_at=1_700_000_000,
    )  # fmt: skip
    return b, bf.advance(b, "start", at=1_700_000_005)


def test_check_trace_takes_openai_batches():
    first, running = _batch()
    theirs = [
        openai.types.Batch.model_validate(bf.to_dict(b)) for b in (first, running)
    ]
    assert bf.check_trace(theirs) == []
    backwards = bf.check_trace(list(reversed(theirs)))
    assert [(v.index, v.rule) for v in backwards] == [
        (1, "step.status"),
        (1, "step.set_once"),
    ]


def test_check_takes_an_openai_batch_and_a_dict():
    first, _ = _batch()
    theirs = openai.types.Batch.model_validate(bf.to_dict(first))
    assert bf.check(theirs) == []
    assert bf.check(bf.to_dict(first)) == []
    broken = bf.to_dict(first) | {"in_progress_at": 1_700_000_001}
    assert [v.rule for v in bf.check(broken)] == [
        v.rule for v in bf.check(bf.from_dict(broken))
    ]
    assert bf.check(broken)[0].index is None


def test_check_of_a_dict_that_does_not_parse_names_the_field():
    first, _ = _batch()
    (violation,) = bf.check(bf.to_dict(first) | {"status": "nope"})
    assert (violation.rule, violation.path, violation.batch_id) == (
        "schema", "status", "batch_1",
    )  # fmt: skip


@pytest.mark.parametrize("value", [42, "batch_1", None, [1]])
def test_anything_else_is_a_type_error_for_check(value):
    what = "a batchfsm.Batch, an API dict or an openai.types.Batch"
    with pytest.raises(TypeError, match=f"check\\(\\)'s batch must be {what}, got"):
        bf.check(value)
    # In a recording, it is one more document that does not parse.
    (violation,) = bf.check_trace([_batch()[0], value])
    assert (violation.rule, violation.index) == ("schema", 1)


def test_from_dict_and_loads_take_an_openai_batch():
    first, running = _batch()
    for ours in (first, running):
        theirs = openai.types.Batch.model_validate(bf.to_dict(ours))
        assert bf.from_dict(theirs) == ours
        assert bf.from_dict(theirs, strict=True) == ours
        assert bf.loads(theirs) == ours  # type: ignore[arg-type]


def test_from_dict_of_an_openai_batch_names_the_field_it_refuses():
    first, _ = _batch()
    counts = {"total": -1, "completed": 0, "failed": 0}
    theirs = openai.types.Batch.model_validate(
        bf.to_dict(first) | {"request_counts": counts}
    )
    with pytest.raises(bf.SchemaError) as info:
        bf.from_dict(theirs)
    assert [path for path, _ in info.value.errors] == ["request_counts.total"]


@pytest.mark.parametrize("value", [42, None, [1], object()])
def test_from_dict_of_anything_else_still_says_what_it_got(value):
    with pytest.raises(bf.SchemaError, match="expected object \\(Batch\\), got"):
        bf.from_dict(value)
