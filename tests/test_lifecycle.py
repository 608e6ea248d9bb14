import inspect
import itertools
import pickle
import re
import threading
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._graph import FIELD_STATUSES, TOPO_ORDER, TableError, check_table
from batchfsm._table import MOVES, STAMPS, Move
from batchfsm.strategies import batches, events, lifecycles

S, E = bf.BatchStatus, bf.Event
STAMP_FIELDS = set(STAMPS.values())
USAGE = bf.BatchUsage(
    input_tokens=1,
    input_tokens_details=bf.InputTokensDetails(cached_tokens=0),
    output_tokens=1,
    output_tokens_details=bf.OutputTokensDetails(reasoning_tokens=0),
    total_tokens=2,
)


def fresh(**kw: Any) -> bf.Batch:
    return bf.new_batch(
        id="batch_1",
        input_file_id="file-1",
        endpoint="/v1/chat/completions",
        created_at=1_700_000_000,
        **kw,
    )


def stamps(batch: bf.Batch) -> dict[str, int | None]:
    return {name: getattr(batch, name) for name in STAMP_FIELDS}


# -- new_batch ---------------------------------------------------------------------


def test_new_batch_is_validating_with_its_window():
    batch = fresh(metadata={"k": "v"}, model="gpt-4o")
    assert batch.status is S.VALIDATING
    assert batch.expires_at == 1_700_000_000 + 86_400
    assert batch.request_counts == bf.BatchRequestCounts(total=0, completed=0, failed=0)
    assert bf.check(batch) == []


def test_new_batch_rejects_other_windows_and_bad_input():
    with pytest.raises(
        bf.SchemaError, match="completion_window: expected one of '24h'"
    ):
        fresh(completion_window="48h")
    with pytest.raises(bf.SchemaError, match=r"metadata\.k: value longer than 512"):
        fresh(metadata={"k": "v" * 513})
    with pytest.raises(TypeError, match="created_at"):
        bf.new_batch(
            id="b",
            input_file_id="f",
            endpoint="/v1/embeddings",
            created_at="now",  # type: ignore[arg-type]
        )
    # The edges of Unix seconds: 0 is a time, -1 is not.
    assert (
        bf.new_batch(
            id="b", input_file_id="f", endpoint="/v1/embeddings", created_at=0
        ).expires_at
        == 86_400
    )
    with pytest.raises(TypeError, match=r"created_at: expected Unix seconds .* -1"):
        bf.new_batch(
            id="b", input_file_id="f", endpoint="/v1/embeddings", created_at=-1
        )


# -- advance: every status x every event -------------------------------------------


@given(batches(), events(), st.integers(0, 10_000))
def test_every_legal_move_stamps_exactly_its_own_field(batch, event, delay):
    at = max(v for v in stamps(batch).values() if v is not None) + delay
    if event is E.EXPIRE:
        at = max(at, batch.expires_at)
    legal = bf.can(batch, event)
    assert legal == (event in bf.allowed_events(batch.status))
    if not legal:
        with pytest.raises(bf.InvalidTransition) as info:
            bf.advance(batch, event, at=at)
        error = info.value
        assert (error.status, error.event) == (batch.status, event)
        assert error.allowed == bf.allowed_events(batch.status)
        assert event.value in str(error) and batch.status.value in str(error)
        return
    # A failed batch must say why; no other move needs more than its stamp.
    why = bf.BatchErrors(data=(bf.BatchError(code="invalid_json_line", line=1),))
    changes: dict[str, Any] = {"errors": why} if event is E.FAIL else {}
    after = bf.advance(batch, event, at=at, **changes)
    if batch.status is S.CANCELLING and event is E.CANCEL:
        assert after is batch  # a retried cancel is a no-op
        return
    move = next(m for m in MOVES if m.event is event)
    assert after.status is move.dest
    changed = {k for k in STAMP_FIELDS if getattr(after, k) != getattr(batch, k)}
    assert changed == {STAMPS[move.dest]}
    assert getattr(batch, STAMPS[move.dest]) is None
    assert getattr(after, STAMPS[move.dest]) == at
    assert (
        attrs.evolve(
            after,
            status=batch.status,
            **{STAMPS[move.dest]: None},  # type: ignore[arg-type]
            **{name: getattr(batch, name) for name in changes},
        )
        == batch
    )
    assert bf.check(after) == []
    assert bf.check_step(batch, after) == []


