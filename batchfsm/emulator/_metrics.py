"""``GET /metrics``: the emulator in the Prometheus text format.

Written by ``prometheus_client`` (the format's reference implementation; its
parser reads it back in the tests), from a registry of the app's own, so
that two apps in one process never mix their series. What the store holds
is read at scrape time by a collector (:class:`_EmulatorCollector`): a
scrape costs one grouped count over the batches (a scan on SQL, a pass in
memory), not a page view's. HTTP answers are counted (:class:`HttpStats`) by
the app's one ASGI layer (:mod:`._layer`) by route template, method and
status code, timed from the request's arrival to its answer's head (a
stream's or a download's length is not its latency).

``/metrics`` asks for an API key, as every route does but ``/health``: any
key the server accepts, of any project (Prometheus sends one with its
scrape config's ``authorization``). What it shows is the whole server's,
summed over the projects, and no label holds a project's name, a batch's
or a file's id: a key learns counts, never another project's objects. While
the store is away, a scrape still answers: ``batchfsm_store_up`` 0 and the
counters, without the series read from the store.

:data:`SERIES` names every series, with its type and meaning: the docs'
table is checked against it, and a test scrapes every name.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from .._model import BatchStatus
from ._endpoint import _bug, context_of
from ._engine import Emulator
from ._leases import TAKEOVERS
from ._store_errors import StoreUnavailable

__all__ = ["SERIES", "HttpStats", "metrics_registry", "metrics_routes", "route_of"]

log = logging.getLogger("batchfsm.emulator")

#: Every series ``/metrics`` shows: name (as scraped), type, labels, meaning.
SERIES: tuple[tuple[str, str, str, str], ...] = (
    ("batchfsm_batches", "gauge", "status", "batches stored, by status"),
    (
        "batchfsm_requests",
        "gauge",
        "outcome",
        "requests of the stored batches: completed, failed",
    ),
    ("batchfsm_work_due", "gauge", "", "unfinished batches whose work is due now"),
    (
        "batchfsm_worker_lag_seconds",
        "gauge",
        "",
        "how long the earliest due work has waited (0: none late)",
    ),
    (
        "batchfsm_lease_takeovers_total",
        "counter",
        "",
        "batches this process took over from a holder whose lease ran out",
    ),
    ("batchfsm_store_up", "gauge", "", "1 while the store answers, 0 in an outage"),
    (
        "batchfsm_store_errors_total",
        "counter",
        "",
        "calls that found the store unavailable",
    ),
    ("batchfsm_store_outages_total", "counter", "", "outages of the store begun"),
    (
        "batchfsm_store_retries_total",
        "counter",
        "",
        "worker runs that failed on the store and are tried again after a backoff",
    ),
    (
        "batchfsm_http_requests_total",
        "counter",
        "route, method, code",
        "HTTP answers by route template, method and status code",
    ),
    (
        "batchfsm_http_request_duration_seconds",
        "histogram",
        "route, method",
        "time from a request's arrival to its answer's head",
    ),
)


class _EmulatorCollector(Collector):
    """The emulator's state, read at each scrape."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def collect(self) -> Iterator[Metric]:
        outage = self.emu.outage
        try:
            stored = list(self._stored())
        except StoreUnavailable as exc:  # the counters still tell the outage
            outage.failed(exc)
            stored = []
        else:
            outage.ok()  # the store answered: an outage under way is over
        yield from stored
        yield CounterMetricFamily(
            "batchfsm_lease_takeovers",
            "batches taken over from a holder whose lease ran out",
            TAKEOVERS.value,
        )
        yield GaugeMetricFamily(
            "batchfsm_store_up", "1 while the store answers", int(not outage.down)
        )
        for name, value, meaning in (
            ("errors", outage.total_failures, "calls that found the store away"),
            ("outages", outage.outages, "outages of the store begun"),
            ("retries", outage.retries, "worker runs retried after a backoff"),
        ):
            yield CounterMetricFamily(f"batchfsm_store_{name}", meaning, value)

    def _stored(self) -> Iterator[Metric]:
        """The series read from the store (all projects together)."""
        store = self.emu.batches
        census = store.census() if hasattr(store, "census") else {}
        batches = GaugeMetricFamily(
            "batchfsm_batches", "batches stored, by status", labels=["status"]
        )
        for status in BatchStatus:
            batches.add_metric([status.value], census.get(status.value, (0, 0, 0))[0])
        yield batches
        requests = GaugeMetricFamily(
            "batchfsm_requests",
            "requests of the stored batches",
            labels=["outcome"],
        )
        requests.add_metric(["completed"], sum(c[1] for c in census.values()))
        requests.add_metric(["failed"], sum(c[2] for c in census.values()))
        yield requests
        now = int(self.emu.clock.now())
        due = store.due_count(now) if hasattr(store, "due_count") else 0
        yield GaugeMetricFamily(
            "batchfsm_work_due", "unfinished batches whose work is due now", due
        )
        earliest = store.earliest_due()
        lag = 0 if earliest is None else max(0, now - earliest)
        yield GaugeMetricFamily(
            "batchfsm_worker_lag_seconds", "how long the earliest due work waited", lag
        )


