"""The upstream handler: each request line sent to an OpenAI-compatible server.

``serve --upstream URL`` (vLLM, SGLang, llama.cpp's server, Ollama, TGI,
LiteLLM, another ``batchfsm serve``...) puts the Batch API in front of it:
each line goes to ``URL + line.url`` with the line's body, through one
``httpx2.AsyncClient`` per upstream, on the handlers' event loop.

- Routing by the line's ``model`` (``MODEL=URL``), and a default route.
- At most ``concurrency`` requests in flight per upstream; optional requests
  and (estimated prompt) tokens per minute.
- Each try has a deadline (``timeout``, the whole answer, however slowly it
  trickles in). Connection errors, timeouts and the answers 408, 409, 429 and
  5xx are tried again, at most ``tries`` times in all, after a jittered
  exponential backoff or the answer's ``Retry-After`` (``retry-after-ms``)
  when it gives one (one longer than ``max_backoff`` ends the tries).
- The last answer is the request's: its status code and body (an HTTP error
  becomes the error-file line with the upstream's status and error body, as
  the API writes a request the model rejects; ``error`` stays null). No
  answer at all is a 502 (connection) or 504 (deadline) with an error body of
  ours; ``usage`` comes from the upstream's body.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import attrs
import httpx2

from .. import _json
from ._handlers import Reply, RequestLine, prompt_tokens

__all__ = ["RETRIED_STATUSES", "UpstreamHandler", "parse_routes"]

log = logging.getLogger("batchfsm.emulator")

#: The answers tried again (with connection errors and deadlines).
RETRIED_STATUSES = frozenset({408, 409, 429})
#: The route of every model no other route names.
DEFAULT_ROUTE = "*"


def parse_routes(specs: list[str]) -> dict[str, str]:
    """``--upstream`` values (``URL`` or ``MODEL=URL``) as model -> base URL.

    Example:
        >>> parse_routes(["http://a:8000", "llama=http://b:8001/?k=v"])
        {'*': 'http://a:8000', 'llama': 'http://b:8001/?k=v'}
        >>> parse_routes(["ftp://x"])
        Traceback (most recent call last):
        ...
        ValueError: --upstream must be URL or MODEL=URL with an http(s) URL, got 'ftp://x'
    """
    routes: dict[str, str] = {}
    for spec in specs:
        if spec.startswith(("http://", "https://")):
            model, url = DEFAULT_ROUTE, spec
        else:
            model, _, url = spec.partition("=")
        if not url.startswith(("http://", "https://")) or not model or " " in url:
            raise ValueError(
                f"--upstream must be URL or MODEL=URL with an http(s) URL, got {spec!r}"
            )
        routes[model] = url.rstrip("/")
    return routes


def _error(status: int, message: str, kind: str, code: str | None = None) -> Reply:
    return Reply(
        status,
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
    )


def _count(usage: Mapping[str, Any], *keys: str) -> int:
    for key in keys:
        value = usage.get(key)
        if type(value) is int and value >= 0:
            return value
    return 0


def _reply(status: int, content: bytes) -> Reply:
    """The upstream's answer as a :class:`Reply`: its body, its usage."""
    try:
        body = _json.decode(content)
    except Exception:  # noqa: BLE001 - not JSON: said so below
        body = None
    if not isinstance(body, dict):
        text = content[:500].decode("utf-8", "replace")
        if 200 <= status < 300:
            return _error(
                502,
                f"The upstream answered {status} with a body that is not "
                f"a JSON object: {text!r}",
                "upstream_error",
            )
        return _error(
            status, text or f"The upstream answered {status}.", "upstream_error"
        )
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return Reply(status, body)
    return Reply(
        status,
        body,
        input_tokens=_count(usage, "prompt_tokens", "input_tokens"),
        output_tokens=_count(usage, "completion_tokens", "output_tokens"),
    )


def _retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds the answer asks to wait (``retry-after-ms``, ``Retry-After``)."""
    text = headers.get("retry-after-ms")
    try:
        if text is not None:
            return max(0.0, float(text) / 1000)
    except ValueError:
        pass
    text = headers.get("retry-after")
    if text is None:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Bucket:
    """A token bucket of ``per_minute``: :meth:`take` waits for room."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60
        self.capacity = float(per_minute)
        self.level = self.capacity
        self.at = time.monotonic()

    async def take(self, amount: float) -> None:
        amount = min(amount, self.capacity)  # one big request still passes
        while True:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
            self.at = now
            if self.level >= amount:
                self.level -= amount
                return
            await asyncio.sleep((amount - self.level) / self.rate)


#: The most connections one client of an upstream holds: the requests in
#: flight are spread over several clients of at most this many. A client's
#: pool scans all its connections twice a request (httpcore2's
#: ``_assign_requests_to_connections``), so one client of 64 connections
#: spent more CPU on that than on the request itself (``benchmarks.gateway_cases``).
CONNECTIONS_PER_CLIENT = 8


@attrs.define
class _Upstream:
    """One upstream's clients and limits (made on the handlers' loop).

    ``slots`` holds the index of a client once for each request it may
    have in flight (``concurrency`` in all): a request takes one, so it is
    sent at once on a connection of its client's, never queued in a pool.
    """

    url: str
    clients: list[httpx2.AsyncClient]
    slots: asyncio.Queue[int]
    requests: _Bucket | None
    tokens: _Bucket | None


