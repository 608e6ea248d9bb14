"""The enqueued token limit: a batch over its model's limit fails as the live one does.

What a user sees through the official client, the estimate (the default
handler's input tokens), the settings' checks, and the one rule: the batches
enqueued under a model never hold more than its limit, on every store and
however many writers start batches at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import openai
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import batchfsm as bf
from batchfsm._endpoints import ENDPOINT_MODELS, ENDPOINTS
from batchfsm._nesting import str_length
from batchfsm.emulator import (
    CODES,
    Emulator,
    MemoryBatchStore,
    PostgresStore,
    SQLiteStore,
    VirtualClock,
    Work,
    default_handler,
    open_store,
)
from batchfsm.emulator._enqueued import (
    parse_limit,
    token_limit_error,
    token_limits,
)
from batchfsm.emulator._handlers import prompt_tokens
from batchfsm.emulator._validate import ORGANIZATION

from .conftest import DATA, load_json
from .test_cli import _serve_refusal
from .test_fidelity import client_for, upload
from .test_sql_stores import _postgres_at_version, _sqlite_at_version
from .test_stores import Stores, batch, fresh, store_name, stores  # noqa: F401

S = bf.BatchStatus
EMBEDDINGS: Any = "/v1/embeddings"
SMALL, LARGE = "text-embedding-3-small", "text-embedding-3-large"
#: The work of a batch in progress, as a version 4 database holds it.
_WORK = (
    '{"done":0,"offset":0,"completed":0,"failed":0,"input_tokens":0,'
    '"output_tokens":0,"output_expires_after":null}'
)
#: Statuses in which a batch that started holds its tokens (one cancelled while
#: validating never held any).
ENQUEUED = frozenset({S.IN_PROGRESS, S.FINALIZING, S.CANCELLING})


def embeddings_file(tokens: list[int], model: str = SMALL) -> bytes:
    """One embeddings request per item, each holding exactly that many tokens."""
    return "\n".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": EMBEDDINGS,
                "body": {"model": model, "input": "x" * (4 * n)},
            }
        )
        for i, n in enumerate(tokens)
    ).encode()


def advance(emulator: Emulator, seconds: int) -> None:
    """Move the emulator's virtual clock on."""
    clock = emulator.clock
    assert isinstance(clock, VirtualClock)
    clock.advance(seconds)


def live_message(model: str, limit: str) -> str:
    """The live API's words (openai-python #2084), our organization in them."""
    return (
        f"Enqueued token limit reached for {model} in organization {ORGANIZATION}. "
        f"Limit: {limit} enqueued tokens. Please try again once some in_progress "
        "batches have been completed."
    )


# -- what a user sees --------------------------------------------------------------


def test_a_batch_over_the_limit_fails_with_the_live_error_and_passes_later() -> None:
    emulator = Emulator(clock=VirtualClock(1_764_000_000), enqueued_token_limit=50)
    for client in client_for(emulator):
        content = embeddings_file([10, 10, 10])  # 30 tokens each time
        first = client.batches.create(
            input_file_id=upload(client, content).id,
            endpoint=EMBEDDINGS,
            completion_window="24h",
        )
        second = client.batches.create(
            input_file_id=upload(client, content).id,
            endpoint=EMBEDDINGS,
            completion_window="24h",
        )
        advance(emulator, 1)  # both validated: 30 + 30 > 50
        assert client.batches.retrieve(first.id).status == "in_progress"
        failed = client.batches.retrieve(second.id)
        assert failed.status == "failed"
        assert failed.failed_at is not None and failed.in_progress_at is None
        assert failed.output_file_id is None and failed.error_file_id is None
        assert failed.errors is not None and failed.errors.data is not None
        assert failed.request_counts is not None
        assert [e.model_dump() for e in failed.errors.data] == [
            {
                "code": "token_limit_exceeded",
                "line": None,
                "message": live_message(SMALL, "50"),
                "param": None,
            }
        ]
        assert failed.request_counts.model_dump() == {
            "total": 0,
            "completed": 0,
            "failed": 0,
        }
        # Once the first batch ended its tokens are free: the same file passes.
        advance(emulator, 600)
        assert client.batches.retrieve(first.id).status == "completed"
        again = client.batches.create(
            input_file_id=upload(client, content).id,
            endpoint=EMBEDDINGS,
            completion_window="24h",
        )
        advance(emulator, 600)
        assert client.batches.retrieve(again.id).status == "completed"