#: The latency histogram's bucket bounds, in seconds (prometheus_client's).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


class _Series:
    """One (route, method)'s answers by status code, and its latency histogram."""

    __slots__ = ("codes", "counts", "total")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        # The count in each bucket (the last one +Inf) and the sum of the times.
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0


class HttpStats(Collector):
    """HTTP answers counted and timed; shown without ``_created`` series (noise).

    Each (route, method) keeps its series in one object, found by one lookup
    an answer (:meth:`series`).
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}

    def series(self, route: str, method: str) -> _Series:
        """The series of ``route`` (its template) and ``method``, made at first use."""
        found = self._series.get((route, method))
        if found is None:
            found = self._series.setdefault((route, method), _Series())
        return found

    def answered(self, route: str, method: str, code: int) -> None:
        """Count one answer of ``code``."""
        codes = self.series(route, method).codes
        codes[code] = codes.get(code, 0) + 1

    def timed(self, route: str, method: str, seconds: float) -> None:
        """Time one answer's head, ``seconds`` after its request arrived."""
        series = self.series(route, method)
        series.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        series.total += seconds

    def collect(self) -> Iterator[Metric]:
        answers = CounterMetricFamily(
            "batchfsm_http_requests",
            "HTTP answers by route template, method and status code",
            labels=["route", "method", "code"],
        )
        counted = sorted(
            ((route, method, str(code)), count)
            for (route, method), series in list(self._series.items())
            for code, count in list(series.codes.items())
        )
        for labels, count in counted:
            answers.add_metric(list(labels), count)
        yield answers
        latency = HistogramMetricFamily(
            "batchfsm_http_request_duration_seconds",
            "time from a request's arrival to its answer's head",
            labels=["route", "method"],
        )
        bounds = [*(repr(float(b)) for b in BUCKETS), "+Inf"]
        for (route, method), series in sorted(self._series.items()):
            if not any(series.counts):
                continue  # answered, never timed (it failed before its head)
            cumulative = list(itertools.accumulate(series.counts))
            buckets = list(zip(bounds, cumulative, strict=True))
            latency.add_metric([route, method], buckets, series.total)
        yield latency


def route_of(scope: Scope) -> str:
    """The matched route's template (a bounded set), or ``"(none)"``.

    Never the raw path, whose ids would make a series per batch.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "(none)"


def metrics_registry(emulator: Emulator) -> CollectorRegistry:
    """A registry of the app's own, with the emulator's collector in it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_EmulatorCollector(emulator))
    return registry


async def scrape(request: Request) -> Response:
    """``GET /metrics``: every series of the app's registry, in the text format.

    Behind the key as the API (any project's); not :func:`._endpoint.endpoint`,
    whose success would end an outage the scrape only noticed.
    """
    context = context_of(request)
    refused = context.authorize(request)
    if isinstance(refused, Response):
        return refused
    registry: CollectorRegistry = request.app.state.metrics
    try:
        text = await context.call(generate_latest, registry)
    except Exception:
        log.exception("GET /metrics failed")
        return _bug()
    return Response(text, media_type=CONTENT_TYPE_LATEST)


def metrics_routes() -> list[BaseRoute]:
    """``GET /metrics``."""
    return [Route("/metrics", scrape, methods=["GET"])]
