"""What serve's protocol takes from uvicorn's internals, held to what it expects.

``GuardedH11Protocol`` subclasses uvicorn's ``H11Protocol``, which is not
uvicorn's public API: pyproject.toml bounds uvicorn to the versions tested,
and these tests fail first when a new uvicorn moves what the subclass
relies on (the behaviour itself is tested in test_serve.py).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
from pathlib import Path
from typing import Any

import h11
import pytest
import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from batchfsm.emulator import Emulator
from batchfsm.emulator._protocol import (
    INVALID_REQUEST,
    UVICORN_INTERNALS,
    GuardedH11Protocol,
    Limits,
)
from batchfsm.emulator._server import config

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def _requirement(name: str) -> Requirement:
    """The requirement on ``name`` in pyproject.toml (read as text: Python
    3.10 has no TOML parser, and the installed metadata may be another
    checkout's)."""
    found = re.findall(rf'"({name}[<>=!~ ][^"]*)"', PYPROJECT.read_text("utf-8"))
    assert len(found) == 1, f"{name}: {found}"
    return Requirement(found[0])


@pytest.mark.parametrize("name", ["uvicorn", "h11"])
def test_uvicorn_and_h11_are_bounded_above_to_the_versions_tested(name: str) -> None:
    bounds = {spec.operator for spec in _requirement(name).specifier}
    assert "<" in bounds, f"{name} needs an upper bound: the subclass uses internals"


def test_the_installed_uvicorn_is_within_the_bounds() -> None:
    assert Version(uvicorn.__version__) in _requirement("uvicorn").specifier


@pytest.mark.parametrize(("name", "parameters"), sorted(UVICORN_INTERNALS.items()))
def test_each_method_the_subclass_overrides_or_calls_is_there_as_expected(
    name: str, parameters: tuple[str, ...]
) -> None:
    method = getattr(H11Protocol, name)
    assert callable(method)
    assert tuple(inspect.signature(method).parameters) == parameters


def test_the_attributes_the_subclass_reads_are_set_as_expected() -> None:
    loop = asyncio.new_event_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    try:
        state = ServerState()
        made = config(Emulator())
        made.load()
        protocol = H11Protocol(
            config=made, server_state=state, app_state={}, _loop=loop
        )
        # Built in __init__: the h11 connection (which the subclass replaces),
        # the set of open connections shared by the server, the loop.
        assert type(protocol.conn) is h11.Connection
        assert protocol.connections is state.connections
        assert protocol.loop is loop
        # Set in connection_made: the transport and the client's address.
        transport, _ = loop.run_until_complete(
            loop.connect_accepted_socket(lambda: protocol, ours)
        )
        assert protocol.transport is transport
        assert protocol in state.connections
        assert protocol.client == theirs.getsockname()
        assert protocol.flow.write_paused is False  # uvicorn's FlowControl
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        assert protocol not in state.connections  # connection_lost discards it
    finally:
        theirs.close()
        loop.close()


def test_uvicorn_takes_the_protocol_class_it_is_given() -> None:
    made = config(Emulator(), limits=Limits(max_connections_per_address=7))
    made.load()
    chosen = made.http_protocol_class
    assert isinstance(chosen, type)
    assert issubclass(chosen, GuardedH11Protocol)
    assert chosen.gate.limits.max_connections_per_address == 7
    assert made.h11_max_incomplete_event_size == Limits().max_head_bytes


def test_uvicorn_warns_of_an_unparsable_request_in_the_words_we_hold_back() -> None:
    # The filter that keeps one WARNING per bad request out of the log
    # matches uvicorn's message exactly.
    assert INVALID_REQUEST in inspect.getsource(H11Protocol.handle_events)
    assert "send_400_response(" in inspect.getsource(H11Protocol.handle_events)


def test_h11_reports_an_oversized_incomplete_head_as_431() -> None:
    # The refusal's status is read from h11's hint.
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1024)
    conn.receive_data(b"GET / HTTP/1.1\r\nX: " + b"x" * 2000)
    with pytest.raises(h11.RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.error_status_hint == 431


def test_a_refused_connection_is_not_counted_among_the_open_ones() -> None:
    # While a flood of refused connections waits to be closed, none of them
    # may take a place an admitted client would need: all arrive in one turn
    # of the loop here, before any refused one is closed.
    loop = asyncio.new_event_loop()
    state = ServerState()
    made = config(
        Emulator(), limits=Limits(max_connections=2, max_connections_per_address=1)
    )
    made.load()
    protocol_class = made.http_protocol_class
    assert isinstance(protocol_class, type)
    assert issubclass(protocol_class, GuardedH11Protocol)
    theirs: list[socket.socket] = []
    ours: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for address in ["127.0.0.2"] * 4 + ["127.0.0.3"]:
            theirs.append(
                socket.create_connection(
                    listener.getsockname(), source_address=(address, 0)
                )
            )
            ours.append(listener.accept()[0])
    protocols = [
        protocol_class(config=made, server_state=state, app_state={}, _loop=loop)
        for _ in ours
    ]

    async def connect_all() -> None:
        await asyncio.gather(
            *(
                loop.connect_accepted_socket(lambda p=p: p, sock)  # type: ignore[misc]
                for p, sock in zip(protocols, ours, strict=True)
            )
        )

    try:
        loop.run_until_complete(connect_all())
        first, *refused, other = protocols
        assert state.connections == {first, other}
        assert all(p.transport.is_closing() for p in refused)
        assert not other.transport.is_closing()
        for protocol in (first, other):
            protocol.transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        assert protocol_class.gate.open == {}  # every place given back
    finally:
        for conn in theirs:
            conn.close()
        loop.close()


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"max_connections": True}, TypeError,
         "max_connections must be a whole number, got True"),
        ({"max_connections_per_address": 2.5}, TypeError,
         "max_connections_per_address must be a whole number, got 2.5"),
        ({"head_seconds": False}, TypeError,
         "head_seconds must be a number, got False"),
        ({"request_seconds": "30"}, TypeError,
         "request_seconds must be a number, got '30'"),
        ({"max_connections": 0}, ValueError,
         "max_connections must be at least 1, got 0"),
        ({"warn_seconds": float("inf")}, ValueError,
         "warn_seconds must be a finite number, got inf"),
        ({"max_connections_per_address": 600}, ValueError,
         "max_connections_per_address must be at most max_connections (512), "
         "got 600"),
        ({"head_seconds": 31.0}, ValueError,
         "head_seconds must be at most request_seconds (30), got 31"),
    ],
)  # fmt: skip
def test_limits_name_the_python_field_and_refuse_bools(
    fields: dict[str, Any], error: type[Exception], message: str
) -> None:
    # Python users get their field's name (serve's errors name its options,
    # tests/test_cli.py); True is no count, though Python's bool is an int.
    with pytest.raises(error) as info:
        Limits(**fields)
    assert str(info.value) == message
    assert "--" not in str(info.value)