def test_the_error_is_the_recorded_one_with_our_organization() -> None:
    # tests/data/examples/failed.json carries the error reported against the
    # official client (openai-python #2084), its organization blanked out.
    [recorded] = load_json(DATA / "examples" / "failed.json")["errors"]["data"]
    ours = token_limit_error("gpt-4o-mini", 2_000_000)
    assert recorded["code"] == ours.code == "token_limit_exceeded"
    assert recorded["line"] is ours.line is None
    assert recorded["param"] is ours.param is None
    assert ours.message == recorded["message"].replace("org-XXXX", ORGANIZATION)
    assert "token_limit_exceeded" in CODES


def test_each_model_has_its_own_limit_and_its_own_tokens() -> None:
    emulator = Emulator(enqueued_token_limit={SMALL: 25, "*": 1_000})
    ids = []
    for model in (SMALL, LARGE, SMALL):
        file = emulator.create_file(embeddings_file([20], model), "in.jsonl", "batch")
        made = emulator.create_batch(input_file_id=file.id, endpoint=EMBEDDINGS)
        ids.append(made.id)
    advance(emulator, 1)
    statuses = [emulator.retrieve_batch(i).status for i in ids]
    # The large model's tokens do not count against the small one's limit.
    assert statuses == [S.IN_PROGRESS, S.IN_PROGRESS, S.FAILED]
    assert emulator.batches.enqueued_tokens(SMALL) == 20
    assert emulator.batches.enqueued_tokens(LARGE) == 20


def test_a_batch_alone_over_the_limit_fails_and_exactly_the_limit_passes() -> None:
    emulator = Emulator(enqueued_token_limit=20)
    made = []
    for tokens in ([21], [20]):
        file = emulator.create_file(embeddings_file(tokens), "in.jsonl", "batch")
        made.append(
            emulator.create_batch(input_file_id=file.id, endpoint=EMBEDDINGS).id
        )
        advance(emulator, 1)
    assert [emulator.retrieve_batch(i).status for i in made] == [
        S.FAILED,
        S.IN_PROGRESS,
    ]


def test_a_cancelling_batch_holds_its_tokens_until_it_is_cancelled() -> None:
    emulator = Emulator(enqueued_token_limit=30, cancel_grace_seconds=5)
    content = embeddings_file([10, 10])
    first = emulator.create_batch(
        input_file_id=emulator.create_file(content, "a.jsonl", "batch").id,
        endpoint=EMBEDDINGS,
    )
    advance(emulator, 1)
    emulator.cancel_batch(first.id)
    assert emulator.batches.enqueued_tokens(SMALL) == 20
    second = emulator.create_batch(
        input_file_id=emulator.create_file(content, "b.jsonl", "batch").id,
        endpoint=EMBEDDINGS,
    )
    advance(emulator, 1)  # first still cancelling: 20 + 20 > 30
    assert emulator.retrieve_batch(second.id).status is S.FAILED
    advance(emulator, 10)
    assert emulator.retrieve_batch(first.id).status is S.CANCELLED
    assert emulator.batches.enqueued_tokens(SMALL) == 0


def test_without_a_limit_nothing_is_counted_or_refused() -> None:
    emulator = Emulator()
    file = emulator.create_file(embeddings_file([10**5] * 3), "a.jsonl", "batch")
    made = emulator.create_batch(input_file_id=file.id, endpoint=EMBEDDINGS)
    advance(emulator, 1)
    assert emulator.retrieve_batch(made.id).status is S.IN_PROGRESS
    assert emulator.batches.enqueued_tokens(SMALL) == 0


# -- the estimate: the default handler's input tokens --------------------------------

_TEXT = st.text(min_size=1, max_size=60)


@st.composite
def _bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A body each endpoint's default handler answers 2xx."""
    endpoint = draw(st.sampled_from(ENDPOINTS))
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(sorted(ENDPOINT_MODELS[endpoint])))
    }
    if endpoint == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": draw(_TEXT)}]
    elif endpoint == "/v1/embeddings":
        body["input"] = draw(_TEXT | st.lists(_TEXT, min_size=1, max_size=4))
    elif endpoint in ("/v1/responses", "/v1/moderations"):
        body["input"] = draw(_TEXT)
    else:
        body["prompt"] = draw(_TEXT)
    return endpoint, body