@given(batches(status=bf.TERMINAL_STATUSES), events())
def test_terminal_batches_accept_nothing(batch, event):
    assert bf.allowed_events(batch.status) == frozenset()
    with pytest.raises(bf.InvalidTransition):
        bf.advance(batch, event, at=batch.created_at + 100_000)


@given(lifecycles())
def test_every_legal_path_passes_check_at_each_step_and_as_a_trace(snapshots):
    for before, after in itertools.pairwise(snapshots):
        assert bf.check(after) == []
        assert bf.check_step(before, after) == []
    assert bf.check_trace(snapshots) == []
    assert bf.check_trace([bf.to_dict(b) for b in snapshots]) == []


def test_cancel_of_a_terminal_batch_answers_like_the_api():
    done = bf.advance(
        fresh(),
        "fail",
        at=1_700_000_001,
        errors=bf.BatchErrors(data=(bf.BatchError(code="invalid_json_line", line=1),)),
    )
    with pytest.raises(bf.InvalidTransition) as info:
        bf.advance(done, "cancel", at=1_700_000_002)
    assert info.value.to_api_error() == {
        "error": {
            "message": "Cannot cancel a batch with status 'failed'.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert (
        str(info.value) == "cannot cancel a batch with status failed (it allows: none)"
    )


@pytest.mark.parametrize(
    ("event", "changes", "message"),
    [
        (
            "start",
            {"usage": USAGE},
            "start may not set usage (it may set: model, request_counts)",
        ),
        ("start", {"status": S.COMPLETED}, "start may not set status"),
        ("start", {"completed_at": 5}, "start may not set completed_at"),
        ("fail", {}, "errors.missing: a failed batch has no errors.data"),
        ("fail", {"errors": bf.BatchErrors(data=())}, "errors.missing"),
        (
            "start",
            {"request_counts": bf.BatchRequestCounts(total=1, completed=1, failed=1)},
            "counts.sum: completed + failed = 2 > total = 1",
        ),
        (
            "cancel",
            {"model": "gpt-4o"},
            "cancel may not set model (it may set: nothing)",
        ),
    ],
)
def test_advance_rejects_what_the_move_may_not_do(event, changes, message):
    batch = fresh()
    with pytest.raises(bf.InvalidTransition, match=re.escape(message)):
        bf.advance(batch, event, at=1_700_000_001, **changes)


def test_advance_rejects_going_back_in_time():
    running = bf.advance(fresh(), "start", at=1_700_000_100)
    with pytest.raises(
        bf.InvalidTransition,
        match=(
            "finalize at 1700000099 would go back in time: in_progress_at is 1700000100"
        ),
    ):
        bf.advance(running, "finalize", at=1_700_000_099)
    assert (
        bf.advance(running, "finalize", at=1_700_000_100).finalizing_at == 1_700_000_100
    )


def test_expiry_cannot_come_before_expires_at():
    with pytest.raises(bf.InvalidTransition, match=r"expired_at\.early"):
        bf.advance(fresh(), "expire", at=1_700_000_100)
    assert bf.advance(fresh(), "expire", at=1_700_086_400).status is S.EXPIRED


def test_retried_cancel_takes_no_fields_and_changes_nothing():
    cancelling = bf.advance(fresh(), "cancel", at=1_700_000_001)
    assert bf.advance(cancelling, "cancel", at=1_700_000_900) is cancelling
    with pytest.raises(bf.InvalidTransition, match="changes nothing"):
        bf.advance(cancelling, "cancel", at=1_700_000_900, model="x")


def test_advance_type_errors_name_the_field():
    with pytest.raises(TypeError, match="at: expected Unix seconds"):
        bf.advance(fresh(), "start", at=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request_counts: expected BatchRequestCounts"):
        bf.advance(fresh(), "start", at=1_700_000_001, request_counts={"total": 1})
    with pytest.raises(ValueError, match="unknown event 'begin'; events are: start"):
        bf.advance(fresh(), "begin", at=1_700_000_001)


def test_invalid_transition_pickles_and_is_a_value_error():
    with pytest.raises(ValueError, match="cannot complete") as info:
        bf.advance(fresh(), "complete", at=1_700_000_001)
    error = info.value
    assert isinstance(error, bf.InvalidTransition)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.status, copy.event, copy.allowed, str(copy)) == (
        error.status,
        error.event,
        error.allowed,
        str(error),
    )


# -- the declaration -------------------------------------------------------------


def test_allowed_events_follow_the_table():
    for status in S:
        expected = {m.event for m in MOVES if status in m.sources}
        expected |= {m.event for m in MOVES if m.idempotent and m.dest is status}
        assert bf.allowed_events(status) == expected
        assert bf.allowed_events(status.value) == expected


def test_the_transitions_machine_is_the_same_table():
    for status in S:
        assert set(bf.machine.get_triggers(status.value)) == {
            e.value for e in bf.allowed_events(status)
        }
    assert bf.machine.get_state("completed").final
    assert not bf.machine.get_state("cancelling").final

    class Model:
        state: str

    for move in MOVES:
        for source in move.sources:
            model = Model()
            bf.machine.add_model(model, initial=source.value)
            model.trigger(move.event.value)  # type: ignore[attr-defined]
            assert model.state == move.dest.value
            bf.machine.remove_model(model)


@pytest.mark.parametrize(
    ("moves", "message"),
    [
        (
            (*MOVES, Move(E.START, (S.COMPLETED,), S.IN_PROGRESS)),
            "leaves terminal status",
        ),
        (
            (*MOVES, Move(E.FAIL, (S.FAILED,), S.VALIDATING)),
            "enter the initial status",
        ),
        ((*MOVES, Move(E.START, (S.VALIDATING,), S.FAILED)), "declared twice"),
        (
            tuple(m for m in MOVES if m.event is not E.MARK_CANCELLED),
            "unreachable|no terminal",
        ),
        (tuple(m for m in MOVES if m.event is not E.START), "unreachable"),
        (
            # Two branches that rejoin: no single path orders their stamps.
            (
                *(m for m in MOVES if m.event not in (E.CANCEL, E.COMPLETE)),
                Move(E.CANCEL, (S.VALIDATING, S.IN_PROGRESS), S.CANCELLING),
                Move(E.COMPLETE, (S.FINALIZING, S.CANCELLING), S.COMPLETED),
            ),
            "precede completed on different paths",
        ),
    ],
)
def test_a_broken_table_is_refused_on_import(moves, message):
    with pytest.raises(TableError, match=message):
        check_table(moves)


def test_a_table_whose_stamps_do_not_match_the_statuses_is_refused(monkeypatch):
    from batchfsm import _graph

    broken: list[dict[Any, str]] = [
        {**STAMPS, "bogus": "bogus_at"},  # a stamp for no status
        {s: f for s, f in STAMPS.items() if s is not bf.BatchStatus.FAILED},
        {**STAMPS, bf.BatchStatus.FAILED: "created_at"},  # one field, two statuses
    ]
    for stamps in broken:
        monkeypatch.setattr(_graph, "STAMPS", stamps)
        with pytest.raises(TableError, match="stamp field of its own"):
            check_table(MOVES)


def test_batch_machine_has_one_method_per_event_with_the_table_fields():
    from batchfsm import _machine

    for move in MOVES:
        method = getattr(bf.BatchMachine, move.event.value)
        params = set()
        for name, param in inspect.signature(method).parameters.items():
            if param.kind is param.VAR_KEYWORD:  # **results: Unpack[Results]
                typed = re.fullmatch(r"Unpack\[(\w+)\]", param.annotation)
                assert typed, param.annotation
                params |= set(getattr(_machine, typed[1]).__annotations__)
            elif name != "self":
                params.add(name)
        assert params == move.may_set, move.event


# -- BatchMachine -----------------------------------------------------------------


def test_batch_machine_moves_stamps_with_its_clock_and_calls_back():
    now = [1_700_000_010]
    m = bf.BatchMachine(fresh(), clock=lambda: now[0] + 0.9)
    seen = []
    m.on_exit("validating", lambda e, b, a: seen.append(("exit", e, b.status)))
    m.on_transition(lambda e, b, a: seen.append(("move", e, a.status)))
    m.on_enter(S.IN_PROGRESS, lambda e, b, a: seen.append(("enter", e, a.status)))
    m.start(request_counts=bf.BatchRequestCounts(total=2, completed=0, failed=0))
    assert m.batch.in_progress_at == 1_700_000_010
    assert seen == [
        ("exit", E.START, S.VALIDATING),
        ("move", E.START, S.IN_PROGRESS),
        ("enter", E.START, S.IN_PROGRESS),
    ]
    now[0] += 5
    m.cancel()
    assert m.status is S.CANCELLING and m.allowed_events == {E.CANCEL, E.MARK_CANCELLED}
    seen.clear()
    assert m.cancel() is m.batch and seen == []  # no-op: no callbacks
    m.mark_cancelled(
        request_counts=bf.BatchRequestCounts(total=2, completed=1, failed=0)
    )
    assert m.batch.cancelled_at == 1_700_000_015
    assert not m.can("cancel")
    assert bf.check(m.batch) == []
    assert "batch_1 cancelled" in repr(m)


def test_callbacks_run_exit_then_transition_then_enter_whatever_the_order_given():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_010)
    seen = []
    m.on_enter(S.IN_PROGRESS, lambda e, b, a: seen.append("enter"))
    m.on_transition(lambda e, b, a: seen.append("move"))
    m.on_exit("validating", lambda e, b, a: seen.append("exit"))
    m.on_transition(lambda e, b, a: seen.append("move again"))
    m.start()
    assert seen == ["exit", "move", "move again", "enter"]


