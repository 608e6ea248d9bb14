"""Webhook delivery: batch events POSTed to endpoints, signed, at least once.

:class:`Webhooks` delivers the events of a store's outbox (see
:mod:`._events`) to its :class:`WebhookEndpoint` s with the Standard Webhooks
headers the official client's ``client.webhooks.unwrap`` verifies:
``webhook-id`` (the same at every attempt of an event), ``webhook-timestamp``
(real Unix seconds at the attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with the ``whsec_``
secret, signed by the ``standardwebhooks`` library).

An attempt that times out, cannot connect or is answered other than 2xx is
tried again after a jittered exponential backoff (the jitter drawn from the
event, the endpoint and the attempt number: the same run gives the same
schedule) until ``window_seconds`` after the first attempt; then the delivery
is given up. Each attempt is recorded (:meth:`deliveries`). Each delivery is
claimed by one deliverer at a time (across processes sharing PostgreSQL: a
lease fenced by an epoch), so an event is sent again only when an attempt's
outcome was lost (at least once; then with the same ``webhook-id``).

In-process the emulator delivers what is due by its clock whenever it runs
its due work (so a virtual clock delivers when it moves); after
:meth:`Emulator.start` (``serve``), a thread of its own delivers by real
time, never blocking the event loop or the batch worker.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ._events import Attempt, Claim, Delivery, WebhookEvent
from ._outbox import LEASE_SECONDS
from ._projects import check_project
from ._store_errors import StoreUnavailable

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "Outbox",
    "WebhookEndpoint",
    "Webhooks",
    "check_secret",
    "sign",
    "webhook_id",
]

log = logging.getLogger("batchfsm.emulator")

#: Claims taken per round of delivery.
CLAIMS_PER_ROUND = 32


class Outbox(Protocol):
    """The part of a store that keeps events and their deliveries."""

    def add_webhook_endpoint(self, url: str, project: str | None = None) -> None: ...

    def events(
        self, after: str | None = None, limit: int = 100
    ) -> list[WebhookEvent]: ...

    def claim_deliveries(
        self,
        endpoints: Iterable[str],
        now: float,
        limit: int,
        lease: float = LEASE_SECONDS,
    ) -> list[Claim]: ...

    def record_attempt(
        self, claim: Claim, attempt: Attempt, next_at: float | None, deadline: float
    ) -> bool: ...

    def deliveries(self, event_id: str | None = None) -> list[Delivery]: ...

    def next_delivery_at(self, endpoints: Iterable[str]) -> float | None: ...


def check_secret(secret: str, where: str = "secret") -> str:
    """``secret`` if it is ``whsec_`` and base64 of at least one byte, else ValueError.

    Example:
        >>> check_secret("whsec_c2VjcmV0")
        'whsec_c2VjcmV0'
        >>> check_secret("secret")
        Traceback (most recent call last):
        ...
        ValueError: secret must be whsec_ followed by base64 (padded)
    """
    problem = not isinstance(secret, str) or not secret.startswith("whsec_")
    if not problem:
        try:
            problem = not base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            problem = True
    if problem:
        raise ValueError(f"{where} must be whsec_ followed by base64 (padded)")
    return secret


def webhook_id(event_id: str) -> str:
    """The ``webhook-id`` of every attempt to deliver the event ``event_id``.

    Example:
        >>> webhook_id("evt_1") == webhook_id("evt_1"), webhook_id("evt_1")[:3]
        (True, 'wh_')
    """
    return "wh_" + hashlib.sha256(f"webhook:{event_id}".encode()).hexdigest()[:32]


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of ``body``, signed with ``secret``.

    Example:
        >>> headers = sign("whsec_c2VjcmV0", "wh_1", 1700000000, b"{}")
        >>> sorted(headers), headers["webhook-signature"][:3]
        (['webhook-id', 'webhook-signature', 'webhook-timestamp'], 'v1,')
    """
    from standardwebhooks import Webhook

    at = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


@attrs.frozen
class WebhookEndpoint:
    """Where events are delivered, the secret their signatures use, whose they are.

    ``project`` binds the endpoint to one project, as the live API's webhooks
    are configured per project: it is delivered the events of that project's
    batches only. None (the default) delivers every project's events: the
    one endpoint of a server without projects.

    Example:
        >>> hook = WebhookEndpoint("http://127.0.0.1:8001/hooks", "whsec_c2VjcmV0")
        >>> hook.url, hook.project
        ('http://127.0.0.1:8001/hooks', None)
        >>> WebhookEndpoint("http://127.0.0.1:8001/a", "whsec_c2VjcmV0", "team_a")
        WebhookEndpoint(url='http://127.0.0.1:8001/a', project='team_a')
    """

    url: str = attrs.field()
    secret: str = attrs.field(repr=False)
    project: str | None = attrs.field(default=None)

    @url.validator
    def _url(self, _: Any, url: str) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"a webhook URL must be http:// or https://, got {url!r}")

    @secret.validator
    def _secret(self, _: Any, secret: str) -> None:
        check_secret(secret, f"the secret of {self.url}")

    @project.validator
    def _project(self, _: Any, project: str | None) -> None:
        if project is not None:
            check_project(project, f"the project of {self.url}")


def _retry_delay(claim: Claim, attempts: int, first: float, most: float) -> float:
    """Seconds until the next attempt, ``attempts`` made: exponential, jittered."""
    draw = random.Random(f"{claim.event.id} {claim.endpoint} {attempts}").random()
    return min(most, first * 2.0 ** (attempts - 1)) * (0.5 + 0.5 * draw)


