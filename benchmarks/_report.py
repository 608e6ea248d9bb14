"""The docs page of a benchmark run, rendered from the JSON the run wrote.

``python -m benchmarks --json docs/_data/benchmarks.json`` writes the run;
``docs/conf.py`` renders it with :func:`page` at every docs build, so the page
shows exactly what was measured, and where.
"""

from __future__ import annotations

from typing import Any

from ._harness import Result, table

__all__ = ["page", "results"]


def results(data: dict[str, Any]) -> list[Result]:
    """The results a run wrote, as the harness made them."""
    return [
        Result(**{k: v for k, v in r.items() if k != "ratio"}) for r in data["results"]
    ]


def page(data: dict[str, Any]) -> str:
    """reStructuredText: the machine and date, the table, and the extra figures."""
    machine = data["machine"]
    missed = [r.name for r in results(data) if not r.met]
    lines = [
        f"The latest run, on {machine['python']}, {machine['arch']}, "
        f"{machine['cpus']} CPUs ({machine['platform']}), {data['date']}::",
        "",
        *(f"    {line}" for line in table(results(data)).splitlines()),
        "",
        *(f"    {line}" for line in data["extras"]),
        "",
    ]
    if not data.get("engine"):
        lines += [
            "This run has no engine or store figures (it predates them, or ran "
            "with ``--no-extras``); ``python -m benchmarks --json "
            "docs/_data/benchmarks.json`` records them.",
            "",
        ]
    lines += [
        "Targets missed in this run: "
        + (", ".join(f"``{name}``" for name in missed) if missed else "none")
        + ".",
    ]
    return "\n".join(lines) + "\n"
