from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._invariants import _check, _check_step, _snapshot_ok, _step_ok
from batchfsm._rules import _getter
from batchfsm.strategies import BROKEN_RULES, broken_dicts, lifecycles, traces

from .conftest import REFERENCE_EXAMPLES, load_json

STEP_RULES = {rule for rule in bf.RULES if rule.startswith("step.")}


@given(traces(max_batches=4))
def test_every_drawn_trace_passes(trace):
    assert bf.check_trace(trace) == []
    assert bf.check_trace(bf.to_dict(b) for b in trace) == []


@pytest.mark.parametrize("rule", sorted(BROKEN_RULES))
@given(data=st.data())
def test_a_snapshot_broken_one_way_is_flagged_with_that_rule_only(rule, data):
    _, document = data.draw(broken_dicts(rule=rule))
    if rule in ("schema", "number.negative"):
        with pytest.raises(bf.SchemaError):
            bf.from_dict(document)
        violations = bf.check_trace([document])
        assert {v.rule for v in violations} == {"schema"}
        assert all(v.index == 0 and v.batch_id == document["id"] for v in violations)
        return
    violations = bf.check(bf.from_dict(document))
    assert {v.rule for v in violations} == {rule}
    assert all(v.batch_id == document["id"] and v.path for v in violations)


def test_every_rule_is_exercised():
    # Each single-snapshot rule has a breaker; each step rule a test below.
    assert set(bf.RULES) == BROKEN_RULES | STEP_RULES


def test_reference_examples_are_consistent():
    for path in REFERENCE_EXAMPLES:
        assert bf.check(bf.from_dict(load_json(path))) == [], path.name


# -- steps: a trace mutated to break one step rule is flagged with it --------------


def mutate_later(snapshots: list[bf.Batch], **changes: Any) -> list[bf.Batch]:
    *head, last = snapshots
    return [*head, attrs.evolve(last, **changes)]


@given(lifecycles(status="completed", polls=True))
def test_a_rewound_status_breaks_step_status(snapshots):
    trace = [*snapshots, snapshots[0]]
    rules = {v.rule for v in bf.check_trace(trace) if v.index == len(trace) - 1}
    assert "step.status" in rules


@given(lifecycles(status="completed"))
def test_a_changed_immutable_field_breaks_step_immutable(snapshots):
    trace = mutate_later(snapshots, endpoint="/v1/other")
    assert {v.rule for v in bf.check_trace(trace)} == {"step.immutable"}


@given(lifecycles(status="completed"))
def test_a_replaced_model_breaks_step_set_once(snapshots):
    last = snapshots[-1]
    trace = [*snapshots, attrs.evolve(last, model="another-model")]
    assert {v.rule for v in bf.check_trace(trace)} == {"step.set_once"}


@given(lifecycles(status="completed"))
def test_decreasing_counts_break_step_counts(snapshots):
    last = snapshots[-1]
    counts = last.request_counts
    assert counts is not None
    trace = [
        *snapshots,
        attrs.evolve(
            last,
            request_counts=attrs.evolve(
                counts, total=counts.total - 1, completed=0, failed=0
            ),
        ),
    ]
    rules = {v.rule for v in bf.check_trace(trace)}
    assert "step.counts" in rules


@given(lifecycles(status="completed"))
def test_vanished_usage_breaks_step_usage(snapshots):
    last = snapshots[-1]
    trace = [*snapshots, attrs.evolve(last, usage=None)]
    assert {v.rule for v in bf.check_trace(trace)} == {"step.usage"}