@settings(max_examples=150)
@given(_bodies())
def test_the_estimate_is_what_the_default_handler_reports_as_input_tokens(
    drawn: tuple[str, dict[str, Any]],
) -> None:
    endpoint, body = drawn
    reply = default_handler(endpoint, body, "r1", 1_700_000_000)
    assert 200 <= reply.status_code < 300, reply
    assert reply.input_tokens == prompt_tokens(endpoint, body) >= 1


@settings(max_examples=25, deadline=None)
@given(st.lists(_bodies(), min_size=1, max_size=4))
def test_a_batch_holds_the_input_tokens_its_usage_reports(
    drawn: list[tuple[str, dict[str, Any]]],
) -> None:
    endpoint = drawn[0][0]
    bodies = [body for e, body in drawn if e == endpoint]
    model = bodies[0]["model"]
    lines = [
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": endpoint,
                "body": {**body, "model": model},
            }
        )
        for i, body in enumerate(bodies)
    ]
    emulator = Emulator(enqueued_token_limit=10**12)
    file = emulator.create_file("\n".join(lines).encode(), "in.jsonl", "batch")
    made = emulator.create_batch(input_file_id=file.id, endpoint=endpoint)
    advance(emulator, 1)
    assert emulator.retrieve_batch(made.id).status is S.IN_PROGRESS
    held = emulator.batches.enqueued_tokens(model)
    advance(emulator, 600)
    done = emulator.retrieve_batch(made.id)
    assert done.status is S.COMPLETED and done.usage is not None
    assert held == done.usage.input_tokens
    assert emulator.batches.enqueued_tokens(model) == 0


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_deep_prompt_counts_the_same_on_every_python(depth: int) -> None:
    # str() of a prompt nested this deep fails on Python 3.11 (its recursion
    # limit) and not on 3.13: the count must not depend on which runs it.
    deep: Any = "x"
    for _ in range(depth):
        deep = [deep]
    written = len("'x'") + 2 * depth  # [[...['x']...]]
    assert prompt_tokens("/v1/chat/completions", {"messages": deep}) == written // 4


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@given(_JSON_VALUES)
def test_the_length_is_str_s_at_any_depth(value: Any) -> None:
    assert str_length(value) == len(str(value))


def test_the_length_of_a_value_that_holds_itself_is_str_s() -> None:
    loop: list[Any] = ["x", {"k": ()}]
    loop.append(loop)
    loop[1]["self"] = loop[1]
    assert str_length(loop) == len(str(loop))


# -- the one rule: never more than the limit ------------------------------------------

_ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("create"),
            st.sampled_from((SMALL, LARGE)),
            st.lists(st.integers(1, 6), min_size=1, max_size=3),
        ),
        st.tuples(st.just("advance"), st.integers(0, 4)),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=25,
)
LIMIT = 10


def run_scenario(emulator: Emulator, actions: list[Any]) -> list[str]:
    """Drive ``emulator`` with ``actions``; every breach of the rule, described.

    The tokens each batch holds are known here (each request holds what its
    file says), so the sum of the enqueued ones is worked out from the
    batches' statuses, not read from the store.
    """
    made: dict[str, tuple[str, int]] = {}  # id -> model, tokens; in creation order
    breaches: list[str] = []

    def check(when: str) -> None:
        held = dict.fromkeys((SMALL, LARGE), 0)
        for batch_id, (model, tokens) in made.items():
            b = emulator.retrieve_batch(batch_id)
            if b.status in ENQUEUED and b.in_progress_at is not None:
                held[model] += tokens
            if b.status is S.FAILED:
                assert b.errors is not None and b.errors.data is not None
                assert [e.code for e in b.errors.data] == ["token_limit_exceeded"]
        for model, tokens in held.items():
            if tokens > LIMIT:
                breaches.append(f"{when}: {model} holds {tokens} > {LIMIT}")
            stored = emulator.batches.enqueued_tokens(model)
            if stored != tokens:
                breaches.append(f"{when}: the store says {model} holds {stored}")

    for step, action in enumerate(actions):
        if action[0] == "create":
            _, model, tokens = action
            file = emulator.create_file(
                embeddings_file(tokens, model), "in.jsonl", "batch"
            )
            b = emulator.create_batch(input_file_id=file.id, endpoint=EMBEDDINGS)
            made[b.id] = (model, sum(tokens))
        elif action[0] == "advance":
            advance(emulator, action[1])
        elif made:
            with contextlib.suppress(bf.BatchFSMError):  # 409: ended already
                emulator.cancel_batch(list(made)[action[1] % len(made)])
        check(f"step {step} {action}")
    advance(emulator, 10**5)
    check("at the end")
    return breaches


