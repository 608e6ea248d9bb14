"""BatchMachine runs on the transitions machine, and agrees with advance."""

import inspect
from typing import Any

import pytest
import transitions
from hypothesis import given
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._errors import UnknownEvent
from batchfsm._graph import MOVE_FROM
from batchfsm._movegen import latest_stamp
from batchfsm.strategies import _changes, batches, events

S, E = bf.BatchStatus, bf.Event
COUNTS = bf.BatchRequestCounts(total=2, completed=0, failed=0)


def fresh() -> bf.Batch:
    return bf.new_batch(
        id="batch_1",
        input_file_id="file-1",
        endpoint="/v1/chat/completions",
        created_at=1_700_000_000,
    )


# -- the same batch or the same refusal as advance ----------------------------------


def _outcome(move: Any) -> Any:
    """What a move gave: the batch, or the refusal with every field it carries."""
    try:
        return move()
    except bf.InvalidTransition as exc:
        return (type(exc), exc.status, exc.event, exc.allowed, exc.violations, str(exc))
    except (TypeError, ValueError) as exc:
        return (type(exc), str(exc))


_ODD_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["gpt-4o", "gpt-5"]),
        "output_file_id": st.just("file-o"),
        "errors": st.just(bf.BatchErrors(data=())),
        "request_counts": st.builds(
            bf.BatchRequestCounts,
            total=st.integers(0, 3),
            completed=st.integers(0, 3),
            failed=st.integers(0, 3),
        ),
        "usage": st.just("not usage"),
    },
)


@given(batches(), events(), st.data())
def test_batch_machine_and_advance_agree_on_every_event_from_every_state(
    batch, event, data
):
    _, latest = latest_stamp(batch)
    at = latest + data.draw(st.integers(-2, 5), label="delay")
    if event is E.EXPIRE and data.draw(st.booleans(), label="due"):
        at = max(at, batch.expires_at)
    legal = (batch.status, event) in MOVE_FROM
    if legal and data.draw(st.booleans(), label="table changes"):
        changes = data.draw(_changes(batch, event), label="changes")
    else:  # fields the move may not set, wrong types, inconsistent counts
        changes = data.draw(_ODD_CHANGES, label="changes")
    expected = _outcome(lambda: bf.advance(batch, event, at=at, **changes))
    machine = bf.BatchMachine(batch, clock=lambda: at)
    got = _outcome(lambda: machine.trigger(event, **changes))
    assert got == expected
    if isinstance(expected, bf.Batch):
        assert machine.batch == expected
    else:  # a refused move leaves the batch as it was
        assert machine.batch is batch


def test_an_unknown_event_is_refused_alike():
    machine = bf.BatchMachine(fresh())
    with pytest.raises(UnknownEvent, match="unknown event 'begin'"):
        machine.trigger("begin")


# -- transitions runs the moves ------------------------------------------------------


def test_a_move_passes_through_the_transitions_machine(monkeypatch):
    executed: list[tuple[str, str | None]] = []
    execute = transitions.core.Transition.execute

    def counting(self, event_data):
        executed.append((event_data.event.name, self.dest))
        return execute(self, event_data)

    monkeypatch.setattr(transitions.core.Transition, "execute", counting)
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    m.start()
    m.cancel()
    m.cancel()  # the retried cancel: transitions' internal transition
    m.mark_cancelled()
    assert executed == [
        ("start", "in_progress"),
        ("cancel", "cancelling"),
        ("cancel", None),
        ("mark_cancelled", "cancelled"),
    ]


def test_user_callbacks_are_called_by_transitions():
    seen: dict[str, set[str]] = {}

    def record(kind: str) -> Any:
        def callback(event, before, after):
            seen[kind] = {
                frame.frame.f_globals.get("__name__", "") for frame in inspect.stack()
            }

        return callback

    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    m.on_exit("validating", record("exit"))
    m.on_transition(record("transition"))
    m.on_enter("in_progress", record("enter"))
    m.start()
    assert set(seen) == {"exit", "transition", "enter"}
    for modules in seen.values():
        assert "transitions.core" in modules


def test_the_exported_machine_is_the_one_that_runs_batch_machines():
    before = [t.before for e in bf.machine.events.values() for t in _all(e)]
    assert all(before)  # every transition makes its move in ``before``
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    assert bf.machine.get_model_state(m).name == "validating"
    assert bf.machine.models == []  # nothing is kept per BatchMachine
    m.start()
    assert bf.machine.get_model_state(m).name == "in_progress"


def _all(event: Any) -> list[Any]:
    return [t for ts in event.transitions.values() for t in ts]