def test_step_identity_and_jumps():
    created = bf.new_batch(
        id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=100
    )
    other = attrs.evolve(created, id="batch_2")
    assert [v.rule for v in bf.check_step(created, other)] == ["step.identity"]
    # A poller that missed in_progress and finalizing sees a legal jump ...
    done = bf.advance(
        bf.advance(bf.advance(created, "start", at=110), "finalize", at=120),
        "complete",
        at=130,
    )
    assert bf.check_step(created, done) == []
    # ... but not one whose skipped statuses left no stamps.
    jumped = attrs.evolve(created, status=bf.BatchStatus.COMPLETED, completed_at=130)
    assert {v.rule for v in bf.check(jumped)} == {"stamp.missing"}
    assert {v.path for v in bf.check(jumped)} == {"in_progress_at", "finalizing_at"}


def test_check_trace_judges_each_batch_separately_and_reports_indexes():
    a = bf.new_batch(
        id="batch_a", input_file_id="f", endpoint="/v1/embeddings", created_at=100
    )
    b = attrs.evolve(a, id="batch_b")
    a1 = bf.advance(a, "start", at=105)
    trace = [a, b, a1, b, a]  # batch_a goes back at index 4
    violations = bf.check_trace(trace)
    assert {(v.index, v.batch_id) for v in violations} == {(4, "batch_a")}


def test_check_trace_reports_schema_errors_and_goes_on():
    good = bf.to_dict(
        bf.new_batch(
            id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=100
        )
    )
    violations = bf.check_trace(
        [good, good | {"status": "running"}, [1], good]  # type: ignore[list-item]
    )
    assert [(v.rule, v.index, v.path, v.batch_id) for v in violations] == [
        ("schema", 1, "status", "batch_1"),
        ("schema", 2, None, None),
    ]


def test_violation_messages_are_readable():
    batch = bf.new_batch(
        id="batch_1", input_file_id="f", endpoint="/v1/embeddings", created_at=100
    )
    broken = attrs.evolve(
        batch,
        status=bf.BatchStatus.FAILED,
        failed_at=90,
        request_counts=bf.BatchRequestCounts(total=1, completed=1, failed=1),
    )
    assert bf.check(broken) == [
        bf.Violation(
            "stamp.order",
            "failed_at (90) is earlier than created_at (100)",
            "failed_at",
            None,
            "batch_1",
        ),
        bf.Violation(
            "counts.sum",
            "completed + failed = 2 > total = 1",
            "request_counts",
            None,
            "batch_1",
        ),
        bf.Violation(
            "errors.missing",
            "a failed batch has no errors.data",
            "errors.data",
            None,
            "batch_1",
        ),
    ]


# -- the predicates advance runs agree with the rules ------------------------------

# A step between two batches is judged on identity alone, so the id stays; the
# model itself refuses an ``object`` other than "batch".
BATCH_FIELDS = [
    field.name for field in attrs.fields(bf.Batch) if field.name not in ("id", "object")
]


@given(broken_dicts())
def test_generated_snapshot_predicate_agrees_with_the_rules(case):
    _, document = case
    try:
        batch = bf.from_dict(document)
    except bf.SchemaError:
        return
    assert _snapshot_ok(batch) is (not _check(batch))


def nudged(value: Any) -> st.SearchStrategy[Any]:
    """``value`` changed a little: numbers by one either way, one part at a time."""
    if value is None:
        return st.none()
    if isinstance(value, bf.BatchStatus):
        return st.sampled_from(bf.BatchStatus)
    if isinstance(value, int):
        return st.sampled_from([value - 1, value + 1, -1])
    if isinstance(value, str):
        return st.just(value + "x")
    if attrs.has(type(value)):
        parts = [f.name for f in attrs.fields(type(value))]
        return st.sampled_from(parts).flatmap(
            lambda name: nudged(getattr(value, name)).map(
                lambda new: attrs.evolve(value, **{name: new})
            )
        )
    return st.just(value)


