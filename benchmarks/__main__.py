"""Run the benchmarks: ``python -m benchmarks [--quick] [--json PATH] [--only NAME]``.

Each option is described by ``--help``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import asdict

from ._harness import (
    FULL_ROUNDS,
    QUICK_ROUNDS,
    Result,
    quick,
    run,
    set_quick,
    spread,
    table,
)
from .cases import all_cases

#: How every side-by-side figure is taken; written into the JSON and the page.
METHOD = (
    "Each side-by-side figure is the median of per-round ratios (ours over the "
    "peer's) over alternating rounds (ours first, then the peer first, ...), in "
    "CPU time where the work is CPU-bound: the process's CPU for in-process "
    "work, the server process's CPU an answer for serve figures; the spread is "
    "the rounds' quartiles (IQR) and extremes (min-max). msgspec is reported "
    "beside pydantic-core as the floor of Python libraries, never a target."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", action="append", help="run only these cases")
    parser.add_argument("--json", metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the figures with no peer (growth, HTTP, the openai client)",
    )
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=60.0,
        help="how long the engine's soak of 50 clients runs (default 60)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the quick run (under 3 minutes): fewer rounds and smaller sizes, "
        "the table only (as --no-extras)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        set_quick(True)
    cases = [c for c in all_cases() if not args.only or c.name in args.only]
    machine = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"batchfsm benchmarks on {machine}, {platform.machine()}", flush=True)
    results = []
    for case in cases:
        began = time.perf_counter()
        results.append(run(case))
        took = time.perf_counter() - began
        print(f"  measured {case.name} in {took:.1f} s", file=sys.stderr, flush=True)
    print(table(results))
    extras: list[str] = []
    from .llmock_cases import beside

    if not (fast_lane := beside()).endswith("not measured"):
        print(fast_lane, flush=True)
        extras.append(fast_lane)
    engine: dict[str, object] = {}
    if not args.only and not args.no_extras and not quick():
        extras, engine = _extras(args.soak_seconds)
    if args.json:
        _write(args.json, machine, results, extras, engine)
    return 0


def _extras(soak_seconds: float) -> tuple[list[str], dict[str, object]]:
    """The figures with no peer (a full run): printed lines, and as numbers."""
    from .emulator_cases import growth, http_retrieve_rps, openai_client_200_batches
    from .engine_cases import engine_figures
    from .gateway_cases import gateway_figures
    from .gateway_scale_cases import scale_figures
    from .memory_cases import figures as memory_figures
    from .serve_cases import serve_figures
    from .store_cases import figures as store_figures

    extras = [*growth(), openai_client_200_batches(), http_retrieve_rps()]
    extras += store_figures()  # memory, SQLite, PostgreSQL; 1 vs 2 processes
    print("\n".join(extras))
    serve_lines, engine = serve_figures()
    print("\n".join(serve_lines), flush=True)
    engine_lines, more = engine_figures(soak_seconds)
    extras += serve_lines + engine_lines
    engine |= more
    memory_lines, engine["content_memory"] = memory_figures()
    print("\n".join(memory_lines), flush=True)
    extras += memory_lines
    gateway_lines, engine["gateway"] = gateway_figures()
    print("\n".join(gateway_lines), flush=True)
    extras += gateway_lines
    scale_lines, engine["gateway_scale"] = scale_figures()
    print("\n".join(scale_lines), flush=True)
    extras += scale_lines
    return extras, engine


def _write(
    path: str,
    machine: str,
    results: list[Result],
    extras: list[str],
    engine: dict[str, object],
) -> None:
    """Write the run's JSON (its format: :mod:`benchmarks._report`).

    A quick run's table replaces the file's; the extra figures of the full run
    the file held are kept, marked with that run's date (``extras_from``).
    """
    data: dict[str, object] = {
        "machine": {
            "python": machine,
            "platform": platform.platform(),
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "date": datetime.date.today().isoformat(),
        "mode": "quick" if quick() else "full",
        "rounds": QUICK_ROUNDS if quick() else FULL_ROUNDS,
        "method": METHOD,
        "results": [_result(r) for r in results],
        "extras": extras,
        "engine": engine,
    }
    if quick() and not extras and os.path.exists(path):
        with open(path, encoding="utf-8") as old:
            before = json.load(old)
        if before.get("extras"):
            data["extras"], data["engine"] = before["extras"], before.get("engine", {})
            data["extras_from"] = before.get("extras_from", before["date"])
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, ensure_ascii=False)
        out.write("\n")


def _result(r: Result) -> dict[str, object]:
    """One result as the JSON keeps it: its fields, the ratio and its spread."""
    found: dict[str, object] = asdict(r)
    found |= {"ratio": r.ratio, "spread": r.spread}
    if r.floor_ratio is not None:
        found |= {"floor_ratio": r.floor_ratio, "floor_spread": spread(r.floor_ratios)}
    return found


if __name__ == "__main__":
    sys.exit(main())
