"""advance's cheaper step check agrees with the full step rules on every move."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._movegen import MOVE_BUILDERS
from batchfsm._rules import SET_ONCE_FIELDS, move_step_ok, step_problems
from batchfsm._table import STAMPS
from batchfsm.strategies import batches, broken_dicts

# The statuses a move leaves.
_MOVING = sorted({status.value for status, _ in MOVE_BUILDERS})
# Few values, so that a change often meets the same value or another one.
_NAMES = {
    "model": ("m-1", "m-2"),
    "output_file_id": ("file-1", "file-2"),
    "error_file_id": ("file-1", "file-2"),
}


@st.composite
def _befores(draw: st.DrawFn) -> bf.Batch:
    """A batch, consistent or not, with some set-once fields perhaps rewritten."""
    if draw(st.booleans()):
        before = draw(batches(_MOVING))
    else:
        _, document = draw(broken_dicts())
        try:
            before = bf.from_dict(document)
        except bf.SchemaError:
            assume(False)
    donor = draw(batches())
    rewrite: dict[str, Any] = {}
    for name in [name for name in SET_ONCE_FIELDS if draw(st.booleans())]:
        value = getattr(donor, name)
        if name in STAMPS.values() and draw(st.booleans()):
            value = draw(st.integers(0, 2_000_000_000))
        elif name in _NAMES:
            value = draw(st.sampled_from(_NAMES[name]))
        rewrite[name] = value
    return attrs.evolve(before, **rewrite)


@settings(max_examples=200, deadline=None)
@given(_befores(), batches(), st.data())
def test_move_step_ok_is_the_step_rules(
    before: bf.Batch, donor: bf.Batch, data: st.DataObject
) -> None:
    moves = sorted(e.value for s, e in MOVE_BUILDERS if s is before.status)
    assume(moves)
    event = data.draw(st.sampled_from(moves))
    move, build = MOVE_BUILDERS[before.status, bf.Event(event)]
    names = [name for name in sorted(move.may_set) if data.draw(st.booleans())]
    changes = {
        name: data.draw(st.sampled_from(_NAMES[name]))
        if name in _NAMES
        else getattr(donor, name)
        for name in names
        if name in move.may_set
    }
    changes = {name: value for name, value in changes.items() if value is not None}
    stamp = STAMPS[move.dest]
    old = getattr(before, stamp)
    at = data.draw(
        st.sampled_from([old, donor.created_at])
        if old is not None
        else st.integers(0, 2_000_000_000)
    )
    after = build(before, at, changes)
    full = not step_problems(before, after)
    assert move_step_ok(before, after, stamp, changes) is full, step_problems(
        before, after
    )


@pytest.mark.parametrize(
    ("rewrite", "changes"),
    [
        ({"in_progress_at": 1_700_000_009}, {}),
        ({}, {"model": "m-2"}),
        ({}, {"model": "m-0"}),  # a value sorting before the old one, too
    ],
)
def test_a_move_that_rewrites_a_set_once_field_is_refused(
    rewrite: dict[str, Any], changes: dict[str, Any]
) -> None:
    """The cheap check refuses what the step rules refuse: a stamp or model reset."""
    batch = bf.new_batch(
        id="batch_1",
        input_file_id="file-1",
        endpoint="/v1/embeddings",
        created_at=1_700_000_000,
        model="m-1",
    )
    batch = attrs.evolve(batch, **rewrite)
    with pytest.raises(bf.InvalidTransition) as refused:
        bf.advance(batch, "start", at=1_700_000_010, **changes)
    assert [v.rule for v in refused.value.violations] == ["step.set_once"]