@given(lifecycles(polls=True), lifecycles(polls=True), st.data())
def test_generated_predicates_agree_with_the_rules_on_mixed_snapshots(
    snapshots, others, data
):
    # Graft fields of another batch's snapshot onto this one's, or nudge them, to
    # reach many combinations of well-typed values that break (or keep) the rules.
    pick = st.sampled_from
    before = data.draw(pick(snapshots))
    after = data.draw(pick(snapshots))
    changes = {}
    for name in data.draw(st.lists(pick(BATCH_FIELDS), max_size=3)):
        graft = getattr(data.draw(pick(others)), name)
        changes[name] = data.draw(st.just(graft) | nudged(getattr(after, name)))
    after = attrs.evolve(after, **changes)
    for snapshot in (before, after):
        assert _snapshot_ok(snapshot) is (not _check(snapshot))
    assert _step_ok(before, after) is (not _check_step(before, after))
    assert _step_ok(after, before) is (not _check_step(after, before))
    assert bf.check_step(before, after) == _check_step(before, after)


# -- each step rule, broken alone, deterministically ---------------------------------

from batchfsm._graph import FIELD_STATUSES, REACHABLE  # noqa: E402
from batchfsm._invariants import step_ok  # noqa: E402
from batchfsm._rules import IMMUTABLE_FIELDS as _IMMUTABLE  # noqa: E402
from batchfsm._rules import SET_ONCE_FIELDS as _SET_ONCE  # noqa: E402

USAGE = bf.BatchUsage(
    input_tokens=100,
    input_tokens_details=bf.InputTokensDetails(cached_tokens=10),
    output_tokens=50,
    output_tokens_details=bf.OutputTokensDetails(reasoning_tokens=5),
    total_tokens=150,
)


def one_per_status() -> dict[bf.BatchStatus, bf.Batch]:
    """A consistent batch in each status, every optional field it may hold set."""
    new = bf.new_batch(
        id="batch_1",
        input_file_id="file-in",
        endpoint="/v1/embeddings",
        created_at=1_000,
        metadata={"k": "v"},
    )
    counts = bf.BatchRequestCounts(total=10, completed=0, failed=0)
    running = bf.advance(new, "start", at=1_010, request_counts=counts, model="m")
    running = bf.progress(
        running,
        request_counts=bf.BatchRequestCounts(total=10, completed=5, failed=3),
        usage=USAGE,
    )
    done = bf.BatchRequestCounts(total=10, completed=7, failed=3)
    results = {"output_file_id": "file-out", "error_file_id": "file-err"}
    finalizing = bf.advance(running, "finalize", at=1_020, request_counts=done)
    cancelling = bf.advance(running, "cancel", at=1_020)
    errors = bf.BatchErrors(data=(bf.BatchError(code="invalid_json_line", line=1),))
    batches = [
        new,
        running,
        finalizing,
        cancelling,
        bf.advance(new, "fail", at=1_010, errors=errors),
        bf.advance(finalizing, "complete", at=1_030, **results),
        bf.advance(running, "expire", at=100_000, **results),
        bf.advance(cancelling, "mark_cancelled", at=1_030, **results),
    ]
    by_status = {b.status: b for b in batches}
    assert set(by_status) == set(bf.BatchStatus)
    return by_status


BY_STATUS = one_per_status()


def step_rules(before: bf.Batch, after: bf.Batch) -> list[str]:
    """The step rules broken, with the predicate advance runs held to them."""
    reference = [v.rule for v in _check_step(before, after)]
    assert step_ok(before, after) is (not reference)
    assert [v.rule for v in bf.check_step(before, after)] == reference
    return reference


@pytest.mark.parametrize("before", list(bf.BatchStatus))
@pytest.mark.parametrize("after", list(bf.BatchStatus))
def test_every_status_to_every_status_fast_and_reference_agree(before, after):
    # Exhaustive, no sampling: the status alone changes, so step.status is the
    # only rule that can break; and between the canonical snapshots of the two
    # statuses, the generated step check answers as the reference does.
    batch = BY_STATUS[before]
    expected = [] if after in REACHABLE[before] else ["step.status"]
    assert step_rules(batch, attrs.evolve(batch, status=after)) == expected
    step_rules(batch, BY_STATUS[after])


