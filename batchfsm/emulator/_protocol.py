"""The HTTP/1.1 connection ``serve`` speaks: uvicorn's h11 protocol, guarded.

Each connection is held to :class:`Limits`:

- at most ``max_connections`` are open at once, and at most
  ``max_connections_per_address`` from one client address (an IPv6 client's
  /64, where one host holds many addresses); more are closed on arrival, so
  that one client cannot take every place; the last eighth of the places
  (:data:`KEPT_FOR_NEWCOMERS`) go only to addresses holding none, so that a
  few addresses at their most each cannot take them all either (a client
  with many addresses still can: bound it before the server, at a firewall
  or a proxy);
- the request head (line and headers) must arrive within ``head_seconds`` of
  the connection opening or of the previous answer, the whole request within
  ``request_seconds``; each answer must be read within ``request_seconds`` of
  its being ready (a client that never reads would pin it in memory; a
  streamed answer waits while the socket's buffer is full, and a client that
  takes nothing of it for ``request_seconds`` is cut off: one that reads,
  however slowly, is not);
- a request head is at most ``max_head_bytes`` in all (431), however it
  arrives: h11 bounds only the part of a head it holds incomplete, so a head
  that arrived whole in one read passed whatever its size;
- a request with both ``Content-Length`` and ``Transfer-Encoding`` is refused
  (400) before its body is framed: two parties that frame it differently
  would see two different requests;
- a request HTTP cannot parse gets the API's error body, as every answer does.

A refused connection is logged at once, then counted: one WARNING line per
``warn_seconds`` while refusals go on, however many there are; a connection
closed at a deadline likewise, at INFO.

uvicorn gives no public seam for any of this, so :class:`GuardedH11Protocol`
subclasses its ``H11Protocol``: pyproject.toml bounds uvicorn to the versions
it was tested with, and ``tests/test_protocol.py`` fails when the internals it
relies on (:data:`UVICORN_INTERNALS`) change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import ipaddress
import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._json import encode
from ._api_error import ApiError

__all__ = [
    "HEAD_SECONDS",
    "KEEP_ALIVE_SECONDS",
    "KEPT_FOR_NEWCOMERS",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "MAX_HEAD_BYTES",
    "REQUEST_SECONDS",
    "UVICORN_INTERNALS",
    "WARN_SECONDS",
    "Cutoffs",
    "GuardedH11Protocol",
    "Limits",
    "Refusals",
    "address_of",
    "quiet_uvicorn",
]

#: The request head must arrive within this many seconds.
HEAD_SECONDS = 10.0
#: A whole request must arrive within this many seconds.
REQUEST_SECONDS = 30.0
#: An idle connection closes after this many seconds.
KEEP_ALIVE_SECONDS = 5
#: Connections open at once; more are closed as they arrive.
MAX_CONNECTIONS = 512
#: Connections open at once from one client address (an IPv6 /64).
MAX_CONNECTIONS_PER_ADDRESS = 64
#: The request line and headers together.
MAX_HEAD_BYTES = 64 * 1024
#: At most one warning about refused connections per this many seconds.
WARN_SECONDS = 10.0
#: One in this many places is kept for addresses holding no connection.
KEPT_FOR_NEWCOMERS = 8

#: What :class:`GuardedH11Protocol` takes from uvicorn's ``H11Protocol``
#: beyond asyncio's protocol methods: the methods it overrides or calls, and
#: the attributes it reads. ``tests/test_protocol.py`` holds uvicorn to them.
UVICORN_INTERNALS: dict[str, tuple[str, ...]] = {
    "__init__": ("self", "config", "server_state", "app_state", "_loop"),
    "connection_made": ("self", "transport"),
    "connection_lost": ("self", "exc"),
    "data_received": ("self", "data"),
    "handle_events": ("self",),
    "on_response_complete": ("self",),
    "pause_writing": ("self",),
    "resume_writing": ("self",),
    "send_400_response": ("self", "msg"),
}

#: uvicorn's WARNING for each request HTTP cannot parse.
INVALID_REQUEST = "Invalid HTTP request received."

log = logging.getLogger("batchfsm.emulator")


def _at_least(name: str, value: float, least: float, *, whole: bool = False) -> None:
    kinds = int if whole else int | float
    if type(value) is bool or not isinstance(value, kinds):
        kind = "a whole number" if whole else "a number"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < least:
        raise ValueError(f"{name} must be at least {least:g}, got {value!r}")


@attrs.frozen
class Limits:
    """The bounds ``serve`` holds every connection to (see the module's docs).

    Raises:
        TypeError: a bound that is no number (a count that is no whole
            number; ``True`` is no count), named by its field.
        ValueError: a bound that is not a finite number above 0 (a count of
            at least 1), a per-address bound above the whole, or a head
            deadline past the request's, named by its field (``serve``
            names its options instead).

    Example:
        >>> Limits(max_connections_per_address=8).max_connections
        512
        >>> Limits(head_seconds=60)
        Traceback (most recent call last):
        ...
        ValueError: head_seconds must be at most request_seconds (30), got 60
    """

    max_connections: int = MAX_CONNECTIONS
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    head_seconds: float = HEAD_SECONDS
    request_seconds: float = REQUEST_SECONDS
    max_head_bytes: int = MAX_HEAD_BYTES
    warn_seconds: float = WARN_SECONDS

    def __attrs_post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_address"):
            _at_least(name, getattr(self, name), 1, whole=True)
        _at_least("max_head_bytes", self.max_head_bytes, 1024, whole=True)
        for name in ("head_seconds", "request_seconds", "warn_seconds"):
            _at_least(name, getattr(self, name), 0.001)
        if self.max_connections_per_address > self.max_connections:
            raise ValueError(
                "max_connections_per_address must be at most max_connections "
                f"({self.max_connections}), got {self.max_connections_per_address}"
            )
        if self.head_seconds > self.request_seconds:
            raise ValueError(
                "head_seconds must be at most request_seconds "
                f"({self.request_seconds:g}), got {self.head_seconds:g}"
            )


def address_of(client: tuple[str, int] | None) -> str:
    """The client address one bound counts: its IP, or its /64 for IPv6.

    Example:
        >>> address_of(("127.0.0.2", 50000)), address_of(("2001:db8::7", 1))
        ('127.0.0.2', '2001:db8::/64')
        >>> address_of(("::ffff:10.0.0.1", 1))
        '10.0.0.1'
    """
    if client is None:
        return ""
    host = client[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a scoped IPv6 address, say: itself
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return host


class Refusals:
    """Warnings about refused connections: the first at once, then counts.

    While refusals go on, one line per ``every`` seconds says how many more
    there were and from where; ``schedule(delay, callback)`` (the event
    loop's ``call_later``) writes it when the interval ends.

    Example:
        >>> later = []
        >>> refusals = Refusals(10, schedule=lambda d, f: later.append(f))
        >>> refusals.refused("127.0.0.2", "it has 64 open")  # logged
        >>> refusals.refused("127.0.0.2", "it has 64 open")  # counted
        >>> refusals.pending
        Counter({'127.0.0.2': 1})
        >>> later[0]()  # the interval ends: one line with the count
        >>> refusals.pending
        Counter()
    """

    #: The level of its lines; the first line (address, why, interval) and
    #: the count that follows (count, seconds, addresses, the top three, more).
    level = logging.WARNING
    first = (
        "closing a new connection from %s: %s (refusals are counted, one line per %g s)"
    )
    then = (
        "closed %d more new connection(s) in the last %.0f s, from %d address(es): %s%s"
    )

    def __init__(
        self,
        every: float,
        *,
        schedule: Callable[[float, Callable[[], None]], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.schedule = schedule
        self.clock = clock
        self.pending: collections.Counter[str] = collections.Counter()
        self._quiet_until = -math.inf
        self._started = 0.0

    def refused(self, address: str, why: str) -> None:
        """Note one connection from ``address`` closed on arrival, ``why``."""
        now = self.clock()
        if now >= self._quiet_until:
            log.log(self.level, self.first, address or "a client", why, self.every)
            self._quiet_until = now + self.every
            self._started = now
            return
        if not self.pending:
            self.schedule(self._quiet_until - now, self._flush)
        self.pending[address] += 1

    def _flush(self) -> None:
        total = sum(self.pending.values())
        if not total:
            return
        top = ", ".join(
            f"{address or 'a client'} {count}"
            for address, count in self.pending.most_common(3)
        )
        more = len(self.pending) - 3
        log.log(
            self.level,
            self.then,
            total,
            self.clock() - self._started,
            len(self.pending),
            top,
            f" and {more} more" if more > 0 else "",
        )
        self.pending.clear()
        # Refusals that go on are counted for another interval.
        self._started = self.clock()
        self._quiet_until = self._started + self.every


class Cutoffs(Refusals):
    """INFO lines about connections closed at a deadline: the first, then counts.

    A client holding many connections that each miss their deadline (half a
    request head each, say) must not write a line per connection.

    Example:
        >>> later = []
        >>> cutoffs = Cutoffs(10, schedule=lambda d, f: later.append(f))
        >>> cutoffs.refused("127.0.0.2", "no whole request head in 10 s")
        >>> cutoffs.refused("127.0.0.2", "no whole request head in 10 s")
        >>> cutoffs.pending
        Counter({'127.0.0.2': 1})
    """

    level = logging.INFO
    first = (
        "closing the connection of %s: %s (more such closings are counted, one "
        "line per %g s)"
    )
    then = (
        "closed %d more connection(s) at their deadlines in the last %.0f s, from "
        "%d address(es): %s%s"
    )


def quiet_uvicorn(record: logging.LogRecord) -> bool:
    """Hold back uvicorn's WARNING for each request HTTP cannot parse.

    :meth:`GuardedH11Protocol.send_400_response` logs it at INFO with its
    reason instead (a filter for the ``uvicorn.error`` logger).
    """
    return record.msg != INVALID_REQUEST


class _Gate:
    """One server's count of open connections per address, and its refusals."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: dict[str, int] = {}
        self.refusals: Refusals | None = None
        self.cutoffs: Cutoffs | None = None

    def admit(self, address: str, others: int) -> str | None:
        """Count a connection in; or why not, with ``others`` open besides it."""
        held = self.open.get(address, 0)
        if held >= self.limits.max_connections_per_address:
            return (
                f"it has {held} open, the most one address may hold "
                "(--max-connections-per-address)"
            )
        most = self.limits.max_connections
        if others >= most:
            return f"{others} are open, the most the server holds (--max-connections)"
        kept = most // KEPT_FOR_NEWCOMERS
        if held and others >= most - kept:
            # A few addresses holding their most each must not fill every
            # place: the last ones are kept for addresses holding none.
            return (
                f"{others} are open; the last {kept} places are kept for "
                "addresses that hold none (--max-connections)"
            )
        self.open[address] = held + 1
        return None

    def leave(self, address: str) -> None:
        left = self.open[address] - 1
        if left:
            self.open[address] = left
        else:
            del self.open[address]


class _Connection(h11.Connection):
    """h11's server side, holding each request head to its size and one framing.

    The head's size is the bytes h11 held before it parsed the head less
    those it holds after: counted as data arrives, read back (a copy of what
    is buffered) only once a head is whole, and once per request that follows
    on the connection.
    """

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes
        #: The status and message a refusal answers with.
        self.refusal: tuple[int, str] | None = None
        self._held: int | None = 0  # bytes buffered of the head being read

    def receive_data(self, data: bytes) -> None:
        if self._held is not None:
            self._held += len(data)
        super().receive_data(data)

    def next_event(self) -> Any:
        if self._held is None and self.their_state is h11.IDLE:
            self._held = len(self.trailing_data[0])  # a next request's start
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if self.refusal is None:
                self.refusal = (
                    (431, self._too_large())
                    if exc.error_status_hint == 431
                    else (400, INVALID_REQUEST)
                )
            raise
        if isinstance(event, h11.Request):
            assert self._held is not None  # counted since the head began
            head = self._held - len(self.trailing_data[0])
            self._held = None
            if head > self.max_head_bytes:
                self._refuse(431, self._too_large())
            names = {name for name, _ in event.headers}  # lower case, from h11
            if b"content-length" in names and b"transfer-encoding" in names:
                self._refuse(
                    400,
                    "The request has both Content-Length and Transfer-Encoding: "
                    "send one.",
                )
        return event

    def _too_large(self) -> str:
        return (
            "The request line and headers are too large: the limit is "
            f"{self.max_head_bytes:,} bytes ({self.max_head_bytes / 1024:g} KiB)."
        )

    def _refuse(self, status: int, message: str) -> None:
        self.refusal = (status, message)
        raise h11.RemoteProtocolError(message, error_status_hint=status)


def _kernel_queue(sock: Any) -> int:
    """The bytes in ``sock``'s kernel send queue (0 where that cannot be told)."""
    try:
        import fcntl
        import termios
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return 0  # pragma: no cover - not Linux
    with contextlib.suppress(OSError, ValueError):
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
        return int.from_bytes(raw, sys.byteorder, signed=True)
    return 0


#: The scope key an endless response (a live event stream) sets.
ENDLESS = "batchfsm.endless"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol held to a server's :class:`Limits`.

    Use :meth:`bound` for a class of one server's own (its counts of open
    connections per address are the class's).
    """

    gate: ClassVar[_Gate] = _Gate(Limits())
    conn: _Connection
    _deadline: asyncio.TimerHandle | None = None
    _since: float | None = None  # when the wait for the client began
    _due: float | None = None  # when that wait ends (the timer may be set sooner)
    _unread = 0  # the bytes of answer it had not taken then
    _address: str | None = None  # counted open under this address

    def shutdown(self) -> None:
        """Stop as uvicorn does, but an endless stream ends now, its connection closed.

        A web view's live stream (its scope marked :data:`ENDLESS`) never ends
        by itself: without this, stopping the server would wait on a browser tab.
        """
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.response_complete
            and cycle.scope.get(ENDLESS)
        ):
            # Its connection is closed: the stream sees its client gone.
            self.transport.close()
            return
        super().shutdown()

    @classmethod
    def bound(cls, limits: Limits) -> type[GuardedH11Protocol]:
        """A class of this protocol for one server held to ``limits``."""
        return type(cls.__name__, (cls,), {"gate": _Gate(limits)})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(self.gate.limits.max_head_bytes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = address_of(self.client)
        why = self.gate.admit(address, len(self.connections) - 1)
        if why is not None:
            # Not counted among the open ones: a flood of refusals must not
            # crowd out clients while their connections are being closed.
            self.connections.discard(self)
            self._refusals().refused(address, why)
            transport.close()
            return
        self._address = address
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._address is not None:
            self.gate.leave(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def pause_writing(self) -> None:
        # An answer streamed to a client that stopped reading: its clock runs
        # from now, against what it holds now (the app waits meanwhile,
        # holding no more than this buffer).
        super().pause_writing()
        self._disarm()
        self._watch()

    def resume_writing(self) -> None:
        # It reads again: a fresh deadline for what is left in the buffer.
        super().resume_writing()
        self._disarm()
        self._watch()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a request HTTP cannot parse in plain text: answer with
        # the API's error body instead, as every other answer does.
        status, message = self.conn.refusal or (400, msg)
        where = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            # Garbage after this request was answered (a body refused early):
            # nothing more can be said on this connection.
            log.info("closing the connection of %s: %s", where, message)
            self.transport.close()
            return
        # One line per request, as the access log's (uvicorn's own WARNING is
        # held back: a client sending garbage in a loop would flood the log).
        log.info("answering %d to %s: %s", status, where, message)
        body = encode(ApiError(status, message).body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reason = http.HTTPStatus(status).phrase.encode()
        for event in (
            h11.Response(status_code=status, headers=headers, reason=reason),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _refusals(self) -> Refusals:
        gate = self.gate
        if gate.refusals is None:
            gate.refusals = Refusals(
                gate.limits.warn_seconds, schedule=self.loop.call_later
            )
        return gate.refusals

    def _cut(self, why: str) -> None:
        """Note this connection closed at a deadline (rate limited, as refusals)."""
        gate = self.gate
        if gate.cutoffs is None:
            gate.cutoffs = Cutoffs(
                gate.limits.warn_seconds, schedule=self.loop.call_later
            )
        gate.cutoffs.refused(address_of(self.client), why)

    def _watch(self) -> None:
        # Waiting for a request (or the rest of one), or for the client to take
        # its answer: the clock runs. Once a request is all in, what follows is
        # the server's time, not the client's.
        state = self.conn.their_state
        unread = bool(self.transport.get_write_buffer_size())
        if not unread and (
            self.transport.is_closing() or state not in (h11.IDLE, h11.SEND_BODY)
        ):
            self._disarm()
            return
        if self._since is None:
            self._since = self.loop.time()
            # What the kernel holds is read only where it can count: waiting
            # for a head with nothing unread, no answer is written before the
            # head is in (and the clock stops then). No system call a request.
            self._unread = self._queued() if unread or state is not h11.IDLE else 0
        limits = self.gate.limits
        head = state is h11.IDLE and not unread
        due = self._since + (limits.head_seconds if head else limits.request_seconds)
        self._due = due
        # One timer a connection, not one a request: a timer set for later
        # than the new deadline is replaced; one set for sooner is left to
        # fire and find the deadline moved (or gone) since (_too_slow).
        if self._deadline is None or self._deadline.when() > due:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_at(due, self._too_slow)

    def _reading(self, unread: int) -> bool:
        """Whether the client took some of its answer since its clock started.

        Writing that resumed while the answer is still being written says so
        (the app writes more meanwhile, so the buffer need not shrink); once
        writing is paused, or the answer is all written, only a buffer
        smaller than when the clock started does.
        """
        if not self.flow.write_paused and self.conn.our_state is h11.SEND_BODY:
            return True
        return self._queued() < self._unread

    def _queued(self) -> int:
        """The answer's bytes not yet taken: ours, and the kernel's send queue.

        The kernel wakes a writer only once a good part of its (megabytes
        of) send buffer is free: a slow reader empties ours in long silences,
        but its own queue shrinks with every read.
        """
        sock = self.transport.get_extra_info("socket")
        return self.transport.get_write_buffer_size() + _kernel_queue(sock)

    def _disarm(self) -> None:
        # The timer, if one is set, stays: it finds no deadline when it fires.
        self._since = self._due = None

    def _cancel(self) -> None:
        self._disarm()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        fired, self._deadline = self._deadline, None
        due = self._due
        if due is None:
            return  # the clock stopped since the timer was set
        if fired is not None and due > fired.when():
            # The clock started again since: its deadline is later.
            self._deadline = self.loop.call_at(due, self._too_slow)
            return
        limits = self.gate.limits
        state = self.conn.their_state
        unread = self.transport.get_write_buffer_size()
        if unread and self._reading(unread):
            # A slow reader, not a stalled one: its clock starts again.
            self._disarm()
            self._watch()
            return
        if unread:
            # close() would wait for the client to read it all: it may never.
            self._cut(f"it did not read its answer in {limits.request_seconds:g} s")
            self.transport.abort()
        elif self.transport.is_closing() or state not in (h11.IDLE, h11.SEND_BODY):
            pass  # its answer was read, and it is not the client's turn
        elif state is h11.IDLE:
            self._cut(f"no whole request head in {limits.head_seconds:g} s")
            self.transport.close()
        else:
            self._cut(f"no whole request in {limits.request_seconds:g} s")
            self.transport.close()
        self._disarm()