@settings(max_examples=40, deadline=None)
@given(actions=_ACTIONS)
def test_the_enqueued_batches_never_hold_more_than_the_limit(
    store_name: str,  # noqa: F811 - test_stores' fixture
    actions: list[Any],
) -> None:
    with fresh(store_name) as made:
        emulator = Emulator(enqueued_token_limit=LIMIT, store=made.batches)
        assert run_scenario(emulator, actions) == []


class _NoLimitStore(MemoryBatchStore):
    """A store whose check is lost: it holds the tokens and never refuses."""

    def enqueue(self, batch: bf.Batch, work: Work, **kw: Any) -> Any:
        kw["limit"] = 2**62
        return super().enqueue(batch, work, **kw)


class _ForgettingStore(MemoryBatchStore):
    """A store that never gives the tokens of an ended batch back."""

    def write(self, batch: bf.Batch, work: Work | None, **kw: Any) -> bool:
        holds = dict(self._holds)
        written = super().write(batch, work, **kw)
        self._holds.update(holds)
        if written and work is None and batch.id in holds:
            model, tokens = holds[batch.id]
            self._enqueued[model] += tokens
        return written


_TWO_OVER = [("create", SMALL, [6]), ("create", SMALL, [6]), ("advance", 1)]
_ONE_AFTER_ANOTHER = [("create", SMALL, [6]), ("advance", 20), ("create", SMALL, [6])]


def test_the_rule_bites_when_the_check_is_lost() -> None:
    assert run_scenario(Emulator(enqueued_token_limit=LIMIT), _TWO_OVER) == []
    broken = Emulator(enqueued_token_limit=LIMIT, store=_NoLimitStore())
    assert any("holds 12 > 10" in b for b in run_scenario(broken, _TWO_OVER))


def test_the_rule_bites_when_ended_batches_keep_their_tokens() -> None:
    fine = Emulator(enqueued_token_limit=LIMIT)
    assert run_scenario(fine, _ONE_AFTER_ANOTHER) == []
    broken = Emulator(enqueued_token_limit=LIMIT, store=_ForgettingStore())
    assert run_scenario(broken, _ONE_AFTER_ANOTHER) != []


# -- the store's enqueue, against a model of it -------------------------------------