class Webhooks:
    """Delivers batch events to endpoints: signed, retried, recorded.

    Args:
        endpoints: where to deliver: each event to every one of its batch's
            project (:attr:`WebhookEndpoint.project`) and every one bound to
            none. A URL is one endpoint: bound to one project or to all.
        window_seconds: how long after its first attempt a delivery is tried
            (default 72 hours); then it is given up.
        timeout_seconds: how long an attempt waits for its answer.
        first_retry_seconds: the backoff before the second attempt; each one
            after doubles it, up to ``max_retry_seconds`` (each jittered to
            between half and all of it).
        transport: the ``httpx2`` transport to POST through (tests); a real
            connection if None.

    Example:
        >>> from batchfsm.emulator import Emulator, WebhookEndpoint
        >>> hooks = Webhooks([WebhookEndpoint("http://127.0.0.1:9/", "whsec_c2VjcmV0")])
        >>> emu = Emulator(webhooks=hooks)
        >>> emu.webhook_events()
        []
    """

    def __init__(
        self,
        endpoints: Iterable[WebhookEndpoint],
        *,
        window_seconds: float = 72 * 3600,
        timeout_seconds: float = 10.0,
        first_retry_seconds: float = 5.0,
        max_retry_seconds: float = 3600.0,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.endpoints = tuple(endpoints)
        urls = [e.url for e in self.endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError(f"a webhook URL is named twice: {urls}")
        for name, value in (
            ("window_seconds", window_seconds),
            ("timeout_seconds", timeout_seconds),
            ("first_retry_seconds", first_retry_seconds),
            ("max_retry_seconds", max_retry_seconds),
        ):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(
                    f"{name} must be a finite number above 0, got {value!r}"
                )
        self.window_seconds = float(window_seconds)
        self.timeout_seconds = float(timeout_seconds)
        self.first_retry_seconds = float(first_retry_seconds)
        self.max_retry_seconds = float(max_retry_seconds)
        self._transport = transport
        self._client: httpx2.Client | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    def add(self, endpoint: WebhookEndpoint) -> None:
        """Deliver to ``endpoint`` too (the events written from now on).

        Raises:
            ValueError: its URL is one already named.
        """
        if any(e.url == endpoint.url for e in self.endpoints):
            raise ValueError(f"a webhook URL is named twice: {endpoint.url}")
        self.endpoints = (*self.endpoints, endpoint)

    def _http(self) -> httpx2.Client:
        if self._client is None:
            import httpx2

            self._client = httpx2.Client(
                transport=self._transport,
                timeout=self.timeout_seconds,
                follow_redirects=False,
            )
        return self._client

    def _post(self, claim: Claim, secret: str) -> tuple[int | None, str | None]:
        """One attempt: the status answered (None: none) and the error (None: ok)."""
        import httpx2

        headers = sign(secret, webhook_id(claim.event.id), int(time.time()), claim.body)
        headers["content-type"] = "application/json"
        headers["user-agent"] = "batchfsm-webhooks"
        try:
            answer = self._http().post(
                claim.endpoint, content=claim.body, headers=headers
            )
        except httpx2.TimeoutException as exc:
            return None, f"timed out: {exc!r}"
        except httpx2.HTTPError as exc:
            return None, f"no answer: {exc!r}"
        if 200 <= answer.status_code < 300:
            return answer.status_code, None
        return answer.status_code, f"answered {answer.status_code}"

    def deliver_due(self, outbox: Outbox, now: float) -> int:
        """Make every attempt due by ``now`` (the deliverer's clock); how many.

        Each delivery claimed is attempted once and its outcome recorded: a
        2xx delivers it; else its next attempt is due after the backoff, or
        it is given up past the window.
        """
        by_url = {e.url: e.secret for e in self.endpoints}
        made = 0
        while claims := outbox.claim_deliveries(
            list(by_url), now, CLAIMS_PER_ROUND, self.timeout_seconds + 5
        ):
            for claim in claims:
                status, error = self._post(claim, by_url[claim.endpoint])
                attempt = Attempt(claim.event.id, claim.endpoint, now, status, error)
                deadline = (
                    claim.deadline
                    if claim.deadline is not None
                    else now + self.window_seconds
                )
                next_at: float | None = None
                if error is not None:
                    delay = _retry_delay(
                        claim,
                        claim.attempts + 1,
                        self.first_retry_seconds,
                        self.max_retry_seconds,
                    )
                    if now + delay <= deadline:
                        next_at = now + delay
                    then = "given up" if next_at is None else f"again in {delay:.1f} s"
                    log.info("webhook %s to %s: %s; %s",
                             claim.event.id, claim.endpoint, error, then)  # fmt: skip
                outbox.record_attempt(claim, attempt, next_at, deadline)
                made += 1
        return made

    # -- in the background ---------------------------------------------------------

    def start(self, outbox: Outbox, clock: Callable[[], float] = time.time) -> None:
        """Deliver in a thread of its own from now on, by ``clock`` (real time)."""
        if self._thread is not None or not self.endpoints:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                wait = 1.0
                try:
                    self.deliver_due(outbox, clock())
                    upcoming = outbox.next_delivery_at(e.url for e in self.endpoints)
                    if upcoming is not None:
                        wait = min(wait, max(0.01, upcoming - clock()))
                except StoreUnavailable:
                    wait = 1.0  # the store's outage is told by the worker
                except Exception:
                    log.exception("webhook delivery failed; carrying on")
                self._wake.wait(wait)
                self._wake.clear()

        self._thread = threading.Thread(
            target=loop, name="batchfsm-webhooks", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Events may have been written: the thread (if any) looks now."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (if started), wait for it, and close the connections."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join()
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def started(self) -> bool:
        """Whether a thread of its own delivers."""
        return self._thread is not None
