"""The test command of one mutant: the tests that run its line, then the rest.

cosmic-ray runs ``python mutation/mutant_tests.py SESSIONS MODULE`` in the
mutated tree. The session's baseline recorded, for every line of the module,
the tests whose run executed it (coverage's per-test contexts); the line the
mutant changed is found by comparing the module with its pristine copy. Those
tests run first (``-x``): most mutants die there in a second or two. Only if
they pass do all the module's test files run, so a mutant survives exactly
when it would have survived the whole files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    "-x",
    "-q",
    "-p",
    "no:cacheprovider",
    "-o",
    "addopts=",
]


def changed_lines(pristine: str, mutated: str) -> set[int]:
    """The 1-based numbers of the lines that differ (a mutant keeps the count)."""
    old, new = pristine.splitlines(), mutated.splitlines()
    changed = {n for n, (a, b) in enumerate(zip(old, new, strict=False), 1) if a != b}
    if len(old) != len(new):  # never seen; then every line from the first change on
        changed |= set(range(min(changed, default=1), max(len(old), len(new)) + 1))
    return changed


def covering_tests(lines_by_test: dict[str, list[str]], changed: set[int]) -> list[str]:
    """The node ids of the tests that ran any of the changed lines."""
    found = {node for line in changed for node in lines_by_test.get(str(line), [])}
    return sorted(found)


def main(sessions: Path, module: str) -> int:
    """Run the mutant's covering tests, then its module's files; pytest's status."""
    stem = Path(module).stem
    pristine = (sessions / f"{stem}.orig").read_text(encoding="utf-8")
    mutated = Path(module).read_text(encoding="utf-8")
    lines_by_test = json.loads(
        (sessions / f"{stem}.lines.json").read_text(encoding="utf-8")
    )
    files = (sessions / f"{stem}.files").read_text(encoding="utf-8").split()
    first = covering_tests(lines_by_test, changed_lines(pristine, mutated))
    if first and subprocess.run([*PYTEST, *first], check=False).returncode != 0:
        return 1
    return subprocess.run([*PYTEST, *files], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
