"""Test-double habits: a log of the requests received, faults on command, reset.

What people who test with respx, pytest-httpserver or moto look for, on the
:class:`~batchfsm.emulator.Emulator` itself (its :class:`Doubles` base), so
that the same calls work in-process and, through the admin routes of
``serve --admin``, over HTTP:

- :attr:`Doubles.requests` and :meth:`Doubles.assert_called`: every request
  the HTTP app received (method, path, query, status, the first
  :data:`LOGGED_BODY_BYTES` of its body), the last :data:`LOGGED_CALLS` kept,
  with :data:`LOGGED_BYTES` of bodies at most (a constant memory for ``serve``);
- :meth:`Doubles.fail_next` (the next N calls of a route answer 429, 500, ...)
  and :meth:`Doubles.stall_next` (they are held, so that a client times out);
- :meth:`Doubles.fail_batch` and :meth:`Doubles.expire_batch`: a batch ends
  on command;
- :meth:`Doubles.reset`: a fresh start (memory stores only).

The app's one ASGI layer (:mod:`._layer`) logs each request and injects the faults.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import InvalidTransition
from .._model import BatchError, BatchErrors
from .._table import Event
from ._api_error import ApiError

if TYPE_CHECKING:
    from ._engine import Emulator

__all__ = [
    "LOGGED_BODY_BYTES",
    "LOGGED_BYTES",
    "LOGGED_CALLS",
    "Call",
    "Doubles",
    "answer_fault",
    "sleep",
    "unlogged",
]

#: The requests the log keeps (the oldest go first): a constant memory for ``serve``.
LOGGED_CALLS = 10_000
#: The bytes of each request's body the log keeps.
LOGGED_BODY_BYTES = 64 * 1024
#: The bytes of bodies the whole log keeps (the oldest calls go first).
LOGGED_BYTES = 16 * 1024 * 1024
#: The path prefix of the admin routes, which the log leaves out (and /health,
#: /metrics and the web view's: a scraper or an open tab is no call to judge).
ADMIN_PREFIX = "/_admin/"
HEALTH_PATH = "/health"
_UNLOGGED = ("/metrics", "/ui")


def unlogged(path: str) -> bool:
    """Whether the request log leaves ``path`` out (and no fault applies to it)."""
    return (
        path == HEALTH_PATH
        or path.startswith(ADMIN_PREFIX)
        or path in _UNLOGGED
        or path.startswith("/ui/")
    )


_FAULT_TYPES = {429: "requests", 500: "server_error", 502: "server_error"}


@attrs.frozen
class Call:
    """One request the emulator's HTTP app received, and the status it answered.

    Example:
        >>> call = Call("POST", "/v1/batches", "", 200, b'{"endpoint": "/v1/x"}')
        >>> call.json()["endpoint"]
        '/v1/x'
    """

    method: str
    path: str
    query: str
    status: int
    body: bytes

    def json(self) -> Any:
        """The body read as JSON (a ValueError if it is not JSON)."""
        return json.loads(self.body)

    def to_dict(self) -> dict[str, Any]:
        """The call as JSON (the body as text, bytes that are not UTF-8 replaced)."""
        text = self.body.decode("utf-8", "replace")
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "body": text,
        }


@attrs.define
class _Fault:
    path: str
    method: str | None
    status: int | None
    times: int
    delay: float
    retry_after: float | None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and fnmatch.fnmatchcase(
            path, self.path
        )


def _count(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(
            f"{name} must be an integer of at least {least}, got {value!r}"
        )
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: collections.deque[Call] = collections.deque()
        self.body_bytes = 0
        self.faults: list[_Fault] = []


class Doubles:
    """The test-double side of :class:`~batchfsm.emulator.Emulator` (its base).

    Example:
        >>> from batchfsm.emulator import Emulator
        >>> emu = Emulator()
        >>> emu.fail_next("/v1/batches", status=429, times=2)
        >>> emu.requests
        []
    """

    @property
    def _doubles(self) -> _State:
        state: _State | None = self.__dict__.get("_doubles_state")
        if state is None:
            state = self.__dict__.setdefault("_doubles_state", _State())
        return state

    # -- the request log --------------------------------------------------------------

    @property
    def requests(self) -> list[Call]:
        """The requests received over HTTP, oldest first.

        The admin routes and ``/health`` are left out (and never fail on command).
        """
        with self._doubles.lock:
            return list(self._doubles.calls)

    def calls_to(self, method: str, path: str) -> list[Call]:
        """The logged calls of ``method`` (or ``"*"``) on ``path`` (a glob).

        Example:
            >>> from batchfsm.emulator import Emulator
            >>> Emulator().calls_to("GET", "/v1/batches/*")
            []
        """
        return [
            call
            for call in self.requests
            if method in ("*", call.method) and fnmatch.fnmatchcase(call.path, path)
        ]

    def assert_called(
        self,
        method: str,
        path: str,
        *,
        times: int | None = None,
        status: int | None = None,
    ) -> list[Call]:
        """Assert that ``method`` ``path`` (a glob) was called; return those calls.

        Args:
            method: ``"GET"``, ``"POST"``, ... or ``"*"``.
            path: the path, ``*`` matching any characters (``/v1/batches/*``).
            times: how many times exactly (at least once if None).
            status: count only the calls answered with this status.

        Raises:
            AssertionError: naming what was expected and every call received.

        Example:
            >>> from batchfsm.emulator import Emulator
            >>> Emulator().assert_called("GET", "/v1/models", times=0)
            []
        """
        calls = [
            call
            for call in self.calls_to(method, path)
            if status is None or call.status == status
        ]
        if (len(calls) != times) if times is not None else not calls:
            wanted = "at least once" if times is None else f"{times} time(s)"
            answered = "" if status is None else f" answered {status}"
            seen = "\n".join(
                f"  {c.method} {c.path} -> {c.status}" for c in self.requests
            )
            raise AssertionError(
                f"expected {method} {path}{answered} {wanted}, got {len(calls)}; "
                f"the requests received:\n{seen or '  (none)'}"
            )
        return calls

    def clear_requests(self) -> None:
        """Forget the requests logged so far."""
        with self._doubles.lock:
            self._doubles.calls.clear()
            self._doubles.body_bytes = 0

    def _log(self, call: Call) -> None:
        state = self._doubles
        with state.lock:
            state.calls.append(call)
            state.body_bytes += len(call.body)
            while len(state.calls) > LOGGED_CALLS or state.body_bytes > LOGGED_BYTES:
                state.body_bytes -= len(state.calls.popleft().body)

    # -- faults -----------------------------------------------------------------------

    def fail_next(
        self,
        path: str,
        *,
        status: int = 500,
        times: int = 1,
        method: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``path`` (a glob) with ``status``.

        The answer is the API's error body (for 429, type ``requests`` and
        code ``rate_limit_exceeded``, as the live API's rate limits), with
        ``retry-after-ms`` when ``retry_after`` (seconds) is given: the
        official client then waits that long instead of its own backoff.
        The call never reaches the emulator. Faults are used in the order
        they were added.

        Raises:
            ValueError: ``status`` is not an HTTP error status (400..599),
                ``times`` is below 1.

        Example:
            >>> from batchfsm.emulator import Emulator
            >>> Emulator().fail_next("/v1/batches", status=429, times=2, method="POST")
        """
        if isinstance(status, bool) or not isinstance(status, int):
            raise ValueError(f"status must be an HTTP status 400..599, got {status!r}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP status 400..599, got {status!r}")
        self._add_fault(path, method, status, times, 0.0, retry_after)

    def stall_next(
        self, path: str, seconds: float, *, times: int = 1, method: str | None = None
    ) -> None:
        """Hold the answers of the next ``times`` calls of ``path`` ``seconds`` long.

        Real seconds: a client whose timeout is shorter times out (the
        in-process transports honour the client's read timeout too); one
        that waits gets the usual answer.

        Example:
            >>> from batchfsm.emulator import Emulator
            >>> Emulator().stall_next("/v1/batches/*", 5.0)
        """
        self._add_fault(path, method, None, times, _seconds("seconds", seconds), None)

    def _add_fault(
        self,
        path: str,
        method: str | None,
        status: int | None,
        times: int,
        delay: float,
        retry_after: float | None,
    ) -> None:
        if not isinstance(path, str) or not path.startswith(("/", "*")):
            raise ValueError(f"path must be a path such as '/v1/batches', got {path!r}")
        if retry_after is not None:
            _seconds("retry_after", retry_after)
        fault = _Fault(
            path,
            None if method in (None, "*") else str(method).upper(),
            status,
            _count("times", times, 1),
            delay,
            retry_after,
        )
        with self._doubles.lock:
            self._doubles.faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every fault not used yet."""
        with self._doubles.lock:
            self._doubles.faults.clear()

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        if not self._doubles.faults:
            return None  # the usual case, told without the lock
        with self._doubles.lock:
            for fault in self._doubles.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times == 0:
                        self._doubles.faults.remove(fault)
                    return attrs.evolve(fault)
        return None

    # -- batches on command -----------------------------------------------------------

    def fail_batch(
        self,
        batch_id: str,
        *,
        code: str = "invalid_request",
        message: str = "The batch failed (on command of the emulator).",
    ) -> None:
        """Fail a ``validating`` batch now, with one error ``code``/``message``.

        Raises:
            ApiError: 404, no such batch; 409, the batch is past ``validating``
                (``fail`` leaves only that status).

        Example:
            >>> from batchfsm.emulator import Emulator
            >>> emu = Emulator()
            >>> f = emu.create_file(b"", "in.jsonl", "batch")
            >>> b = emu.create_batch(input_file_id=f.id, endpoint="/v1/embeddings")
            >>> emu.fail_batch(b.id, code="quota_exceeded", message="No quota.")
            >>> emu.retrieve_batch(b.id).errors.data[0].code
            'quota_exceeded'
        """
        errors = BatchErrors(data=(BatchError(code=code, message=message),))
        self._end_now(batch_id, Event.FAIL, errors)

    def expire_batch(self, batch_id: str) -> None:
        """Expire an unfinished batch now: what it did not run gets ``batch_expired``.

        Its ``expired_at`` is the clock's time, or its ``expires_at`` if that
        is still ahead (``expired_at >= expires_at`` always holds).

        Raises:
            ApiError: 404, no such batch; 409, it has ended or is cancelling.

        Example:
            >>> from batchfsm.emulator import Emulator
            >>> emu = Emulator()
            >>> f = emu.create_file(b"", "in.jsonl", "batch")
            >>> b = emu.create_batch(input_file_id=f.id, endpoint="/v1/embeddings")
            >>> emu.expire_batch(b.id)
            >>> emu.retrieve_batch(b.id).status.value
            'expired'
        """
        self._end_now(batch_id, Event.EXPIRE, None)

    def _end_now(self, batch_id: str, event: Event, errors: BatchErrors | None) -> None:
        from ._worker import end_now

        emu: Emulator = self  # type: ignore[assignment]
        emu.retrieve_batch(batch_id)  # 404 / 400 as the API words them
        try:
            # A lost race with the worker: read again, decide again.
            for _ in range(100):
                if end_now(emu, batch_id, event, errors, emu._now()):
                    return
        except InvalidTransition as exc:
            raise ApiError(
                409, f"Cannot {event.value} a batch with status '{exc.status.value}'."
            ) from None
        raise ApiError(409, f"The batch {batch_id} kept moving; try again.")

    # -- reset ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every file, batch, logged request and fault (memory stores only).

        Raises:
            ApiError: 409, the emulator keeps its state in a database.

        Example:
            >>> from batchfsm.emulator import Emulator
            >>> emu = Emulator()
            >>> _ = emu.create_file(b"x", "a.txt", "user_data")
            >>> emu.reset()
            >>> emu.list_files()["data"]
            []
        """
        from ._stores import MemoryBatchStore, MemoryFileStore, MemoryIds

        emu: Emulator = self  # type: ignore[assignment]
        if type(emu.batches) is not MemoryBatchStore:
            raise ApiError(409, "Only an emulator on memory stores can be reset.")
        store = MemoryBatchStore(MemoryFileStore())
        emu.batches, emu.files = store, store.files
        if isinstance(emu.ids, MemoryIds):
            emu.ids = MemoryIds(emu.seed)
        with self._doubles.lock:
            self._doubles.calls.clear()
            self._doubles.body_bytes = 0
            self._doubles.faults.clear()
        uploads = self.__dict__.get("_uploads")
        if uploads is not None:
            uploads.clear()


# -- faults answered -----------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        message = "Rate limit reached (a fault injected by the emulator)."
        code: str | None = "rate_limit_exceeded"
    else:
        message, code = f"A fault injected by the emulator ({status}).", None
    kind = _FAULT_TYPES.get(status, "server_error" if status >= 500 else None)
    error = ApiError(status, message, code=code).body
    if kind is not None:
        error["error"]["type"] = kind
    return error


async def sleep(seconds: float) -> None:
    """Hold a stalled answer ``seconds`` long (real seconds)."""
    import anyio

    await anyio.sleep(seconds)


async def answer_fault(fault: _Fault, send: Send) -> None:
    """Answer ``fault``'s status with the API's error body (the delay is done)."""
    assert fault.status is not None
    content = json.dumps(_fault_body(fault.status)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    if fault.retry_after is not None:
        headers.append((b"retry-after-ms", str(int(fault.retry_after * 1000)).encode()))
        headers.append((b"retry-after", str(max(1, round(fault.retry_after))).encode()))
    await send(
        {"type": "http.response.start", "status": fault.status, "headers": headers}
    )
    await send({"type": "http.response.body", "body": content})
