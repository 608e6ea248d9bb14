"""Measure a case and its peer side by side; report the ratio against a target.

The method (every side-by-side figure of the run):

- **Alternating rounds.** :func:`run` measures the two sides in rounds, taking
  them by turns (ours then the peer's, then the peer's then ours, ...), so
  that a busy moment of the shared machine weighs on both alike.
- **The median of per-round ratios.** Each round gives one ratio, ours over
  the peer's; the figure is their median, and the spread is shown beside it
  (the quartiles and the extremes of the rounds' ratios).
- **CPU time where the work is CPU-bound.** :func:`per_call` and
  :func:`per_item` time the process's CPU (:func:`time.process_time`), not
  the wall clock, which swings with the other processes of the machine.
  Cases that run servers give the server process's CPU an answer (see
  ``serve_cases``); a case whose cost is a wait says so with ``clock="wall"``.

Quick and full runs: ``python -m benchmarks --quick`` (or the environment
variable ``BATCHFSM_BENCH_QUICK=1``, which the subprocesses of a run inherit)
asks every case for its quick sizes. A case declares both sizes where it is
built, with :func:`sized`::

    Case("loads", per_call(f, repeat=sized(3, quick=1)), ...,
         rounds=sized(9, quick=5))

``rounds`` left out means :data:`FULL_ROUNDS` (``QUICK_ROUNDS`` quick); the
harness' own timers shorten their timing in a quick run by themselves.

The API other case modules use, kept stable: :class:`Case`, :class:`Result`,
:data:`Measure`, :func:`per_call`, :func:`per_item`, :func:`bytes_per_item`,
:func:`run`, :func:`table`, :func:`sized`, :func:`quick`.
"""

from __future__ import annotations

import os
import statistics
import time
import timeit
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

#: A measurement: returns the cost of one operation (µs, or bytes).
Measure = Callable[[], float]
#: A case measuring both sides itself (servers driven by turns, say): given
#: the number of rounds, the (ours, peer) cost of each round.
Pairs = Callable[[int], Sequence[tuple[float, float]]]

#: Rounds of a case that does not say, in a full and in a quick run.
FULL_ROUNDS, QUICK_ROUNDS = 7, 5
#: The environment variable of a quick run (inherited by subprocesses).
QUICK_ENV = "BATCHFSM_BENCH_QUICK"

T = TypeVar("T")


def quick() -> bool:
    """Whether this is a quick run (``--quick``, or ``BATCHFSM_BENCH_QUICK=1``)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def set_quick(on: bool) -> None:
    """Make this run (and the processes it starts) quick, or full."""
    os.environ[QUICK_ENV] = "1" if on else "0"


_is_quick = quick  # for sized(), whose keyword hides the name


def sized(full: T, *, quick: T) -> T:
    """``full`` in a full run, ``quick`` in a quick one (read when called)."""
    return quick if _is_quick() else full


@dataclass(frozen=True)
class Case:
    name: str
    ours: Measure
    peer_name: str
    peer: Measure
    target: float  # ours/peer must stay at or under this ratio ...
    limit: float | None = None  # ... or ours under this absolute figure
    unit: str = "µs"
    rounds: int | None = None  # None: FULL_ROUNDS (QUICK_ROUNDS quick)
    #: Set instead of timing ``ours``/``peer`` round by round: see :data:`Pairs`.
    pairs: Pairs | None = None
    #: A third side, reported beside the peer (msgspec beside pydantic-core):
    #: the floor a Python library reaches; never part of the target.
    floor_name: str = ""
    floor: Measure | None = None
    clock: str = "cpu"  # what was timed: "cpu", "server cpu", "wall", "bytes"


@dataclass(frozen=True)
class Result:
    name: str
    peer_name: str
    ours: float  # median of the rounds
    peer: float
    target: float
    limit: float | None
    unit: str
    #: ours/peer of each round (empty in runs written before rounds were kept).
    ratios: list[float] = field(default_factory=list)
    clock: str = "wall"
    floor_name: str = ""
    floor: float | None = None
    #: floor/peer of each round.
    floor_ratios: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """The median of the per-round ratios (of the medians, for old runs)."""
        if self.ratios:
            return statistics.median(self.ratios)
        return self.ours / self.peer

    @property
    def spread(self) -> dict[str, float]:
        """min, q1, q3 and max of the per-round ratios (empty without rounds)."""
        return spread(self.ratios)

    @property
    def floor_ratio(self) -> float | None:
        """The floor's time over the peer's: median of the rounds."""
        return statistics.median(self.floor_ratios) if self.floor_ratios else None

    @property
    def met(self) -> bool:
        if self.limit is not None:
            return self.ours <= self.limit
        return self.ratio <= self.target


def spread(values: Sequence[float]) -> dict[str, float]:
    """The extremes and quartiles of ``values`` (empty for none)."""
    if not values:
        return {}
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"min": min(values), "q1": q1, "q3": q3, "max": max(values)}


def _calibrated(fn: Callable[[], object], seconds: float) -> int:
    """Calls of ``fn`` that take at least ``seconds`` of CPU (the warm-up too)."""
    number = 1
    while True:
        start = time.process_time()
        for _ in range(number):
            fn()
        if time.process_time() - start >= seconds:
            return number
        number *= 2 if number < 1000 else 4


def per_call(fn: Callable[[], object], repeat: int = 5) -> Measure:
    """Median CPU µs per call of ``fn`` over a round's timings.

    A round takes at most 3 of the ``repeat`` timings (the rounds are the
    repeats now; one timing in a quick run). The first measurement calibrates
    (how many calls make a timing long enough to read, a warm-up too); the
    later ones reuse it.
    """
    number = 0

    def measure() -> float:
        nonlocal number
        if not number:
            number = _calibrated(fn, sized(0.2, quick=0.05))
        timer = timeit.Timer(fn, timer=time.process_time)
        runs = timer.repeat(repeat=sized(min(repeat, 3), quick=1), number=number)
        return statistics.median(runs) / number * 1e6

    return measure


def per_item(
    setup: Callable[[int], list[object]],
    op: Callable[[object], object],
    n: int = 20_000,
    repeat: int = 5,
) -> Measure:
    """Median CPU µs of ``op`` on each of ``n`` fresh items (moves use up state).

    A round takes at most 2 of the ``repeat`` timings; a quick run one, of a
    tenth of ``n``.
    """

    def measure() -> float:
        runs = []
        count = sized(n, quick=max(n // 10, 1))
        for _ in range(sized(min(repeat, 2), quick=1)):
            items = setup(count)
            start = time.process_time()
            for item in items:
                op(item)
            runs.append((time.process_time() - start) / count * 1e6)
        return statistics.median(runs)

    return measure


def bytes_per_item(make: Callable[[int], object], n: int = 10_000) -> Measure:
    """Bytes that ``make(i)`` leaves allocated per item, over ``n`` live items.

    A quick run takes a fifth of ``n``.
    """

    def measure() -> float:
        count = sized(n, quick=max(n // 5, 1))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        keep = [make(i) for i in range(count)]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del keep
        return (after - before) / count

    return measure


def _timed_pairs(case: Case, rounds: int) -> tuple[list[tuple[float, ...]], bool]:
    """Each round's costs (ours, peer[, floor]), the sides taken by turns."""
    sides = [case.ours, case.peer] + ([case.floor] if case.floor else [])
    found: list[tuple[float, ...]] = []
    for i in range(rounds):
        # ours first, then the peer first, ...: neither always runs warm.
        order = list(range(len(sides)))
        if i % 2:
            order.reverse()
        costs: dict[int, float] = {}
        for k in order:
            costs[k] = sides[k]()
        found.append(tuple(costs[k] for k in range(len(sides))))
    return found, case.floor is not None


