"""A stateful test kit: drive any Batch API through an adapter, judge every answer.

:class:`BatchAPIStateMachine` is a Hypothesis ``RuleBasedStateMachine``. It
creates batches (some with valid input, some not), retrieves them, cancels them
and lets time pass, in every order Hypothesis can think of, and after every step
checks that each snapshot the system under test answered passes
:func:`batchfsm.check`, that it follows the previous snapshot of the same batch
(:func:`batchfsm.check_step`), that a cancel is accepted exactly when the batch
is not terminal, and that a refused cancel leaves the batch alone.

The system under test is reached through a small adapter
(:class:`BatchAPIAdapter`): four methods and ``close``. Two come with batchfsm:
:class:`LifecycleAdapter`, a deterministic simulated server built on
:class:`batchfsm.BatchMachine`, and :class:`EmulatorAdapter` for
:class:`batchfsm.emulator.Emulator`; an HTTP
adapter for your server is a few lines of ``httpx`` (see the docs).

Example:
    >>> from hypothesis import settings
    >>> from batchfsm.testing import BatchAPIStateMachine, LifecycleAdapter
    >>> class LifecycleMachine(BatchAPIStateMachine):
    ...     def make_adapter(self):
    ...         return LifecycleAdapter()
    >>> LifecycleMachine.TestCase.settings = settings(max_examples=5)
    >>> LifecycleMachine.TestCase("runTest").runTest()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, rule

from ._errors import BatchFSMError, InvalidTransition, SchemaError
from ._invariants import check, check_step
from ._json_io import from_dict
from ._lifecycle import BatchMachine, new_batch
from ._model import (
    TERMINAL_STATUSES,
    Batch,
    BatchError,
    BatchErrors,
    BatchRequestCounts,
    BatchStatus,
)

__all__ = [
    "BatchAPIAdapter",
    "BatchAPIStateMachine",
    "EmulatorAdapter",
    "LifecycleAdapter",
    "Refused",
]

Snapshot = Batch | Mapping[str, Any]


class Refused(BatchFSMError):  # noqa: N818 - it names what the server did
    """The system under test refused a request (for a cancel: HTTP 4xx).

    Attributes:
        status_code: the HTTP status, when there is one.
        body: the answer's body (for an API, ``{"error": {...}}``).
    """

    def __init__(self, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(status_code, body)
        self.status_code = status_code
        self.body = body


class BatchAPIAdapter(Protocol):
    """How :class:`BatchAPIStateMachine` reaches a system under test.

    Snapshots may be :class:`batchfsm.Batch` objects or the API's JSON dicts.
    """

    def create(self, requests: int, *, valid: bool) -> Snapshot:
        """Create a batch of ``requests`` requests and return the answer.

        When ``valid`` is false the input file must fail validation.
        """

    def retrieve(self, batch_id: str) -> Snapshot:
        """Return the batch as the system answers it now."""

    def cancel(self, batch_id: str) -> Snapshot:
        """Cancel the batch and return the answer; raise :class:`Refused` if refused."""

    def wait(self, seconds: int) -> None:
        """Let ``seconds`` of (virtual) time pass, and work progress meanwhile."""

    def close(self) -> None:
        """Release what the adapter holds."""


class BatchAPIStateMachine(RuleBasedStateMachine):
    """Drive a Batch API through an adapter and judge every snapshot it answers.

    Subclass it, define :meth:`make_adapter`, and let pytest collect
    ``TestYourServer = YourMachine.TestCase``.
    """

    created = Bundle("created")

    def __init__(self) -> None:
        super().__init__()
        self.api = self.make_adapter()
        self.latest: dict[str, Batch] = {}

    def make_adapter(self) -> BatchAPIAdapter:
        """The adapter to the system under test (a fresh one per test case)."""
        raise NotImplementedError("define make_adapter() in your subclass")

    def observe(self, snapshot: Snapshot, step: str) -> Batch:
        """Judge one answer against the rules and the batch's previous answer."""
        try:
            batch = snapshot if isinstance(snapshot, Batch) else from_dict(snapshot)
        except SchemaError as exc:
            raise AssertionError(f"{step}: the answer is not a Batch: {exc}") from None
        previous = self.latest.get(batch.id)
        problems = check(batch)
        if previous is not None:
            problems += check_step(previous, batch)
        if problems:
            details = "\n  ".join(f"{v.rule} @ {v.path}: {v.message}" for v in problems)
            raise AssertionError(f"{step} answered batch {batch.id}:\n  {details}")
        self.latest[batch.id] = batch
        return batch

    @rule(target=created, requests=st.integers(1, 20), valid=st.booleans())
    def create(self, requests: int, valid: bool) -> str:
        """Create a batch; it must start ``validating``."""
        batch = self.observe(self.api.create(requests, valid=valid), "create")
        assert batch.status is BatchStatus.VALIDATING, f"created as {batch.status}"
        return batch.id

    @rule(batch_id=created)
    def retrieve(self, batch_id: str) -> None:
        """Retrieve a batch."""
        self.observe(self.api.retrieve(batch_id), f"retrieve {batch_id}")

    @rule(batch_id=created)
    def cancel(self, batch_id: str) -> None:
        """Cancel a batch: accepted unless it is terminal, refused if it is."""
        before = self.latest[batch_id]
        try:
            after = self.observe(self.api.cancel(batch_id), f"cancel {batch_id}")
        except Refused:
            now = self.observe(self.api.retrieve(batch_id), f"retrieve {batch_id}")
            assert now.status in TERMINAL_STATUSES, (
                f"cancel of a {now.status} batch was refused"
            )
            return
        # Judged from both sides: a poll may not have seen the batch end yet.
        if before.status in TERMINAL_STATUSES or after.status not in (
            BatchStatus.CANCELLING,
            BatchStatus.CANCELLED,
        ):
            ended = before if before.status in TERMINAL_STATUSES else after
            raise AssertionError(
                f"cancel of a {ended.status} batch was accepted "
                f"(answered {after.status})"
            )

    @rule(seconds=st.sampled_from([1, 5, 30, 600, 3_600, 90_000]))
    def wait(self, seconds: int) -> None:
        """Let time pass (90,000 s is past any batch's expiry)."""
        self.api.wait(seconds)

    def teardown(self) -> None:
        """Close the adapter."""
        self.api.close()


