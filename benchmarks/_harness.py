"""Measure a case and its peer side by side; report the ratio against a target."""

from __future__ import annotations

import statistics
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

#: A measurement: returns the cost of one operation (µs, or bytes).
Measure = Callable[[], float]


@dataclass(frozen=True)
class Case:
    name: str
    ours: Measure
    peer_name: str
    peer: Measure
    target: float  # ours/peer must stay at or under this ratio ...
    limit: float | None = None  # ... or ours under this absolute figure
    unit: str = "µs"


@dataclass(frozen=True)
class Result:
    name: str
    peer_name: str
    ours: float
    peer: float
    target: float
    limit: float | None
    unit: str

    @property
    def ratio(self) -> float:
        return self.ours / self.peer

    @property
    def met(self) -> bool:
        if self.limit is not None:
            return self.ours <= self.limit
        return self.ratio <= self.target


def per_call(fn: Callable[[], object], repeat: int = 5) -> Measure:
    """Median µs per call of ``fn``, after timeit's calibration (the warm-up)."""

    def measure() -> float:
        timer = timeit.Timer(fn)
        number, _ = timer.autorange()
        runs = timer.repeat(repeat=repeat, number=number)
        return statistics.median(runs) / number * 1e6

    return measure


def per_item(
    setup: Callable[[int], list[object]],
    op: Callable[[object], object],
    n: int = 20_000,
    repeat: int = 5,
) -> Measure:
    """Median µs of ``op`` on each of ``n`` fresh items (moves use up state)."""

    def measure() -> float:
        runs = []
        for _ in range(repeat):
            items = setup(n)
            start = perf_counter()
            for item in items:
                op(item)
            runs.append((perf_counter() - start) / n * 1e6)
        return statistics.median(runs)

    return measure


def bytes_per_item(make: Callable[[int], object], n: int = 10_000) -> Measure:
    """Bytes that ``make(i)`` leaves allocated per item, over ``n`` live items."""

    def measure() -> float:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        keep = [make(i) for i in range(n)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del keep
        return (after - before) / n

    return measure


def run(case: Case) -> Result:
    # Interleave the sides so that a slow moment of the machine hits both alike.
    ours, peer = [], []
    for _ in range(3):
        ours.append(case.ours())
        peer.append(case.peer())
    return Result(
        case.name,
        case.peer_name,
        statistics.median(ours),
        statistics.median(peer),
        case.target,
        case.limit,
        case.unit,
    )


def table(results: list[Result]) -> str:
    header = (
        f"{'case':<24} {'batchfsm':>10} {'peer':<40} {'peer':>10} "
        f"{'ratio':>6} {'target':>9}  met"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        target = f"≤{r.limit:g} {r.unit}" if r.limit is not None else f"≤{r.target:.2f}"
        lines.append(
            f"{r.name:<24} {r.ours:>7.2f} {r.unit:<2} {r.peer_name:<40} "
            f"{r.peer:>7.2f} {r.unit:<2} {r.ratio:>6.2f} {target:>9}  "
            f"{'yes' if r.met else 'NO'}"
        )
    return "\n".join(lines)