def test_an_illegal_move_is_refused_by_transitions_as_invalid_transition():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    with pytest.raises(bf.InvalidTransition) as info:
        m.complete()
    assert info.value.__cause__ is None
    assert str(info.value) == (
        "cannot complete a batch with status validating "
        "(it allows: start, fail, expire, cancel)"
    )


def test_a_machine_error_of_a_callback_reaches_the_caller_as_it_is():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)

    def theirs(*_):
        raise transitions.MachineError("their own machine")

    m.on_enter("in_progress", theirs)
    with pytest.raises(transitions.MachineError, match="their own machine"):
        m.start()
    assert m.status is S.IN_PROGRESS


# -- callbacks: which, and in which order --------------------------------------------


def test_on_exit_runs_only_when_leaving_its_own_status():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    left: list[tuple[bf.Event, bf.BatchStatus]] = []
    entered: list[tuple[bf.Event, bf.BatchStatus]] = []

    def recorder(log: list[Any], status: bf.BatchStatus) -> Any:
        return lambda e, b, a: log.append((e, status))

    for status in S:
        m.on_exit(status, recorder(left, status))
        m.on_enter(status, recorder(entered, status))
    m.start(request_counts=COUNTS)
    m.finalize()
    m.cancel()
    m.mark_cancelled()
    assert left == [
        (E.START, S.VALIDATING),
        (E.FINALIZE, S.IN_PROGRESS),
        (E.CANCEL, S.FINALIZING),
        (E.MARK_CANCELLED, S.CANCELLING),
    ]
    assert entered == [
        (E.START, S.IN_PROGRESS),
        (E.FINALIZE, S.FINALIZING),
        (E.CANCEL, S.CANCELLING),
        (E.MARK_CANCELLED, S.CANCELLED),
    ]


def test_moves_made_from_callbacks_run_their_callbacks_in_the_order_made():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    log: list[tuple[str, bf.Event]] = []
    made: list[bf.Batch] = []

    def on_start(e, b, a):
        if e is E.START:  # two moves at once, from one callback
            made.append(m.cancel())
            made.append(m.mark_cancelled())

    m.on_exit("validating", lambda e, b, a: log.append(("exit validating", e)))
    m.on_transition(on_start)
    m.on_transition(lambda e, b, a: log.append(("move", e)))
    m.on_exit("in_progress", lambda e, b, a: log.append(("exit in_progress", e)))
    m.on_enter("in_progress", lambda e, b, a: log.append(("enter in_progress", e)))
    m.on_enter("cancelling", lambda e, b, a: log.append(("enter cancelling", e)))
    m.on_enter("cancelled", lambda e, b, a: log.append(("enter cancelled", e)))
    assert m.start().status is S.IN_PROGRESS
    # Each move made at once, in the callback ...
    assert [b.status for b in made] == [S.CANCELLING, S.CANCELLED]
    # ... and the callbacks seen move by move, each move's in its order.
    assert log == [
        ("exit validating", E.START),
        ("move", E.START),
        ("enter in_progress", E.START),
        ("exit in_progress", E.CANCEL),
        ("move", E.CANCEL),
        ("enter cancelling", E.CANCEL),
        ("move", E.MARK_CANCELLED),
        ("enter cancelled", E.MARK_CANCELLED),
    ]


def test_a_refused_move_from_a_callback_reaches_that_callback():
    m = bf.BatchMachine(fresh(), clock=lambda: 1_700_000_001)
    refusals: list[bf.InvalidTransition] = []

    def try_complete(e, b, a):
        try:
            m.complete()
        except bf.InvalidTransition as exc:
            refusals.append(exc)

    m.on_enter("in_progress", try_complete)
    m.start()
    assert [(r.status, r.event) for r in refusals] == [(S.IN_PROGRESS, E.COMPLETE)]
    assert m.status is S.IN_PROGRESS


def test_a_live_batch_machine_takes_at_most_8_kib_with_its_batch():
    import tracemalloc

    n = 2_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        live = [
            bf.BatchMachine(
                bf.new_batch(
                    id=f"batch_{i:032x}",
                    input_file_id="file-1",
                    endpoint="/v1/chat/completions",
                    created_at=1_700_000_000,
                )
            )
            for i in range(n)
        ]
        per_machine = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(live) == n
    assert per_machine <= 8192


def test_every_result_of_a_move_that_ends_the_work_is_optional():
    from batchfsm._machine import Results

    assert Results.__required_keys__ == frozenset()
    assert Results.__optional_keys__ == {
        "output_file_id",
        "error_file_id",
        "request_counts",
        "usage",
    }