def test_a_failing_callback_does_not_undo_the_move():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)

    def boom(*_):
        raise RuntimeError("webhook down")

    m.on_transition(boom)
    with pytest.raises(RuntimeError, match="webhook down"):
        m.start()
    assert m.status is S.IN_PROGRESS


@pytest.mark.parametrize("run", range(50))
def test_racing_complete_and_cancel_have_exactly_one_winner(run):
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    m.start(request_counts=bf.BatchRequestCounts(total=1, completed=0, failed=0))
    m.finalize(request_counts=bf.BatchRequestCounts(total=1, completed=1, failed=0))
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def race(name, move):
        barrier.wait()
        try:
            results[name] = move()
        except bf.InvalidTransition as exc:
            results[name] = exc

    threads = [
        threading.Thread(
            target=race, args=("complete", lambda: m.complete(output_file_id="file-o"))
        ),
        threading.Thread(target=race, args=("cancel", m.cancel)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [k for k, v in results.items() if isinstance(v, bf.Batch)]
    assert len(winners) == 1
    loser = next(k for k in results if k not in winners)
    assert isinstance(results[loser], bf.InvalidTransition)
    assert m.status is (S.COMPLETED if winners == ["complete"] else S.CANCELLING)
    assert bf.check(m.batch) == []


def test_a_move_paused_inside_the_machine_keeps_the_other_out():
    # A deterministic interleaving: "complete" pauses inside its move (in the
    # clock call, after reading the batch), and "cancel" is started then. With
    # the lock, cancel waits and loses; without it, cancel would slip in while
    # complete is paused and both would "win", one of them on a stale batch.
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    m.start(request_counts=bf.BatchRequestCounts(total=1, completed=0, failed=0))
    m.finalize(request_counts=bf.BatchRequestCounts(total=1, completed=1, failed=0))
    complete_inside, cancel_inside = threading.Event(), threading.Event()

    def clock() -> int:
        if threading.current_thread().name == "complete":
            complete_inside.set()
            # Bounded only so that a broken machine fails instead of hanging;
            # with the lock, cancel cannot reach its clock while we are here.
            cancel_inside.wait(timeout=0.5)
        else:
            cancel_inside.set()
        return 1_700_000_002

    m._clock = clock
    results: dict[str, object] = {}

    def move(name, make):
        try:
            results[name] = make()
        except bf.InvalidTransition as exc:
            results[name] = exc

    completing = threading.Thread(
        target=move,
        args=("complete", lambda: m.complete(output_file_id="file-o")),
        name="complete",
    )
    completing.start()
    complete_inside.wait()
    cancelling = threading.Thread(target=move, args=("cancel", m.cancel), name="cancel")
    cancelling.start()
    completing.join()
    cancelling.join()
    assert isinstance(results["complete"], bf.Batch)
    assert isinstance(results["cancel"], bf.InvalidTransition)
    assert m.status is S.COMPLETED and m.batch is results["complete"]


def test_a_move_made_from_a_callback_is_seen_in_order():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    log: list[tuple[str, bf.Event, bf.BatchStatus]] = []
    m.on_exit("validating", lambda e, b, a: m.cancel() if e is E.START else None)
    m.on_transition(lambda e, b, a: log.append(("move", e, a.status)))
    m.on_enter("cancelling", lambda e, b, a: m.mark_cancelled())
    started = m.start()
    assert started.status is S.IN_PROGRESS  # what start did ...
    assert m.status is S.CANCELLED  # ... and where the callbacks took it
    assert log == [
        ("move", E.START, S.IN_PROGRESS),
        ("move", E.CANCEL, S.CANCELLING),
        ("move", E.MARK_CANCELLED, S.CANCELLED),
    ]


def test_a_refusal_for_the_arguments_says_why_in_the_api_body():
    running = bf.advance(fresh(), "start", at=1_700_000_100)
    with pytest.raises(bf.InvalidTransition) as info:
        bf.advance(running, "finalize", at=1_700_000_000)
    assert info.value.to_api_error()["error"]["message"] == (
        "Finalize at 1700000000 would go back in time: in_progress_at is 1700000100."
    )


def test_moves_never_clear_or_rewrite_what_is_set():
    batch = fresh(model="gpt-4o")
    assert bf.advance(batch, "start", at=1_700_000_001, model=None).model == "gpt-4o"
    with pytest.raises(bf.InvalidTransition, match=r"step\.set_once: model changed"):
        bf.advance(batch, "start", at=1_700_000_001, model="gpt-5")
    running = bf.advance(
        batch,
        "start",
        at=1_700_000_001,
        request_counts=bf.BatchRequestCounts(total=10, completed=0, failed=0),
    )
    with pytest.raises(bf.InvalidTransition, match=r"step\.counts"):
        bf.advance(
            running,
            "finalize",
            at=1_700_000_002,
            request_counts=bf.BatchRequestCounts(total=3, completed=3, failed=0),
        )


def test_unhashable_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="unknown event"):
        bf.advance(fresh(), ["start"], at=1_700_000_001)  # type: ignore[arg-type]
    with pytest.raises(bf.SchemaError, match="completion_window"):
        fresh(completion_window=["24h"])
    with pytest.raises(bf.SchemaError) as info:
        fresh(metadata={"a": 1, "k" * 65: "v"})
    assert [path for path, _ in info.value.errors] == [
        "metadata.a",
        "metadata." + "k" * 65,
    ]


def test_a_cyclic_table_is_refused():
    with pytest.raises(TableError, match="cycle"):
        check_table((*MOVES, Move(E.FAIL, (S.CANCELLING,), S.IN_PROGRESS)))


def test_the_statuses_in_topological_order_are_the_declared_order():
    # The diagram lays the statuses out in this order: each after its
    # predecessors, and among those ready at once, in the order declared.
    assert list(TOPO_ORDER) == list(bf.BatchStatus)


def test_results_and_errors_are_allowed_from_the_statuses_whose_moves_set_them():
    # request_counts, usage, model and metadata may be carried from creation on.
    results = {S.COMPLETED, S.EXPIRED, S.CANCELLED}
    assert dict(FIELD_STATUSES) == {
        "errors": {S.FAILED},
        "output_file_id": results,
        "error_file_id": results,
    }


# -- the generated copy of a move is attrs.evolve, minus the rework ----------------


@attrs.frozen(kw_only=True)
class TaggedBatch(bf.Batch):
    """A subclass with a field of its own, which the generated copy knows nothing of."""

    tag: str = "t"


@given(lifecycles(polls=False), st.data())
def test_a_move_equals_attrs_evolve_of_the_batch(snapshots, data):
    for before, after in itertools.pairwise(snapshots):
        move = next(m for m in MOVES if m.dest is after.status)
        changes = {
            name: getattr(after, name)
            for name in move.may_set
            if getattr(after, name) is not None
        }
        at = getattr(after, STAMPS[move.dest])
        expected = attrs.evolve(before, status=move.dest, **changes)
        expected = attrs.evolve(expected, **{STAMPS[move.dest]: at})
        moved = bf.advance(before, move.event, at=at, **changes)
        assert moved == expected and type(moved) is bf.Batch
        assert hash(moved) == hash(expected) and repr(moved) == repr(expected)
        tag = data.draw(st.text(max_size=3))
        tagged = TaggedBatch(**attrs.asdict(before, recurse=False), tag=tag)
        moved_tagged = bf.advance(tagged, move.event, at=at, **changes)
        assert type(moved_tagged) is TaggedBatch and moved_tagged.tag == tag
        assert attrs.asdict(moved_tagged, recurse=False) == {
            **attrs.asdict(moved, recurse=False),
            "tag": tag,
        }


# -- progress: work in progress, not a move ----------------------------------------


def _running(total=10, completed=2, failed=1):
    b = bf.new_batch(
        id="batch_1",
        input_file_id="file-1",
        endpoint="/v1/embeddings",
        created_at=1_700_000_000,
    )
    return bf.advance(
        b,
        "start",
        at=1_700_000_005,
        request_counts=bf.BatchRequestCounts(
            total=total, completed=completed, failed=failed
        ),
    )


def test_progress_takes_exactly_the_table_fields():
    import inspect

    from batchfsm._table import PROGRESS_FIELDS

    params = inspect.signature(bf.progress).parameters
    assert {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} == set(
        PROGRESS_FIELDS
    )


@given(batches())
def test_progress_is_refused_where_no_work_runs(batch):
    from batchfsm._table import PROGRESS_STATUSES

    counts = batch.request_counts
    if batch.status in PROGRESS_STATUSES:
        assert bf.progress(batch, request_counts=counts) == batch
        return
    with pytest.raises(bf.InvalidProgress, match="runs no work") as e:
        bf.progress(batch, request_counts=counts)
    assert e.value.status is batch.status and isinstance(e.value, bf.BatchFSMError)


@pytest.mark.parametrize(
    ("counts", "rule"),
    [
        ({"total": 9}, "step.counts"),
        ({"completed": 1}, "step.counts"),
        ({"failed": 0}, "step.counts"),
        ({"completed": 10}, "counts.sum"),
    ],
)
def test_progress_refuses_counts_that_go_back_or_overflow(counts, rule):
    before = _running()
    new = attrs.evolve(before.request_counts, **counts)
    with pytest.raises(bf.InvalidProgress) as e:
        bf.progress(before, request_counts=new)
    assert [v.rule for v in e.value.violations] == [rule]
    assert rule in str(e.value)


def test_progress_refuses_usage_that_goes_back_and_wrong_types():
    usage = bf.BatchUsage(
        input_tokens=10,
        input_tokens_details=bf.InputTokensDetails(cached_tokens=0),
        output_tokens=5,
        output_tokens_details=bf.OutputTokensDetails(reasoning_tokens=0),
        total_tokens=15,
    )
    before = bf.progress(_running(), usage=usage)
    assert before.usage == usage and before.status is bf.BatchStatus.IN_PROGRESS
    less = attrs.evolve(usage, output_tokens=4, total_tokens=14)
    with pytest.raises(bf.InvalidProgress) as e:
        bf.progress(before, usage=less)
    assert [v.rule for v in e.value.violations] == ["step.usage"]
    with pytest.raises(TypeError, match="usage: expected BatchUsage"):
        bf.progress(before, usage={"input_tokens": 1})  # type: ignore[arg-type]
    assert bf.progress(before) is before


@given(batches(), st.sampled_from([None, {}, {"k": "v", "note": "café"}]))
def test_built_fast_is_built_as_by_the_class(batch, metadata):
    # new_batch and every move fill the slots directly; the result must equal
    # what Batch.__init__ (its converters and validators) makes of the same values.
    again = bf.Batch(**attrs.asdict(batch, recurse=False))
    assert batch == again and type(batch) is bf.Batch
    assert bf.to_dict(batch) == bf.to_dict(again)
    new = bf.new_batch(
        id=batch.id,
        input_file_id=batch.input_file_id,
        endpoint=batch.endpoint,
        created_at=batch.created_at,
        metadata=metadata,
        model=batch.model,
    )
    fields = attrs.asdict(new, recurse=False)
    assert new == bf.Batch(**fields) and type(new) is bf.Batch
    assert new.metadata is None or type(new.metadata).__name__ == "mappingproxy"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        new.id = "x"  # type: ignore[misc]


def test_the_advance_docstring_lists_the_fields_of_the_table():
    # The docstring is prose for people; it must say what the table says.
    doc = " ".join((bf.advance.__doc__ or "").split())
    listed = doc[doc.index("(``start``") + 1 : doc.index(")", doc.index("(``start``"))]
    said: dict[str, set[str]] = {}
    for group in listed.split(";"):
        events, fields = group.split(":")
        for event in re.findall(r"``(\w+)``", events):
            said[event] = set(re.findall(r"``(\w+)``", fields))
    assert said == {m.event.value: set(m.may_set) for m in MOVES if m.may_set}


def test_a_move_from_a_batch_with_a_malformed_count_is_not_made():
    # Built by hand past the model's checks: a count held as a str. The fast
    # step check raises on it; advance must then judge the move in full (which
    # raises too), never take the move as consistent.
    b = bf.new_batch(
        id="batch_1",
        input_file_id="file-1",
        endpoint="/v1/embeddings",
        created_at=1_700_000_000,
    )
    b = bf.advance(b, "start", at=1_700_000_005, model="m")
    counts: Any = {"total": 2, "completed": "0", "failed": 0}
    bad = attrs.evolve(b, request_counts=bf.BatchRequestCounts(**counts))
    done = bf.BatchRequestCounts(total=2, completed=2, failed=0)
    with pytest.raises(TypeError):
        bf.advance(bad, "finalize", at=1_700_000_010, request_counts=done)