def _clients(
    concurrency: int, headers: dict[str, str], timeout: float
) -> tuple[list[httpx2.AsyncClient], asyncio.Queue[int]]:
    """Clients sharing ``concurrency`` connections, and the queue of their slots."""
    count = -(-concurrency // CONNECTIONS_PER_CLIENT)
    clients: list[httpx2.AsyncClient] = []
    slots: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        share = concurrency // count + (index < concurrency % count)
        limits = httpx2.Limits(max_connections=share, max_keepalive_connections=share)
        clients.append(
            httpx2.AsyncClient(headers=headers, limits=limits, timeout=timeout)
        )
        for _ in range(share):
            slots.put_nowait(index)
    return clients, slots


class UpstreamHandler:
    """An async handler sending each request line to an OpenAI-compatible server.

    Args:
        routes: the upstream's base URL (``http://127.0.0.1:8000``), or model
            -> base URL, ``"*"`` the route of every other model; a line goes
            to ``base + line.url`` (``/v1/chat/completions``).
        api_key: sent as ``Authorization: Bearer KEY`` (None: no header).
        concurrency: requests in flight at once, per upstream.
        timeout: seconds each try may take, its whole answer included.
        tries: tries in all per request (at least 1).
        backoff: the first wait before a try again, doubled each time,
            jittered (a random part of it), at most ``max_backoff``.
        requests_per_minute, tokens_per_minute: per upstream (None: no limit);
            tokens are the prompt's, estimated as :func:`prompt_tokens` does.

    A model with no route (and no ``"*"``) is answered 404
    ``model_not_found``, never sent.

    Example:
        >>> handler = UpstreamHandler("http://127.0.0.1:8000", concurrency=8)
        >>> handler.route("gpt-4o-mini")
        'http://127.0.0.1:8000'
        >>> UpstreamHandler({"llama": "http://gpu:8000"}).route("other") is None
        True
    """

    def __init__(
        self,
        routes: str | Mapping[str, str],
        *,
        api_key: str | None = None,
        concurrency: int = 64,
        timeout: float = 600.0,
        tries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
    ) -> None:
        if isinstance(routes, str):
            routes = {DEFAULT_ROUTE: routes}
        self.routes = {model: url.rstrip("/") for model, url in routes.items()}
        if not self.routes:
            raise ValueError("routes must name at least one upstream")
        if concurrency < 1 or tries < 1 or timeout <= 0:
            raise ValueError("concurrency and tries must be >= 1, timeout > 0")
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout = timeout
        self.tries = tries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._upstreams: dict[str, _Upstream] = {}

    def route(self, model: object) -> str | None:
        """The base URL the requests of ``model`` go to (None: no route)."""
        if isinstance(model, str) and model in self.routes:
            return self.routes[model]
        return self.routes.get(DEFAULT_ROUTE)

    def _upstream(self, url: str) -> _Upstream:
        upstream = self._upstreams.get(url)
        if upstream is None:
            headers = {"Content-Type": "application/json"}
            if self.api_key is not None:
                headers["Authorization"] = f"Bearer {self.api_key}"
            clients, slots = _clients(self.concurrency, headers, self.timeout)
            rpm, tpm = self.requests_per_minute, self.tokens_per_minute
            upstream = _Upstream(
                url,
                clients,
                slots,
                None if rpm is None else _Bucket(rpm),
                None if tpm is None else _Bucket(tpm),
            )
            self._upstreams[url] = upstream
        return upstream

    async def __call__(self, request: RequestLine) -> Reply:
        """Send ``request`` to its upstream; its last answer, as a :class:`Reply`."""
        model = request.body.get("model")
        url = self.route(model)
        if url is None:
            return _error(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        upstream = self._upstream(url)
        reply = _error(502, "The upstream was not tried.", "upstream_error")
        for attempt in range(self.tries):
            reply, wait = await self._try(upstream, request, attempt)
            if wait is None or attempt + 1 == self.tries:
                break
            if wait > self.max_backoff:
                break  # asked to wait longer than we would: this is the answer
            log.debug(
                "retrying %s in %.2fs: %s", request.custom_id, wait, reply.status_code
            )
            await asyncio.sleep(wait)
        return reply

    def _wait(self, attempt_wait: float | None, attempt: int) -> float:
        if attempt_wait is not None:
            return attempt_wait
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return random.uniform(cap / 2, cap)

    async def _try(
        self, upstream: _Upstream, request: RequestLine, attempt: int
    ) -> tuple[Reply, float | None]:
        """One try: the reply, and how long to wait before the next (None: done)."""
        if upstream.requests is not None:
            await upstream.requests.take(1)
        if upstream.tokens is not None:
            await upstream.tokens.take(prompt_tokens(request.url, request.body))
        index = await upstream.slots.get()
        try:
            # One deadline for the whole try (a trickle too), in this task.
            async with asyncio.timeout(self.timeout):
                status, headers, content = await self._send(
                    upstream.clients[index], upstream.url + request.url, request
                )
        except (TimeoutError, httpx2.TimeoutException):
            message = f"The upstream did not answer within {self.timeout:g} s."
            return _error(504, message, "upstream_timeout"), self._wait(None, attempt)
        except httpx2.TransportError as exc:
            message = f"The upstream could not be reached: {type(exc).__name__}."
            return _error(502, message, "upstream_unavailable"), self._wait(
                None, attempt
            )
        finally:
            upstream.slots.put_nowait(index)
        reply = _reply(status, content)
        if status in RETRIED_STATUSES or status >= 500:
            return reply, self._wait(_retry_after(headers), attempt)
        return reply, None

    async def _send(
        self, client: httpx2.AsyncClient, url: str, request: RequestLine
    ) -> tuple[int, httpx2.Headers, bytes]:
        response = await client.post(url, content=_json.encode(request.body))
        return response.status_code, response.headers, response.content

    async def aclose(self) -> None:
        """Close the upstreams' connections."""
        upstreams, self._upstreams = self._upstreams, {}
        for upstream in upstreams.values():
            for client in upstream.clients:
                await client.aclose()
