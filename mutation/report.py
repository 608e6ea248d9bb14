"""``docs/mutation.rst`` from the cosmic-ray sessions of a whole-core run.

Usage::

    python -m mutation.report [--sessions .mutation] [--output docs/mutation.rst]

Every surviving mutant must have an entry in ``mutation/survivors.toml``,
matched by module, operator and the mutated line: either ``equivalent`` (no
test can tell it from the code, and the reason says why) or ``killed`` (the
gap was real; ``test`` names the test added for it). The score counts the
mutants that are not equivalent, and how many of them the suite kills, in the
recorded run and with the tests added since. A survivor without an entry is
listed as unexplained and the script exits non-zero.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REASONS = ROOT / "mutation" / "survivors.toml"
CONFIG = ROOT / "mutation" / "cosmic-ray.toml"


@dataclass(frozen=True)
class Survivor:
    """One surviving mutant: where, which operator, and the line it made."""

    module: str
    function: str
    operator: str
    line: int
    original: str
    mutant: str

    @property
    def key(self) -> tuple[str, ...]:
        """What ``survivors.toml`` matches on: stable while other lines move."""
        return self.module, self.operator, self.mutant


@dataclass
class Session:
    """The counts of one module's session, and its survivors."""

    module: str
    killed: int = 0
    timeouts: int = 0
    incompetent: int = 0
    pending: int = 0
    survivors: tuple[Survivor, ...] = ()

    @property
    def run(self) -> int:
        """Mutants whose tests ran to an end."""
        return self.killed + self.incompetent + len(self.survivors)


def _changed(diff: str) -> tuple[str, str]:
    """The line a mutant removed and the one it put, from cosmic-ray's diff."""
    lines = diff.splitlines()
    removed = [ln[1:].strip() for ln in lines if ln[:1] == "-" and ln[:3] != "---"]
    added = [ln[1:].strip() for ln in lines if ln[:1] == "+" and ln[:3] != "+++"]
    removed, added = [ln for ln in removed if ln], [ln for ln in added if ln]
    original = (removed or [""])[0]
    # A line taken out (a decorator removed) is named by what it was.
    return original, (added or [f"(removed) {original}"])[0]


def read_session(path: Path) -> Session:
    """One session file's counts and survivors."""
    with sqlite3.connect(path) as db:
        module = db.execute(
            "select module_path from mutation_specs limit 1"
        ).fetchone()[0]
        rows = db.execute(
            "select m.operator_name, m.start_pos_row, m.definition_name, "
            "r.worker_outcome, r.test_outcome, r.output, r.diff "
            "from mutation_specs m left join work_results r using (job_id) "
            "order by m.start_pos_row, m.start_pos_col, m.operator_name"
        ).fetchall()
    session = Session(module)
    survivors = []
    for operator, row, function, worker, test, output, diff in rows:
        if worker == "SKIPPED":
            continue
        if worker is None:
            session.pending += 1
        elif test == "SURVIVED":
            original, mutant = _changed(diff or "")
            survivors.append(
                Survivor(module, function or "", operator, row, original, mutant)
            )
        elif test == "INCOMPETENT":
            session.incompetent += 1
        else:
            session.killed += 1
            session.timeouts += output == "timeout"
    session.survivors = tuple(survivors)
    return session


def read_reasons(path: Path = REASONS) -> dict[tuple[str, ...], dict[str, str]]:
    """``survivors.toml``'s entries by their key.

    An entry with an ``original`` line too matches only the mutant made from
    it: two lines of a module can become the same mutant line.
    """
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("survivor", [])
    reasons: dict[tuple[str, ...], dict[str, str]] = {}
    for e in entries:
        key = (e["module"], e["operator"], e["mutant"])
        reasons[(*key, e["original"]) if "original" in e else key] = e
    return reasons


def summary(sessions: Iterable[Path]) -> str:
    """One line per session: killed, survived, left to run."""
    lines = []
    for path in sessions:
        if path.exists():
            s = read_session(path)
            lines.append(
                f"{s.module}: {s.killed} killed, {len(s.survivors)} survived, "
                f"{s.incompetent} incompetent, {s.pending} not run"
            )
    return "\n".join(lines)


_HEAD = """\
.. This page is written by ``python -m mutation.report`` from the sessions of
   a whole-core run and ``mutation/survivors.toml``; edit those, not this.

Mutation score
==============

Each mutant is a one-token change to one module of the core (an operator
swapped, a constant changed, a loop made empty, ...); the tests that run the
changed line go first, then every test file of the module. A mutant the tests
fail is *killed*; one they pass *survives*. A surviving mutant is either
*equivalent* (no test could tell it from the code; the reason says why) or a
gap, for which a test was added. ``tox -e mutation`` mutates the modules
changed against ``main`` in minutes; ``tox -e mutation -- --all`` runs the
whole core (:ref:`how <mutation-how>`).

"""

