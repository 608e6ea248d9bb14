"""pytest fixtures for testing against the emulator (loaded by pytest on its own).

Installed with batchfsm, this plugin gives every test suite:

- ``batch_emulator``: a fresh :class:`~batchfsm.emulator.Emulator` on a
  :class:`~batchfsm.emulator.VirtualClock` (move time with
  ``batch_emulator.clock.advance(seconds)``);
- ``batch_emulator_options``: override it to pass options to the emulator;
- ``batch_emulator_http``: an ``httpx2.Client`` talking to it in-process;
- ``batch_emulator_openai``: the official ``openai`` client talking to it.

Disable it with ``-p no:batchfsm``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ._clock import VirtualClock
from ._engine import Emulator

if TYPE_CHECKING:
    import httpx2
    import openai

#: The base URL the in-process clients use (no socket is ever opened).
BASE_URL = "http://batchfsm.emulator"


@pytest.fixture
def batch_emulator_options() -> dict[str, Any]:
    """Options for ``batch_emulator``; override this fixture to change them."""
    return {}


@pytest.fixture
def batch_emulator(batch_emulator_options: dict[str, Any]) -> Emulator:
    """A fresh emulator on a virtual clock."""
    options = {"clock": VirtualClock(), **batch_emulator_options}
    return Emulator(**options)


@pytest.fixture
def batch_emulator_http(batch_emulator: Emulator) -> Iterator[httpx2.Client]:
    """An ``httpx2.Client`` for the emulator's HTTP API, in-process."""
    import httpx2

    from ._app import create_app
    from ._transport import EmulatorTransport

    transport = EmulatorTransport(create_app(batch_emulator))
    with httpx2.Client(transport=transport, base_url=BASE_URL) as client:
        yield client
    transport.close()


@pytest.fixture
def batch_emulator_openai(batch_emulator_http: httpx2.Client) -> openai.OpenAI:
    """The official ``openai`` client, talking to the emulator in-process."""
    openai_module = pytest.importorskip("openai")
    client: openai.OpenAI = openai_module.OpenAI(
        api_key="sk-batchfsm-emulator",
        base_url=f"{BASE_URL}/v1",
        http_client=batch_emulator_http,
        max_retries=0,
    )
    return client