# -- a simulated server on the pure lifecycle --------------------------------------


class LifecycleAdapter:
    """A deterministic simulated Batch server, built on :class:`BatchMachine`.

    Time is virtual. A batch validates for ``validation_s`` seconds (then fails
    if its input was invalid), runs one request per ``per_request_s`` seconds
    (every fourth request fails), finalizes for ``finalizing_s`` seconds, and
    stops cancelling after ``cancel_grace_s``; one not done by ``expires_at``
    expires with its partial results.
    """

    validation_s = 2
    per_request_s = 10
    finalizing_s = 5
    cancel_grace_s = 3

    def __init__(self, start: int = 1_700_000_000) -> None:
        self.now = start
        self.machines: dict[str, BatchMachine] = {}
        self.plans: dict[str, tuple[int, bool]] = {}  # id -> (requests, valid)

    def create(self, requests: int, *, valid: bool) -> Batch:
        """Create a batch of ``requests`` requests."""
        batch_id = f"batch_{len(self.machines):032x}"
        self.machines[batch_id] = BatchMachine(
            new_batch(
                id=batch_id,
                input_file_id=f"file-{len(self.machines):022x}",
                endpoint="/v1/chat/completions",
                created_at=self.now,
            ),
            clock=lambda: self.now,
        )
        self.plans[batch_id] = (requests, valid)
        return self.machines[batch_id].batch

    def retrieve(self, batch_id: str) -> Batch:
        """The batch now."""
        return self.machines[batch_id].batch

    def cancel(self, batch_id: str) -> Batch:
        """Cancel; refused with the API's 409 body when the batch is terminal."""
        try:
            return self.machines[batch_id].cancel()
        except InvalidTransition as exc:
            raise Refused(409, exc.to_api_error()) from None

    def close(self) -> None:
        """Nothing to release."""

    def wait(self, seconds: int) -> None:
        """Move every batch through what it does in the next ``seconds``."""
        until = self.now + seconds
        while True:
            due = [
                (self._due(m.batch), batch_id)
                for batch_id, m in self.machines.items()
                if m.status not in TERMINAL_STATUSES
            ]
            if not due or min(due)[0] > until:
                break
            at, batch_id = min(due)
            self.now = max(self.now, at)
            self._act(batch_id)
        self.now = until

    def _due(self, batch: Batch) -> int:
        assert batch.expires_at is not None
        requests, _ = self.plans[batch.id]
        status = batch.status
        if status is BatchStatus.CANCELLING:
            assert batch.cancelling_at is not None
            return batch.cancelling_at + self.cancel_grace_s
        if status is BatchStatus.VALIDATING:
            due = batch.created_at + self.validation_s
        elif status is BatchStatus.IN_PROGRESS:
            assert batch.in_progress_at is not None
            due = batch.in_progress_at + requests * self.per_request_s
        else:
            assert batch.finalizing_at is not None
            due = batch.finalizing_at + self.finalizing_s
        return min(due, batch.expires_at)

    def _done(self, batch: Batch) -> BatchRequestCounts:
        requests, _ = self.plans[batch.id]
        if batch.in_progress_at is None:
            return BatchRequestCounts(total=0, completed=0, failed=0)
        done = min(requests, (self.now - batch.in_progress_at) // self.per_request_s)
        if batch.cancelling_at is not None:
            elapsed = batch.cancelling_at - batch.in_progress_at
            done = min(done, elapsed // self.per_request_s)
        return BatchRequestCounts(
            total=requests, completed=done - done // 4, failed=done // 4
        )

    def _act(self, batch_id: str) -> None:
        machine = self.machines[batch_id]
        batch = machine.batch
        requests, valid = self.plans[batch_id]
        assert batch.expires_at is not None
        if batch.status is BatchStatus.CANCELLING:
            machine.mark_cancelled(**self._results(self._done(batch)))
        elif self.now >= batch.expires_at:
            machine.expire(**self._results(self._done(batch)))
        elif batch.status is BatchStatus.VALIDATING and not valid:
            error = BatchError(
                code="invalid_json_line", line=1, message="Invalid JSON."
            )
            machine.fail(errors=BatchErrors(data=(error,)))
        elif batch.status is BatchStatus.VALIDATING:
            machine.start(
                request_counts=BatchRequestCounts(
                    total=requests, completed=0, failed=0
                ),
                model="gpt-4o-mini-2024-07-18",
            )
        elif batch.status is BatchStatus.IN_PROGRESS:
            machine.finalize(request_counts=self._done(batch))
        else:
            machine.complete(**self._results(batch.request_counts))

    def _results(self, counts: BatchRequestCounts | None) -> dict[str, Any]:
        results: dict[str, Any] = {"request_counts": counts}
        if counts is not None and counts.completed:
            results["output_file_id"] = f"file-out{self.now:018x}"
        if counts is not None and counts.failed:
            results["error_file_id"] = f"file-err{self.now:018x}"
        return results


class EmulatorAdapter:
    """Drives a :class:`batchfsm.emulator.Emulator` on a virtual clock.

    ``create`` uploads a chat-completions input file of ``requests`` lines
    (with a bad line when not ``valid``) and creates a batch for it.
    """

    def __init__(self, **options: Any) -> None:
        from .emulator import Emulator, VirtualClock

        self.clock = VirtualClock()
        self.emulator = Emulator(clock=self.clock, **options)

    def create(self, requests: int, *, valid: bool) -> Batch:
        """Upload an input file and create a batch for it."""
        from .emulator import make_input_file

        content = make_input_file(
            requests, bad_lines=None if valid else {requests: "{not json"}
        )
        upload = self.emulator.create_file(content, "input.jsonl", "batch")
        return self.emulator.create_batch(
            input_file_id=upload.id, endpoint="/v1/chat/completions"
        )

    def retrieve(self, batch_id: str) -> Batch:
        """The batch now."""
        return self.emulator.retrieve_batch(batch_id)

    def cancel(self, batch_id: str) -> Batch:
        """Cancel; the emulator's 409 becomes :class:`Refused`."""
        from .emulator import ApiError

        try:
            return self.emulator.cancel_batch(batch_id)
        except ApiError as exc:
            raise Refused(exc.status_code, exc.body) from None

    def wait(self, seconds: int) -> None:
        """Move the virtual clock."""
        self.clock.advance(seconds)

    def close(self) -> None:
        """Nothing to release."""