_STORE_OPS = st.lists(
    st.tuples(
        st.sampled_from(("enqueue", "stale", "progress", "end")),
        st.integers(0, 5),  # which batch
        st.sampled_from((SMALL, LARGE)),
        st.integers(0, 8),  # tokens
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=25, deadline=None)
@given(ops=_STORE_OPS)
# On every store: exactly the limit passes, one token more is full.
@example(
    ops=[("enqueue", 0, SMALL, 8), ("enqueue", 1, SMALL, 2), ("enqueue", 2, SMALL, 1)]
)
def test_enqueue_holds_and_frees_tokens_as_a_model_of_it_says(
    store_name: str,  # noqa: F811 - test_stores' fixture
    ops: list[tuple[str, int, str, int]],
) -> None:
    # The model: each model's held tokens, and which batch holds how many.
    held = dict.fromkeys((SMALL, LARGE), 0)
    holds: dict[int, tuple[str, int]] = {}
    with fresh(store_name) as made:
        store = made.batches
        for i in range(6):
            store.insert(batch(i), Work(due_at=1))
        for op, i, model, tokens in ops:
            b, work = store.get(f"batch_{i:04d}"), store.work(f"batch_{i:04d}")
            assert b is not None
            if work is None:
                continue  # ended
            if op in ("enqueue", "stale"):
                if b.status is not S.VALIDATING:
                    continue
                started = bf.advance(b, "start", at=1_700_000_001, model=model)
                epoch = work.epoch + (op == "stale")
                answer = store.enqueue(
                    started, Work(due_at=3), status=S.VALIDATING, epoch=epoch,
                    tokens=tokens, limit=LIMIT,
                )  # fmt: skip
                if op == "stale":
                    assert answer == "stale"
                elif held[model] + tokens > LIMIT:
                    assert answer == "full"
                else:
                    assert answer == "enqueued"
                    held[model] += tokens
                    holds[i] = (model, tokens)
            elif op == "progress":  # a write that goes on keeps the hold
                assert store.write(
                    b, attrs.evolve(work, due_at=4), status=b.status, epoch=work.epoch
                )
            else:
                assert b.expires_at is not None
                ended = bf.advance(b, "expire", at=b.expires_at)
                assert store.write(ended, None, status=b.status, epoch=work.epoch)
                if i in holds:
                    gone_model, gone = holds.pop(i)
                    held[gone_model] -= gone
            for m in (SMALL, LARGE):
                assert store.enqueued_tokens(m) == held[m] <= LIMIT


def test_enqueue_refuses_a_batch_without_a_model_or_with_negative_tokens(
    stores: Stores,  # noqa: F811 - test_stores' fixture
) -> None:
    store = stores.batches
    store.insert(batch(1), Work(due_at=1))
    started = bf.advance(batch(1), "start", at=1_700_000_001)
    with pytest.raises(ValueError, match="names no model"):
        store.enqueue(started, Work(due_at=3), status=S.VALIDATING, epoch=0,
                      tokens=1, limit=LIMIT)  # fmt: skip
    started = attrs.evolve(started, model=SMALL)
    with pytest.raises(ValueError, match="tokens must be an integer of at least 0"):
        store.enqueue(started, Work(due_at=3), status=S.VALIDATING, epoch=0,
                      tokens=-1, limit=LIMIT)  # fmt: skip
    assert store.get(batch(1).id) == batch(1)


#: Model names a client may send (with ``--any-model``): long, with a NUL, and
#: one shaped like a digest that a store might use for a name it cannot key on.
ODD_MODELS = (
    "m" * 3000 + "".join(chr(0x4E00 + i) for i in range(3000)),
    "a\x00b",
    "a",
    "sha256:" + "0" * 64,
)


def test_any_model_name_holds_and_frees_its_own_tokens(
    stores: Stores,  # noqa: F811 - test_stores' fixture
) -> None:
    # A name PostgreSQL cannot index (past a third of a page) or hold (NUL)
    # once left a batch in validating, its work failing, until it expired.
    store = stores.batches
    for i, model in enumerate(ODD_MODELS):
        store.insert(batch(i), Work(due_at=1))
        started = bf.advance(batch(i), "start", at=1_700_000_001, model=model)
        answer = store.enqueue(
            started, Work(due_at=3), status=S.VALIDATING, epoch=0, tokens=i + 1,
            limit=LIMIT,
        )  # fmt: skip
        assert answer == "enqueued"
    assert [store.enqueued_tokens(m) for m in ODD_MODELS] == [1, 2, 3, 4]
    for i, model in enumerate(ODD_MODELS):
        held = store.get(batch(i).id)
        assert held is not None and held.model == model
        assert held.expires_at is not None
        ended = bf.advance(held, "expire", at=held.expires_at)
        assert store.write(ended, None, status=S.IN_PROGRESS, epoch=1)
    assert [store.enqueued_tokens(m) for m in ODD_MODELS] == [0, 0, 0, 0]


# -- starts at once: the memory store's lock, PostgreSQL's row lock ------------------


class _PausingCounts(dict[str, int]):
    """The held tokens, whose reads wait at a barrier: a pause in the check."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        with contextlib.suppress(threading.BrokenBarrierError):
            # Both starts read before either holds, unless a lock keeps the
            # second out: then the wait ends and the first goes on.
            self.barrier.wait(timeout=0.5)
        return value


def _starts_at_once(store: MemoryBatchStore) -> list[str]:
    for i in (1, 2):
        store.insert(batch(i), Work(due_at=1))
    store._enqueued = _PausingCounts(threading.Barrier(2))
    answers = ["", ""]

    def start(k: int) -> None:
        started = bf.advance(batch(k + 1), "start", at=1_700_000_001, model=SMALL)
        answers[k] = store.enqueue(
            started, Work(due_at=3), status=S.VALIDATING, epoch=0, tokens=6, limit=10
        )

    threads = [threading.Thread(target=start, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(answers)


def test_two_starts_at_once_in_memory_hold_at_most_the_limit() -> None:
    assert _starts_at_once(MemoryBatchStore()) == ["enqueued", "full"]


def test_the_memory_test_bites_when_the_lock_is_lost() -> None:
    store = MemoryBatchStore()
    store._lock = contextlib.nullcontext()  # type: ignore[assignment]
    assert _starts_at_once(store) == ["enqueued", "enqueued"]


@contextlib.contextmanager
def _two_processes(url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    first, second = PostgresStore(url), PostgresStore(url)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def _postgres_starts_at_once(url: str, *, lock: bool) -> tuple[list[str], int]:
    """Two processes start a batch each while a third holds the model's row.

    Both starts are made to wait at the row (seen in ``pg_stat_activity``, a
    state, not a time) before it is let go, so both have read what they read
    before either writes; with the row lock, the second reads the first's hold.
    """
    import psycopg

    with _two_processes(url) as (one, two):
        for store, i in ((one, 1), (two, 2)):
            store.insert(batch(i), Work(due_at=1))
            if not lock:  # as if the dialect forgot FOR UPDATE
                store._db.lock_sql = ""
        answers = ["", ""]

        def start(store: PostgresStore, k: int) -> None:
            started = bf.advance(batch(k + 1), "start", at=1_700_000_001, model=SMALL)
            answers[k] = store.enqueue(
                started, Work(due_at=3), status=S.VALIDATING, epoch=0, tokens=6,
                limit=10,
            )  # fmt: skip

        with psycopg.connect(url) as holder:
            holder.execute(
                "INSERT INTO batchfsm_enqueued (model, tokens) VALUES (%s, 0)", (SMALL,)
            )
            holder.commit()
            holder.execute(
                "SELECT tokens FROM batchfsm_enqueued WHERE model = %s FOR UPDATE",
                (SMALL,),
            )
            threads = [
                threading.Thread(target=start, args=(store, k))
                for k, store in enumerate((one, two))
            ]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60  # a readiness wait, not a speed check
            with psycopg.connect(url, autocommit=True) as watcher:
                while True:
                    (waiting,) = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                        " current_database() AND wait_event_type = 'Lock'"
                    ).fetchone() or (0,)
                    if waiting == 2:
                        break
                    assert time.monotonic() < deadline, "the starts never waited"
                    time.sleep(0.01)
            holder.commit()  # let go of the row
            for t in threads:
                t.join()
        return sorted(answers), one.enqueued_tokens(SMALL)


def test_two_processes_starting_at_once_hold_at_most_the_limit(
    postgres_url: str,
) -> None:
    assert _postgres_starts_at_once(postgres_url, lock=True) == (
        ["enqueued", "full"],
        6,
    )


def test_the_postgres_test_bites_without_the_row_lock(postgres_url: str) -> None:
    answers, held = _postgres_starts_at_once(postgres_url, lock=False)
    assert answers == ["enqueued", "enqueued"] and held == 12


def test_a_database_keeps_what_its_batches_hold_across_a_restart(tmp_path: Any) -> None:
    path = tmp_path / "db.sqlite"
    store = SQLiteStore(path)
    emulator = Emulator(store=store, ids=store.ids(), enqueued_token_limit=50)
    file = emulator.create_file(embeddings_file([30]), "in.jsonl", "batch")
    first = emulator.create_batch(input_file_id=file.id, endpoint=EMBEDDINGS)
    advance(emulator, 1)
    assert emulator.retrieve_batch(first.id).status is S.IN_PROGRESS
    store.close()
    again = SQLiteStore(path)
    assert again.enqueued_tokens(SMALL) == 30
    restarted = Emulator(
        clock=emulator.clock, store=again, ids=again.ids(), enqueued_token_limit=50
    )
    second = restarted.create_batch(input_file_id=file.id, endpoint=EMBEDDINGS)
    advance(restarted, 1)
    assert restarted.retrieve_batch(second.id).status is S.FAILED
    advance(restarted, 600)
    assert restarted.retrieve_batch(first.id).status is S.COMPLETED
    assert again.enqueued_tokens(SMALL) == 0
    again.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_version_4_database_upgrades_its_batches_in_flight_holding_nothing(
    dialect: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    # A batch in progress when the database was upgraded started under no
    # limit: it holds nothing, and its end gives nothing back.
    b = batch(1)
    started = bf.advance(b, "start", at=1_700_000_001, model=SMALL)
    row = (b.id, "in_progress", bf.dumps(started), _WORK, 1_700_000_002, 3)
    insert = (
        "INSERT INTO batchfsm_batches (id, status, body, work, due_at, epoch)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    )
    if dialect == "sqlite":
        url = str(tmp_path / "v4.sqlite")
        _sqlite_at_version(url, 4)
        with contextlib.closing(sqlite3.connect(url, isolation_level=None)) as conn:
            conn.execute(insert, row)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_url")
        _postgres_at_version(url, 4)
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(insert.replace("?", "%s"), row)
    with open_store(url) as store:
        assert store.enqueued_tokens(SMALL) == 0
        other = batch(2)
        store.insert(other, Work(due_at=1))
        assert store.enqueue(
            bf.advance(other, "start", at=1_700_000_001, model=SMALL),
            Work(due_at=2), status=S.VALIDATING, epoch=0, tokens=7, limit=LIMIT,
        ) == "enqueued"  # fmt: skip
        assert b.expires_at is not None
        assert store.write(
            bf.advance(started, "expire", at=b.expires_at), None,
            status=S.IN_PROGRESS, epoch=3,
        )  # fmt: skip
        assert store.enqueued_tokens(SMALL) == 7


# -- settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        (0, ValueError, "enqueued_token_limit must be a positive integer"),
        (True, TypeError, "enqueued_token_limit must be a positive integer"),
        (1.5, TypeError, "got float"),
        (2**63, ValueError, "at most 9223372036854775807"),
        ({SMALL: -1}, ValueError, f"enqueued_token_limit[{SMALL!r}] must be"),
        ({"": 5}, TypeError, "keys must be model names"),
        ({SMALL: "5"}, TypeError, "got str"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(
    value: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as info:
        Emulator(enqueued_token_limit=value)
    assert words in str(info.value)
    with pytest.raises(error):
        token_limits(value)


def test_limits_as_serve_reads_them() -> None:
    assert parse_limit("90000") == ("*", 90_000)
    assert parse_limit("gpt-4o-mini=2000000") == ("gpt-4o-mini", 2_000_000)
    assert parse_limit("ft:gpt-4o:acme::x=7") == ("ft:gpt-4o:acme::x", 7)


@pytest.mark.parametrize(
    "value", ["", "0", "-5", "x", "=5", "gpt-4o=", "gpt-4o=0", "1e6", "2,000", "9" * 30]
)
def test_serve_refuses_a_bad_enqueued_token_limit_in_one_line(value: str) -> None:
    line = _serve_refusal(f"--enqueued-token-limit={value}")
    assert "--enqueued-token-limit must be N or MODEL=N, N a positive integer" in line
    assert f"got {value!r}" in line


def test_serve_fails_a_batch_over_its_enqueued_token_limit(serve: Any) -> None:
    from .test_fidelity import poll_real

    base = serve("--speed", "2000", "--enqueued-token-limit", f"{SMALL}=5")
    with openai.OpenAI(api_key="sk", base_url=f"{base}/v1", max_retries=0) as client:
        made = client.batches.create(
            input_file_id=client.files.create(
                file=("in.jsonl", io.BytesIO(embeddings_file([6]))), purpose="batch"
            ).id,
            endpoint=EMBEDDINGS,
            completion_window="24h",
        )
        failed = poll_real(client, made.id)
    assert failed.status == "failed"
    [error] = failed.errors.data
    assert (error.code, error.line, error.param, error.message) == (
        "token_limit_exceeded",
        None,
        None,
        live_message(SMALL, "5"),
    )
