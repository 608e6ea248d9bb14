from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

import batchfsm as bf
from batchfsm.testing import (
    BatchAPIStateMachine,
    LifecycleAdapter,
    Refused,
)


class LifecycleMachine(BatchAPIStateMachine):
    def make_adapter(self) -> LifecycleAdapter:
        return LifecycleAdapter()


TestPureLifecycle = LifecycleMachine.TestCase


def run(machine: type[BatchAPIStateMachine]) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=200,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )


class ForgetsCancellingAt(LifecycleAdapter):
    """A planted bug: cancel moves the status but writes no cancelling_at."""

    def cancel(self, batch_id: str) -> Any:
        machine = self.machines[batch_id]
        if machine.status in bf.TERMINAL_STATUSES:
            raise Refused(409)
        if machine.status is bf.BatchStatus.CANCELLING:
            return machine.batch
        broken = attrs.evolve(machine.batch, status=bf.BatchStatus.CANCELLING)
        machine._batch = broken  # reach past the machine, as a buggy server would
        return broken


class CancelsFinishedBatches(LifecycleAdapter):
    """A planted bug: a cancel of a terminal batch is answered 200, unchanged."""

    def cancel(self, batch_id: str) -> Any:
        machine = self.machines[batch_id]
        if machine.status in bf.TERMINAL_STATUSES:
            return machine.batch
        return super().cancel(batch_id)


class RefusesCancellingTwice(LifecycleAdapter):
    """A planted bug: a retried cancel is refused instead of accepted."""

    def cancel(self, batch_id: str) -> Any:
        if self.machines[batch_id].status is bf.BatchStatus.CANCELLING:
            raise Refused(409)
        return super().cancel(batch_id)


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        (ForgetsCancellingAt, "stamp.missing @ cancelling_at"),
        (CancelsFinishedBatches, "batch was accepted"),
        (RefusesCancellingTwice, "cancel of a cancelling batch was refused"),
    ],
)
def test_the_machine_finds_a_planted_bug(
    adapter: type[LifecycleAdapter], message: str
) -> None:
    class Broken(BatchAPIStateMachine):
        def make_adapter(self) -> LifecycleAdapter:
            return adapter()

    with pytest.raises((AssertionError, Flaky), match=message):
        run(Broken)


def test_the_machine_needs_an_adapter():
    with pytest.raises(NotImplementedError, match="make_adapter"):
        BatchAPIStateMachine()


def test_the_simulated_server_reaches_every_terminal_status():
    api = LifecycleAdapter()
    ids = [
        api.create(3, valid=True),
        api.create(2, valid=False),
        api.create(50, valid=True),
    ]
    cancelled = api.create(100, valid=True)
    api.wait(100)
    api.cancel(cancelled.id)
    api.wait(90_000)
    statuses = {api.retrieve(b.id).status for b in [*ids, cancelled]}
    assert statuses == {"completed", "failed", "cancelled"}
    late = api.create(100_000, valid=True)
    api.wait(90_000)
    expired = api.retrieve(late.id)
    assert expired.status == "expired"
    assert bf.check(expired) == []
    with pytest.raises(Refused) as info:
        api.cancel(late.id)
    assert info.value.status_code == 409
    assert info.value.body["error"]["message"] == (
        "Cannot cancel a batch with status 'expired'."
    )