_HOW = """\
.. _mutation-how:

How to run it
-------------

``mutation/run.py`` keeps one cosmic-ray session per module, with the test
files that exercise it (found from coverage's per-test contexts) in
``TESTS``. Before mutating it runs them once under coverage, recording which
tests run each line; each mutant then runs first the tests of its own line,
and only if they pass every file of the module, so a mutant survives exactly
when the whole files pass. Each worker (``--jobs``) mutates its own copy of
the tree.

.. code-block:: console

   $ tox -e mutation                                # modules changed against main
   $ tox -e mutation -- batchfsm/_rules.py          # the modules named
   $ nice -n 19 tox -e mutation -- --all --jobs 2   # the whole core
   $ python -m mutation.report                      # this page, from .mutation/
"""


def _table(
    sessions: Sequence[Session], equivalent: dict[str, int], added: dict[str, int]
) -> str:
    # "not run" only while mutants are left: a finished run has no such column.
    unfinished = any(s.pending for s in sessions)
    head = ["module", "mutants", "killed", "survived", "equivalent"]
    rows = [[*head, "killed by added tests", *["not run"] * unfinished]]
    for s in sessions:
        counts = [s.run, s.killed + s.incompetent, len(s.survivors)]
        counts += [equivalent[s.module], added[s.module], *[s.pending] * unfinished]
        rows.append([f"``{s.module}``", *map(str, counts)])
    totals = [sum(int(r[i]) for r in rows[1:]) for i in range(1, len(rows[0]))]
    rows.append(["total", *map(str, totals)])
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in rows:
        out.append(f"   * - {row[0]}")
        out += [f"     - {cell}" for cell in row[1:]]
    return "\n".join(out) + "\n"


def _survivor_entry(survivor: Survivor, reason: dict[str, str] | None) -> str:
    place = f"in ``{survivor.function}``" if survivor.function else "at module level"
    where = f"``{survivor.module}`` line {survivor.line}, {place}"
    lines = [f"- {where} ({survivor.operator.removeprefix('core/')})", ""]
    lines += ["  .. code-block:: diff", "", f"     - {survivor.original}"]
    lines += [f"     + {survivor.mutant}", ""]
    if reason is None:
        lines.append("  **Unexplained**: no entry in ``mutation/survivors.toml``.")
    elif reason["kind"] == "equivalent":
        lines.append(f"  Equivalent: {reason['reason']}")
    else:
        lines.append(f"  A gap, now killed by ``{reason['test']}``: {reason['reason']}")
    return "\n".join(lines) + "\n"


def render(
    sessions: Sequence[Session],
    reasons: dict[tuple[str, ...], dict[str, str]],
    about: str,
    missing: Sequence[str] = (),
) -> tuple[str, list[Survivor]]:
    """The page, and the survivors that have no reason (``missing``: no session)."""
    equivalent = {s.module: 0 for s in sessions}
    added = dict(equivalent)
    entries, unexplained = [], []
    for session in sessions:
        for survivor in session.survivors:
            reason = reasons.get(
                (*survivor.key, survivor.original), reasons.get(survivor.key)
            )
            if reason is None:
                unexplained.append(survivor)
            elif reason["kind"] == "equivalent":
                equivalent[survivor.module] += 1
            else:
                added[survivor.module] += 1
            entries.append(_survivor_entry(survivor, reason))
    run = sum(s.run for s in sessions)
    killed = sum(s.killed + s.incompetent for s in sessions)
    real = run - sum(equivalent.values())
    now = killed + sum(added.values())
    pending = sum(s.pending for s in sessions)
    score = [
        "The recorded run",
        "----------------",
        "",
        f"{about}.",
        "",
        f"**{killed} of {real} non-equivalent mutants killed "
        f"({100 * killed / max(real, 1):.1f}%) in the recorded run; "
        f"{now} of {real} ({100 * now / max(real, 1):.1f}%) with the tests added "
        f"for its gaps.** {run} mutants ran"
        + (f"; {pending} were not run when this page was written." if pending else ".")
        + (
            f" Not started: {', '.join(f'``{m}``' for m in missing)}."
            if missing
            else ""
        ),
        "",
        _table(sessions, equivalent, added),
        "Survivors",
        "---------",
        "",
        *(entries or ["None.\n"]),
    ]
    return _HEAD + "\n".join(score) + "\n" + _HOW, unexplained


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report; non-zero if a survivor has no reason."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=Path, default=ROOT / ".mutation")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "mutation.rst")
    args = parser.parse_args(argv)
    sessions = [read_session(p) for p in sorted(args.sessions.glob("*.sqlite"))]
    run = args.sessions / "run.txt"
    about = run.read_text(encoding="utf-8").strip() if run.exists() else "not recorded"
    core = tomllib.loads(CONFIG.read_text(encoding="utf-8"))["cosmic-ray"][
        "module-path"
    ]
    missing = [m for m in core if m not in {s.module for s in sessions}]
    text, unexplained = render(sessions, read_reasons(), about, missing)
    args.output.write_text(text, encoding="utf-8")
    for survivor in unexplained:
        print(f"no reason in {REASONS.name}: {survivor}", file=sys.stderr)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
