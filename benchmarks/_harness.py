"""Measure a case and its peer side by side and report the ratio to a target."""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    ours: Callable[[], object]
    peer_name: str
    peer: Callable[[], object]
    target: float  # the DESIGN §6 ratio ours/peer must stay under


@dataclass(frozen=True)
class Result:
    name: str
    peer_name: str
    ours_us: float
    peer_us: float
    target: float

    @property
    def ratio(self) -> float:
        return self.ours_us / self.peer_us

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


def per_call_us(fn: Callable[[], object], repeat: int = 7) -> float:
    """Median microseconds per call, after timeit's own calibration as warm-up."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    runs = timer.repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


def run(case: Case) -> Result:
    # Interleave so that a slow moment of the machine hits both sides alike.
    ours, peer = [], []
    for _ in range(3):
        ours.append(per_call_us(case.ours))
        peer.append(per_call_us(case.peer))
    return Result(
        case.name,
        case.peer_name,
        statistics.median(ours),
        statistics.median(peer),
        case.target,
    )


def table(results: list[Result]) -> str:
    header = (
        f"{'case':<28} {'batchfsm µs':>12} {'peer':<34} {'peer µs':>9} "
        f"{'ratio':>6} {'target':>7}  met"
    )
    lines = [header, "-" * len(header)]
    lines.extend(
        f"{r.name:<28} {r.ours_us:>12.2f} {r.peer_name:<34} {r.peer_us:>9.2f} "
        f"{r.ratio:>6.2f} {'≤' + format(r.target, '.2f'):>7}  "
        f"{'yes' if r.met else 'NO'}"
        for r in results
    )
    return "\n".join(lines)
