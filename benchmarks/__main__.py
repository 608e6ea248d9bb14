"""Run the benchmarks: ``python -m benchmarks [--only NAME ...] [--json PATH]``."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from dataclasses import asdict

from ._harness import run, table
from .cases import all_cases


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
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if not args.only or c.name in args.only]
    machine = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"batchfsm benchmarks on {machine}, {platform.machine()}", flush=True)
    results = []
    for case in cases:
        results.append(run(case))
        print(f"  measured {case.name}", file=sys.stderr, flush=True)
    print(table(results))
    extras: list[str] = []
    engine: dict[str, object] = {}
    if not args.only and not args.no_extras:
        from .emulator_cases import growth, http_retrieve_rps, openai_client_200_batches
        from .engine_cases import engine_figures
        from .memory_cases import figures as memory_figures
        from .serve_cases import serve_figures
        from .store_cases import figures as store_figures

        extras = [*growth(), openai_client_200_batches(), http_retrieve_rps()]
        extras += store_figures()  # memory, SQLite, PostgreSQL; 1 vs 2 processes
        print("\n".join(extras))
        serve_lines, engine = serve_figures()
        print("\n".join(serve_lines), flush=True)
        engine_lines, more = engine_figures(args.soak_seconds)
        extras += serve_lines + engine_lines
        engine |= more
        memory_lines, engine["content_memory"] = memory_figures()
        print("\n".join(memory_lines), flush=True)
        extras += memory_lines
        from .gateway_cases import gateway_figures

        gateway_lines, engine["gateway"] = gateway_figures()
        print("\n".join(gateway_lines), flush=True)
        extras += gateway_lines
        from .gateway_scale_cases import scale_figures

        scale_lines, engine["gateway_scale"] = scale_figures()
        print("\n".join(scale_lines), flush=True)
        extras += scale_lines
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "machine": {
                        "python": machine,
                        "platform": platform.platform(),
                        "arch": platform.machine(),
                        "cpus": os.cpu_count(),
                    },
                    "date": datetime.date.today().isoformat(),
                    "results": [asdict(r) | {"ratio": r.ratio} for r in results],
                    "extras": extras,
                    "engine": engine,
                },
                out,
                indent=2,
                ensure_ascii=False,
            )
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