def test_a_terminal_batch_that_changes_in_any_other_way_breaks_step_terminal():
    for status in bf.TERMINAL_STATUSES:
        batch = BY_STATUS[status]
        assert step_rules(batch, batch) == []
        grown = attrs.evolve(
            USAGE,
            input_tokens=101,
            total_tokens=151,
        )
        assert step_rules(batch, attrs.evolve(batch, usage=grown)) == ["step.terminal"]
    # Not terminal: the same growth is work in progress.
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    grown = attrs.evolve(USAGE, input_tokens=101, total_tokens=151)
    assert step_rules(running, attrs.evolve(running, usage=grown)) == []


@pytest.mark.parametrize("counter", ["total", "completed", "failed", None])
def test_each_request_counter_going_down_breaks_step_counts(counter):
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    counts = running.request_counts
    assert counts is not None
    new = (
        None
        if counter is None
        else attrs.evolve(counts, **{counter: getattr(counts, counter) - 1})
    )
    after = attrs.evolve(running, request_counts=new)
    assert step_rules(running, after) == ["step.counts"]
    if counter is not None:  # and going up is progress
        more = attrs.evolve(counts, **{counter: getattr(counts, counter) + 1})
        assert step_rules(running, attrs.evolve(running, request_counts=more)) == []


@pytest.mark.parametrize("part", ["input_tokens", "output_tokens", None])
def test_each_usage_part_going_down_breaks_step_usage(part):
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    new = (
        None
        if part is None
        else attrs.evolve(USAGE, **{part: getattr(USAGE, part) - 1})
    )
    assert step_rules(running, attrs.evolve(running, usage=new)) == ["step.usage"]


# ``object`` is immutable too, but the model refuses any value but "batch".
@pytest.mark.parametrize("field", [f for f in _IMMUTABLE if f != "object"])
def test_each_immutable_field_changed_alone_breaks_step_immutable(field):
    batch = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    old = getattr(batch, field)
    if isinstance(old, int):
        new: Any = old + 1
    elif isinstance(old, str):
        new = old + "x"
    else:
        new = {"k": "w"}
    after = attrs.evolve(batch, **{field: new})
    # created_at is a stamp as well: written once, and fixed at creation.
    also = ["step.set_once"] if field in _SET_ONCE else []
    assert step_rules(batch, after) == ["step.immutable", *also]


@pytest.mark.parametrize("field", _SET_ONCE)
def test_each_set_once_field_rewritten_alone_breaks_step_set_once(field):
    batch = next(b for b in BY_STATUS.values() if getattr(b, field) is not None)
    old = getattr(batch, field)
    if isinstance(old, int):
        new: Any = old + 1
    elif isinstance(old, str):
        new = old + "x"
    else:
        new = bf.BatchErrors(data=(bf.BatchError(code="other"),))
    after = attrs.evolve(batch, **{field: new})
    expected = ["step.immutable"] if field in _IMMUTABLE else []
    expected.append("step.set_once")
    assert step_rules(batch, after) == expected
    # Cleared is rewritten too.
    cleared: dict[str, Any] = {field: None}
    assert step_rules(batch, attrs.evolve(batch, **cleared)) == expected


@pytest.mark.parametrize("other", ["batch_0", "batch_2"], ids=["before", "after"])
def test_another_id_breaks_step_identity_alone(other):
    # batch_1 becomes an id sorting before it or after it: either is another batch.
    batch = BY_STATUS[bf.BatchStatus.COMPLETED]
    assert step_rules(batch, attrs.evolve(batch, id=other)) == ["step.identity"]


def test_every_step_rule_has_a_test_breaking_it_alone():
    covered = {
        "step.identity",
        "step.status",
        "step.immutable",
        "step.set_once",
        "step.counts",
        "step.usage",
        "step.terminal",
    }
    assert covered == STEP_RULES


