"""Running async handlers from the worker: one event loop, many requests at once.

The worker is synchronous (a thread under ``serve``, the caller in-process).
An :data:`~._handlers.AsyncHandler` runs on one event loop of its own, in a
daemon thread started on first use, for the whole process: a handler's
connections (an ``httpx2.AsyncClient``, say) belong to that one loop and are
kept between batch steps. Each step of a batch hands its run of requests to
the loop and waits for all of them, at most ``concurrency`` in flight at a
time. The replies come back in the lines' order, so the result lines (and the
ids they take) are the same whatever order the requests finished in: with
the default fake handler on a virtual clock, the batch is deterministic.

The loop in a thread of its own, rather than a loop in the worker thread:
the in-process worker may run inside a caller's event loop (the async
transport), where a second loop cannot run; handing a run over costs one
thread switch per step of up to hundreds of requests (measured in
``benchmarks/gateway_cases.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from ._handlers import AsyncHandler, Reply, RequestLine
from ._results import checked, server_error

__all__ = ["Replies", "Stop", "on_handler_loop", "run_many", "run_on_loop"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None

#: How often (seconds) a run asks ``stop()`` whether to stop.
POLL_SECONDS = 0.1

#: Told whether to stop dispatching (a cancel came): read before each request.
Stop = Callable[[], bool]


def _the_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="batchfsm-handlers", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def on_handler_loop() -> bool:
    """Whether this thread is the handlers' loop (a handler calling the emulator)."""
    loop = _loop
    if loop is None:
        return False
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def run_on_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the handlers' loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _the_loop()).result()


async def _one(handler: AsyncHandler, request: RequestLine) -> Reply:
    try:
        return checked(await handler(request))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - one request fails, not the batch
        return server_error(exc)


async def _many(
    handler: AsyncHandler,
    requests: Sequence[RequestLine | None],
    concurrency: int,
    stop: Stop,
    came: Callable[[int, Reply], None] = lambda index, reply: None,
    drain: Stop = lambda: False,
) -> list[Reply | None]:
    replies: list[Reply | None] = [None] * len(requests)
    queue = iter(range(len(requests)))
    stopped = asyncio.Event()

    async def lane() -> None:
        sent = False
        for index in queue:  # shared: each index taken by one lane
            # Drained: no new request, those in flight answered. Each lane
            # sends one first, so that every run gets on.
            if stopped.is_set() or (sent and drain()):
                return
            sent = True
            request = requests[index]
            if request is not None:
                replies[index] = reply = await _one(handler, request)
                came(index, reply)

    async def watch() -> None:
        # A cancel stops the dispatching at once and drops what is in flight.
        while not await asyncio.to_thread(stop):
            await asyncio.sleep(POLL_SECONDS)
        stopped.set()
        for task in lanes:
            task.cancel()

    lanes = [
        asyncio.ensure_future(lane()) for _ in range(min(concurrency, len(requests)))
    ]
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.gather(*lanes, return_exceptions=True)
    finally:
        watcher.cancel()
        for task in lanes:
            task.cancel()
    return replies


def run_many(
    handler: AsyncHandler,
    requests: Sequence[RequestLine | None],
    concurrency: int,
    stop: Stop = lambda: False,
) -> list[Reply | None]:
    """Each request's reply, in order; at most ``concurrency`` in flight.

    A None request (a line that could not be read) gets None; so does every
    request not dispatched because ``stop()`` said so. A handler that raises
    or answers something else than a :class:`Reply` gets that request a 500.

    Example:
        >>> from batchfsm.emulator._handlers import fake_handler
        >>> line = RequestLine("r", "POST", "/v1/moderations",
        ...                    {"model": "omni-moderation-latest", "input": "x"}, 0)
        >>> [r and r.status_code for r in run_many(fake_handler, [line, None], 4)]
        [200, None]
    """
    if not requests:
        return []
    return run_on_loop(_many(handler, requests, max(1, concurrency), stop))


class Replies:
    """The replies of a run as they come, in the order they finish.

    As :func:`run_many`, but the caller (the worker's thread) takes each
    reply as soon as it came, to write it while the rest are in flight.
    A None request gets a None reply at once; no reply comes for a request
    not dispatched because ``stop()`` said so (those in flight dropped), or
    ``drain()`` (those in flight answered: each lane stops taking requests,
    after its first).

    Example:
        >>> from batchfsm.emulator._handlers import fake_handler
        >>> line = RequestLine("r", "POST", "/v1/moderations",
        ...                    {"model": "omni-moderation-latest", "input": "x"}, 0)
        >>> replies = Replies(fake_handler, [None, line], 4)
        >>> came = []
        >>> while (some := replies.take(1.0)) is not None:
        ...     came += [(i, r and r.status_code) for i, r in some]
        >>> sorted(came)
        [(0, None), (1, 200)]
    """

    def __init__(
        self,
        handler: AsyncHandler,
        requests: Sequence[RequestLine | None],
        concurrency: int,
        stop: Stop = lambda: False,
        drain: Stop = lambda: False,
    ) -> None:
        self._queue: queue.SimpleQueue[tuple[int, Reply | None] | None] = (
            queue.SimpleQueue()
        )
        for index, request in enumerate(requests):
            if request is None:
                self._queue.put((index, None))
        put = self._queue.put
        self._future: concurrent.futures.Future[list[Reply | None]] | None = None
        if any(request is not None for request in requests):
            coro = _many(
                handler,
                requests,
                max(1, concurrency),
                stop,
                lambda i, r: put((i, r)),
                drain,
            )
            self._future = asyncio.run_coroutine_threadsafe(coro, _the_loop())
            self._future.add_done_callback(lambda _: put(None))
        else:
            put(None)
        self._ended = False

    def take(self, seconds: float) -> list[tuple[int, Reply | None]] | None:
        """The replies that came since the last call; None once all came.

        Waits up to ``seconds`` for the first: an empty list if none came.
        """
        if self._ended:
            return None
        try:
            first = self._queue.get(timeout=seconds)
        except queue.Empty:
            return []
        came: list[tuple[int, Reply | None]] = []
        item: tuple[int, Reply | None] | None = first
        while item is not None:
            came.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return came
        self._ended = True
        return came or None

    def close(self) -> None:
        """Stop dispatching (what is in flight is dropped)."""
        if self._future is not None:
            self._future.cancel()
