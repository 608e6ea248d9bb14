"""The docs page of a benchmark run, rendered from the JSON the run wrote.

``python -m benchmarks --json docs/_data/benchmarks.json`` writes the run;
``docs/conf.py`` renders it with :func:`page` at every docs build, so the page
shows exactly what was measured, and where.

The JSON a run writes (one object):

- ``machine``: ``python``, ``platform``, ``arch``, ``cpus``; ``date``;
- ``mode``: ``"quick"`` or ``"full"``; ``rounds``: a case's default rounds;
  ``method``: how the figures were taken, in a sentence or three;
- ``results``: the table, one object per case: ``name``, ``peer_name``,
  ``ours`` and ``peer`` (medians of the rounds, in ``unit``), ``target``,
  ``limit`` (an absolute bound, or null), ``ratios`` (ours/peer of each
  round), ``ratio`` (their median), ``spread`` (``min``, ``q1``, ``q3``,
  ``max`` of ``ratios``), ``clock`` (``cpu``, ``server cpu``, ``wall`` or
  ``bytes``) and, where a floor was measured, ``floor_name``, ``floor``,
  ``floor_ratios`` (floor/peer of each round), ``floor_ratio`` and
  ``floor_spread``;
- ``extras``: the lines of the figures with no peer, as printed;
- ``engine``: those figures as numbers (a full run only), keyed by figure;
- ``extras_from``: when a quick run kept the extra figures of the full run
  the file held before, that run's date.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ._harness import Result, table

__all__ = ["page", "results"]


def results(data: dict[str, Any]) -> list[Result]:
    """The results a run wrote, as the harness made them."""
    names = {f.name for f in dataclasses.fields(Result)}
    return [
        Result(**{k: v for k, v in r.items() if k in names}) for r in data["results"]
    ]


def page(data: dict[str, Any]) -> str:
    """reStructuredText: the machine and date, the table, and the extra figures."""
    machine = data["machine"]
    missed = [r.name for r in results(data) if not r.met]
    lines = [
        f"The latest run, on {machine['python']}, {machine['arch']}, "
        f"{machine['cpus']} CPUs ({machine['platform']}), {data['date']}, "
        f"a {data.get('mode', 'full')} run. {data.get('method', '')}",
        "",
        "::",
        "",
        *(f"    {line}" for line in table(results(data)).splitlines()),
        "",
    ]
    if data.get("extras_from") and data["extras"]:
        lines += [
            "The figures below are from the full run of "
            f"{data['extras_from']} (a quick run measures the table only)::",
            "",
        ]
    lines += [*(f"    {line}" for line in data["extras"]), ""]
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