def test_a_stamp_set_implies_the_stamps_before_it_on_every_path():
    # An expired batch need not have run; but one that was finalizing ran.
    expired = BY_STATUS[bf.BatchStatus.EXPIRED]
    assert bf.check(expired) == []
    skipped = attrs.evolve(expired, finalizing_at=2_000, in_progress_at=None)
    assert [(v.rule, v.path) for v in bf.check(skipped)] == [
        ("stamp.missing", "in_progress_at")
    ]


def test_a_malformed_snapshot_is_never_passed_silently():
    # attrs does not check types: a stamp that is not a number makes the fast
    # predicate raise; the reporting form then raises too, instead of "no problem".
    broken = attrs.evolve(BY_STATUS[bf.BatchStatus.IN_PROGRESS], in_progress_at="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bf.check(broken)


# -- single-snapshot rules at their boundaries ---------------------------------------


@pytest.mark.parametrize(
    ("completed", "rules"), [(7, []), (8, ["counts.sum"]), (9, ["counts.sum"])]
)
def test_counts_sum_holds_up_to_the_total_exactly(completed, rules):
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    counts = bf.BatchRequestCounts(total=10, completed=completed, failed=3)
    assert [
        v.rule for v in bf.check(attrs.evolve(running, request_counts=counts))
    ] == rules


@pytest.mark.parametrize("status", list(bf.BatchStatus))
def test_every_field_a_status_forbids_is_flagged_alone(status):
    batch = BY_STATUS[status]
    for field, allowed in FIELD_STATUSES.items():
        if status in allowed:
            continue
        value: Any = "file-x"
        if field == "errors":
            value = bf.BatchErrors(data=(bf.BatchError(code="x"),))
        broken = attrs.evolve(batch, **{field: value})
        assert [(v.rule, v.path) for v in bf.check(broken)] == [
            ("field.unexpected", field)
        ]


def _usage_with(part: str, value: int) -> bf.BatchUsage:
    if part == "cached_tokens":
        return attrs.evolve(USAGE, input_tokens_details=bf.InputTokensDetails(value))
    if part == "reasoning_tokens":
        return attrs.evolve(USAGE, output_tokens_details=bf.OutputTokensDetails(value))
    changes: dict[str, Any] = {part: value}
    return attrs.evolve(USAGE, **changes)


@pytest.mark.parametrize(
    "part",
    [
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "total_tokens",
    ],
)
@pytest.mark.parametrize("value", [0, -1])
def test_each_token_count_below_zero_breaks_number_negative(part, value):
    # from_dict refuses a negative count; a batch built by hand is checked here.
    done = BY_STATUS[bf.BatchStatus.COMPLETED]
    rules = {
        v.rule for v in bf.check(attrs.evolve(done, usage=_usage_with(part, value)))
    }
    assert ("number.negative" in rules) is (value < 0)


def test_a_rule_reading_no_one_or_several_fields_gets_a_tuple_of_them():
    done = BY_STATUS[bf.BatchStatus.COMPLETED]
    assert _getter(())(done) == ()
    assert _getter(("id",))(done) == (done.id,)
    assert _getter(("id", "status"))(done) == (done.id, done.status)


@pytest.mark.parametrize(
    ("shift", "rules"),
    [(-1, ["expires_at.window"]), (0, []), (1, ["expires_at.window"])],
)
def test_expires_at_is_created_at_plus_the_window_exactly(shift, rules):
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    expected = running.created_at + 24 * 3600
    assert running.completion_window == "24h"
    found = bf.check(attrs.evolve(running, expires_at=expected + shift))
    assert [v.rule for v in found] == rules
    for v in found:
        assert v.message == (
            f"expires_at is {expected + shift}, "
            f"expected created_at + 86400 = {expected}"
        )


@pytest.mark.parametrize("counter", ["total", "completed", "failed"])
@pytest.mark.parametrize("value", [0, -1])
def test_each_request_count_below_zero_breaks_number_negative(counter, value):
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    assert running.request_counts is not None
    counts = attrs.evolve(running.request_counts, **{counter: value})
    found = bf.check(attrs.evolve(running, request_counts=counts))
    assert ("number.negative" in {v.rule for v in found}) is (value < 0)


@pytest.mark.parametrize("created_at", [0, -1])
def test_a_created_at_below_zero_breaks_number_negative(created_at):
    # new_batch refuses a negative created_at; a batch built by hand is checked.
    b = bf.new_batch(
        id="batch_1",
        input_file_id="file-1",
        endpoint="/v1/embeddings",
        created_at=0,
    )
    b = attrs.evolve(b, created_at=created_at, expires_at=created_at + 24 * 3600)
    found = [(v.rule, v.path) for v in bf.check(b)]
    assert found == ([("number.negative", "created_at")] if created_at < 0 else [])


def test_a_malformed_batch_is_never_ok():
    # Built by hand past the model's checks: a count held as a str makes the
    # rules raise; the predicates must answer False, not pass it.
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    counts: Any = {"total": 2, "completed": "0", "failed": 0}
    bad = attrs.evolve(running, request_counts=bf.BatchRequestCounts(**counts))
    assert _snapshot_ok(bad) is False
    assert step_ok(running, bad) is False
    assert step_ok(bad, running) is False


def test_a_created_at_below_zero_before_later_stamps_breaks_number_negative():
    # The stamps are in order, so only the first one's sign tells.
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    b = attrs.evolve(running, created_at=-1, in_progress_at=5, expires_at=-1 + 86400)
    found = [(v.rule, v.path) for v in bf.check(b)]
    assert found == [("number.negative", "created_at")]


def test_a_created_at_of_zero_is_not_negative_when_a_stamp_is_missing():
    running = BY_STATUS[bf.BatchStatus.IN_PROGRESS]
    b = attrs.evolve(running, created_at=0, in_progress_at=None, expires_at=86400)
    rules = [v.rule for v in bf.check(b)]
    assert rules
    assert "number.negative" not in rules


@pytest.mark.parametrize("status", [bf.BatchStatus.FAILED, bf.BatchStatus.COMPLETED])
@pytest.mark.parametrize("tag", ["dict", "object", "list"])
def test_an_errors_object_other_than_list_breaks_errors_object(status, tag):
    # Checked in every status that carries errors, failed or not; "dict" sorts
    # before "list", "object" after it.
    errors = bf.BatchErrors(object=tag, data=(bf.BatchError(code="c"),))
    found = bf.check(attrs.evolve(BY_STATUS[status], errors=errors))
    assert ("errors.object" in {v.rule for v in found}) is (tag != "list")


@pytest.mark.parametrize(
    ("shift", "rules"), [(-1, ["usage.total"]), (0, []), (1, ["usage.total"])]
)
def test_total_tokens_is_input_plus_output_exactly(shift, rules):
    done = BY_STATUS[bf.BatchStatus.COMPLETED]
    assert done.usage is not None
    usage = attrs.evolve(done.usage, total_tokens=done.usage.total_tokens + shift)
    assert [v.rule for v in bf.check(attrs.evolve(done, usage=usage))] == rules


def test_a_wrong_total_tokens_is_reported_with_the_sum_it_should_be():
    done = BY_STATUS[bf.BatchStatus.COMPLETED]  # 100 input + 50 output tokens
    assert done.usage is not None
    usage = attrs.evolve(done.usage, total_tokens=151)
    assert bf.check(attrs.evolve(done, usage=usage)) == [
        bf.Violation(
            "usage.total",
            "total_tokens = 151, input + output = 150",
            "usage.total_tokens",
            None,
            "batch_1",
        )
    ]