def run(case: Case) -> Result:
    """Measure ``case`` in alternating rounds; the medians and per-round ratios."""
    rounds = case.rounds or sized(FULL_ROUNDS, quick=QUICK_ROUNDS)
    if case.pairs is not None:
        found: list[tuple[float, ...]] = [tuple(p) for p in case.pairs(rounds)]
        floored = False
    else:
        found, floored = _timed_pairs(case, rounds)
    ours = [f[0] for f in found]
    peer = [f[1] for f in found]
    floor = [f[2] for f in found] if floored else []
    clock = case.clock
    if case.unit == "B" and clock == "cpu":
        clock = "bytes"
    return Result(
        case.name,
        case.peer_name,
        statistics.median(ours),
        statistics.median(peer),
        case.target,
        case.limit,
        case.unit,
        ratios=[o / p for o, p in zip(ours, peer, strict=True)],
        clock=clock,
        floor_name=case.floor_name,
        floor=statistics.median(floor) if floor else None,
        floor_ratios=[f / p for f, p in zip(floor, peer, strict=True)] if floor else [],
    )


def _span(r: Result) -> str:
    s = r.spread
    return f"{s['q1']:.2f}-{s['q3']:.2f}" if s else "-"


def table(results: list[Result]) -> str:
    """The results as a text table: medians, ratio, its spread, the target."""
    header = (
        f"{'case':<26} {'batchfsm':>10} {'peer':<36} {'peer':>10} "
        f"{'ratio':>6} {'IQR':>9} {'min-max':>11} {'target':>9}  {'clock':<10}  met"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        target = f"≤{r.limit:g} {r.unit}" if r.limit is not None else f"≤{r.target:.2f}"
        s = r.spread
        extremes = f"{s['min']:.2f}-{s['max']:.2f}" if s else "-"
        lines.append(
            f"{r.name:<26} {r.ours:>7.2f} {r.unit:<2} {r.peer_name:<36} "
            f"{r.peer:>7.2f} {r.unit:<2} {r.ratio:>6.2f} {_span(r):>9} "
            f"{extremes:>11} {target:>9}  {r.clock:<10}  {'yes' if r.met else 'NO'}"
        )
        if r.floor is not None and r.floor_ratio is not None:
            fs = spread(r.floor_ratios)
            lines.append(
                f"{'  floor: ' + r.floor_name:<26} {'':>10} "
                f"{'(time over the peer)':<36} {r.floor:>7.2f} {r.unit:<2} "
                f"{r.floor_ratio:>6.2f} {fs['q1']:.2f}-{fs['q3']:.2f}"
                f"  ours/floor {r.ours / r.floor:.2f}"
            )
    return "\n".join(lines)
