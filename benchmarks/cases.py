"""The benchmark cases, each beside the peer its target is a ratio of."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai.types
from transitions import Machine

import batchfsm as bf

from ._harness import Case, Measure, bytes_per_item, per_call, per_item, sized

#: A completed batch as the API answers it: every field, usage and metadata set.
COMPLETED: dict[str, Any] = {
    "id": "batch_6925a0c4e5f08190b1b1c1a37c9c6a2e",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "model": "gpt-4o-mini-2024-07-18",
    "errors": None,
    "input_file_id": "file-7Yq1hGQm2WcDx9sPZt4kLn",
    "completion_window": "24h",
    "status": "completed",
    "output_file_id": "file-cvaTdGq8uA1bS6mKd0PzR",
    "error_file_id": "file-HOWS94Hn3c2oFq8uA1bS6m",
    "created_at": 1764073668,
    "in_progress_at": 1764073702,
    "expires_at": 1764160068,
    "finalizing_at": 1764095268,
    "completed_at": 1764095298,
    "failed_at": None,
    "expired_at": None,
    "cancelling_at": None,
    "cancelled_at": None,
    "request_counts": {"total": 100, "completed": 95, "failed": 5},
    "usage": {
        "input_tokens": 20213,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 9120,
        "output_tokens_details": {"reasoning_tokens": 300},
        "total_tokens": 29333,
    },
    "metadata": {"customer_id": "user_123456789", "batch_description": "Nightly"},
}


def convert_cases() -> list[Case]:
    """The JSON door beside pydantic-core, msgspec reported beside as the floor."""
    from . import _msgspec_peer as ms

    batch = bf.from_dict(COMPLETED)
    theirs = openai.types.Batch.model_validate(COMPLETED)
    text = bf.dumps(batch)
    floor = ms.decode_json(text)
    validate = openai.types.Batch.model_validate
    validate_json = openai.types.Batch.model_validate_json
    return [
        Case(
            "from_dict",
            per_call(lambda: bf.from_dict(COMPLETED)),
            "openai Batch.model_validate",
            per_call(lambda: validate(COMPLETED)),
            0.9,
            floor_name="msgspec convert",
            floor=per_call(lambda: ms.from_dict(COMPLETED)),
        ),
        Case(
            "to_dict",
            per_call(lambda: bf.to_dict(batch)),
            "openai Batch.model_dump",
            per_call(theirs.model_dump),
            0.75,
            floor_name="msgspec to_builtins",
            floor=per_call(lambda: ms.to_dict(floor)),
        ),
        Case(
            "loads",
            per_call(lambda: bf.loads(text)),
            "openai Batch.model_validate_json",
            per_call(lambda: validate_json(text)),
            0.6,
            floor_name="msgspec json decode",
            floor=per_call(lambda: ms.decode_json(text)),
        ),
        Case(
            "dumps",
            per_call(lambda: bf.dumps(batch)),
            "openai Batch.model_dump_json",
            per_call(theirs.model_dump_json),
            0.75,
            floor_name="msgspec json encode",
            floor=per_call(lambda: ms.encode_json(floor)),
        ),
    ]


# -- the lifecycle, beside transitions --------------------------------------------

_STATES = [s.value for s in bf.BatchStatus]
_TRANSITIONS = [
    {
        "trigger": move.event.value,
        "source": [s.value for s in move.sources],
        "dest": move.dest.value,
    }
    for move in __import__("batchfsm._table", fromlist=["MOVES"]).MOVES
]
_COUNTS = bf.BatchRequestCounts(total=100, completed=0, failed=0)
_DONE = bf.BatchRequestCounts(total=100, completed=95, failed=5)


class _Model:
    """What a transitions user binds: an object that carries its state."""

    state: str


def _per_object_machine() -> _Model:
    model = _Model()
    Machine(
        model=model,
        states=_STATES,
        transitions=_TRANSITIONS,
        initial="validating",
        auto_transitions=False,
    )
    return model


def _new(i: int = 0) -> bf.Batch:
    return bf.new_batch(
        id=f"batch_{i:032x}",
        input_file_id="file-7Yq1hGQm2WcDx9sPZt4kLn",
        endpoint="/v1/chat/completions",
        created_at=1_764_073_668,
    )


def _our_lifecycle() -> bf.Batch:
    batch = _new()
    batch = bf.advance(batch, bf.Event.START, at=1_764_073_702, request_counts=_COUNTS)
    batch = bf.advance(batch, bf.Event.FINALIZE, at=1_764_095_268, request_counts=_DONE)
    return bf.advance(batch, bf.Event.COMPLETE, at=1_764_095_298, output_file_id="f")


def _their_lifecycle() -> _Model:
    model = _per_object_machine()
    model.start()  # type: ignore[attr-defined]
    model.finalize()  # type: ignore[attr-defined]
    model.complete()  # type: ignore[attr-defined]
    return model


def _shared_machine() -> Machine:
    return Machine(
        model=None,
        states=_STATES,
        transitions=_TRANSITIONS,
        initial="validating",
        auto_transitions=False,
    )


_SHARED = [_shared_machine()]


def _bound_to_shared(i: int) -> _Model:
    # A fresh machine for each measurement (i == 0): add_model looks through
    # the models a machine holds, so one machine kept for every round made
    # each round slower than the last (minutes, in the end).
    if i == 0:
        _SHARED[0] = _shared_machine()
    model = _Model()
    _SHARED[0].add_model(model)
    return model


_AT = 1_764_073_702


def _machines(n: int) -> list[object]:
    return [bf.BatchMachine(_new(i), clock=lambda: _AT) for i in range(n)]


def _our_machine_lifecycle() -> bf.BatchMachine:
    machine = bf.BatchMachine(_new(), clock=lambda: _AT)
    machine.start(request_counts=_COUNTS)
    machine.finalize(request_counts=_DONE)
    machine.complete(output_file_id="f")
    return machine


def lifecycle_cases() -> list[Case]:
    validating = _new()
    return [
        Case(
            "advance (checked)",
            per_call(lambda: bf.advance(validating, "start", at=1_764_073_702)),
            "transitions per-object trigger",
            per_item(
                lambda n: [_per_object_machine() for _ in range(n)],
                lambda model: model.start(),  # type: ignore[attr-defined]
            ),
            0.5,
        ),
        Case(
            "lifecycle (new + 3 moves)",
            per_call(_our_lifecycle),
            "transitions per-object machine",
            per_call(_their_lifecycle),
            0.15,
        ),
        # BatchMachine runs on the transitions machine itself: a move is a
        # transitions trigger plus advance, so it is held to a multiple of a bare
        # trigger, and its whole life to less than a machine built per object.
        Case(
            "BatchMachine move",
            per_item(_machines, lambda m: m.start()),  # type: ignore[attr-defined]
            "transitions per-object trigger",
            per_item(
                lambda n: [_per_object_machine() for _ in range(n)],
                lambda model: model.start(),  # type: ignore[attr-defined]
            ),
            3.0,
        ),
        Case(
            "BatchMachine lifecycle",
            per_call(_our_machine_lifecycle),
            "transitions per-object machine",
            per_call(_their_lifecycle),
            1.0,
        ),
        Case(
            "memory per live batch",
            bytes_per_item(_new),
            "transitions model, shared machine",
            bytes_per_item(_bound_to_shared),
            1.0,
            limit=1536,
            unit="B",
            rounds=sized(3, quick=2),  # bytes: the same each round
        ),
        Case(
            "memory per BatchMachine",
            bytes_per_item(lambda i: bf.BatchMachine(_new(i))),
            "transitions per-object machine",
            bytes_per_item(lambda i: _per_object_machine(), n=2_000),
            1.0,
            limit=8192,
            unit="B",
            rounds=sized(3, quick=2),
        ),
    ]


# -- check_trace throughput --------------------------------------------------------

_TRACE_SNAPSHOTS = 100_000


def _trace(n: int = _TRACE_SNAPSHOTS) -> list[bf.Batch]:
    """What a poller records of n/4 batches going to completion, interleaved.

    Batches run in waves of 500: each wave's snapshots are polled round-robin,
    with every other batch polled twice in a row unchanged (judged at once).
    """
    trace: list[bf.Batch] = []
    wave = 500
    for first in range(0, n // 4, wave):
        lives = [_our_lifecycle_snapshots(i) for i in range(first, first + wave)]
        for step in range(4):
            for i, snapshots in enumerate(lives):
                trace.append(snapshots[step])
                if i % 2 and step == 1:
                    trace.append(snapshots[step])
    return trace[:n]


def _our_lifecycle_snapshots(i: int) -> list[bf.Batch]:
    batch = _new(i)
    running = bf.advance(
        batch, bf.Event.START, at=1_764_073_702, request_counts=_COUNTS
    )
    final = bf.advance(
        running, bf.Event.FINALIZE, at=1_764_095_268, request_counts=_DONE
    )
    done = bf.advance(final, bf.Event.COMPLETE, at=1_764_095_298, output_file_id="f")
    return [batch, running, final, done]


def _per_snapshot(fn: Callable[[], object], n: int) -> Measure:
    measure = per_call(fn, repeat=3)
    return lambda: measure() / n


def trace_cases() -> list[Case]:
    trace = _trace()
    n = len(trace)
    assert bf.check_trace(trace) == []
    return [
        Case(
            "check_trace /snapshot",
            _per_snapshot(lambda: bf.check_trace(trace), n),
            "check() of each snapshot alone",
            _per_snapshot(lambda: [bf.check(b) for b in trace], n),
            1.0,
            limit=10.0,  # the target: at least 100,000 snapshots/s
            rounds=sized(5, quick=3),
        ),
    ]


def all_cases() -> list[Case]:
    from .conform_cases import conform_cases
    from .emulator_cases import emulator_cases
    from .llmock_cases import llmock_cases
    from .serve_cases import serve_cases
    from .web_cases import web_cases

    return (
        convert_cases()
        + lifecycle_cases()
        + trace_cases()
        + emulator_cases(_bound_to_shared)
        + serve_cases()
        + web_cases()
        + conform_cases()
        + llmock_cases()
    )
