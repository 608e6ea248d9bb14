"""Mutation testing of the core with cosmic-ray, one session per module.

A mutant is a one-token change to one file of ``batchfsm/``; the tests that
exercise that file then run, and a mutant they do not fail survives. Each
module has its own session and its own test command: only the test files that
run its code (:data:`TESTS`, found from per-test coverage), fastest first, so a
killed mutant dies in seconds.

Usage (``tox -e mutation -- ARGS`` runs the same)::

    python -m mutation.run                      # modules changed against main
    python -m mutation.run batchfsm/_rules.py   # the modules named, in that order
    python -m mutation.run --all                # the whole core
    python -m mutation.run --all --resume       # finish the sessions left

Sessions are written to ``--sessions`` (``.mutation/``), one ``<module>.sqlite``
each; ``python mutation/report.py`` turns them into ``docs/mutation.rst``.
Each worker mutates its own copy of the tree, so ``--jobs 2`` never lets two
mutants meet, and the worktree is never changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

import coverage

from mutation.report import summary

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "mutation" / "cosmic-ray.toml"

#: The test files that run each core module's code, fastest and most direct
#: first (``-x`` stops at the first failure). Found with coverage's per-test
#: contexts; a module whose code runs at import (the table, the generators)
#: takes the tests of what it builds.
TESTS: dict[str, tuple[str, ...]] = {
    "batchfsm/_table.py": ("test_machine", "test_lifecycle", "test_errors"),
    "batchfsm/_graph.py": ("test_errors", "test_lifecycle", "test_machine"),
    "batchfsm/_invariants.py": (
        "test_check_trace",
        "test_invariants",
        "test_openai_objects",
        "test_lifecycle",
        "test_machine",
        "test_testing",
    ),
    "batchfsm/_rules.py": (
        "test_check_trace",
        "test_invariants",
        "test_lifecycle",
        "test_machine",
        "test_move_step",
        "test_openai_objects",
    ),
    "batchfsm/_moves.py": (
        "test_errors",
        "test_lifecycle",
        "test_machine",
        "test_move_step",
        "test_invariants",
        "test_convert",
    ),
    "batchfsm/_movegen.py": (
        "test_generated_sources",
        "test_lifecycle",
        "test_machine",
        "test_move_step",
        "test_invariants",
    ),
    "batchfsm/_machine.py": ("test_machine", "test_lifecycle", "test_testing"),
    "batchfsm/_field_rules.py": (
        "test_generated_sources",
        "test_openai_objects",
        "test_invariants",
        "test_convert",
    ),
    "batchfsm/_json_parse.py": ("test_generated_sources", "test_convert"),
    "batchfsm/_json_write.py": ("test_generated_sources", "test_convert"),
    "batchfsm/_json_text.py": ("test_json_text", "test_generated_sources"),
    "batchfsm/_converter.py": (
        "test_errors",
        "test_openai_objects",
        "test_invariants",
        "test_convert",
    ),
    "batchfsm/_json_problems.py": (
        "test_errors",
        "test_openai_objects",
        "test_convert",
    ),
    "batchfsm/_json_io.py": (
        "test_errors",
        "test_check_trace",
        "test_openai_objects",
        "test_convert",
    ),
}

PYTEST = "-m pytest -x -q -p no:cacheprovider -o addopts="
#: What a worker's copy of the tree needs to import batchfsm and run its tests.
_TREE = ("batchfsm", "tests", "pyproject.toml")
_COVERAGE_RC = """\
[run]
dynamic_context = test_function
include = {module}
data_file = {data}
"""


def test_files(module: str) -> list[str]:
    """The test files of ``module``, fastest first."""
    return [f"tests/{name}.py" for name in TESTS[module]]


def mutant_command(module: str, sessions: Path) -> str:
    """The cosmic-ray test command of ``module``'s mutants (see mutant_tests.py)."""
    script = ROOT / "mutation" / "mutant_tests.py"
    python = sys.executable
    return f"env HYPOTHESIS_PROFILE=dev {python} {script} {sessions.resolve()} {module}"


def changed_modules(base: str, root: Path = ROOT) -> list[str]:
    """The core modules that differ from ``base`` (commits and the worktree)."""
    out = subprocess.run(
        ["git", "diff", "--name-only", base, "--", "batchfsm"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [m for m in TESTS if m in set(out.split())]


def session_config(module: str, sessions: Path, timeout: float) -> str:
    """The cosmic-ray config of one module's session, from ``cosmic-ray.toml``."""
    text = CONFIG.read_text(encoding="utf-8")
    base = tomllib.loads(text)["cosmic-ray"]
    excluded = base["filters"]["operators-filter"]["exclude-operators"]
    lines = [
        "[cosmic-ray]",
        f"module-path = [{module!r}]",
        f"timeout = {timeout:.0f}.0",
        "excluded-modules = []",
        f"test-command = {mutant_command(module, sessions)!r}",
        "",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "",
        "[cosmic-ray.filters.operators-filter]",
        "exclude-operators = [",
        *(f"    {pattern!r}," for pattern in excluded),
        "]",
        "",
    ]
    return "\n".join(lines)


def session_path(sessions: Path, module: str) -> Path:
    """Where ``module``'s session is kept: ``_rules.py`` -> ``_rules.sqlite``."""
    return sessions / (Path(module).stem + ".sqlite")


def _copy_tree(into: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "*.pyc")
    for name in _TREE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(source, into / name)


def _run(args: Sequence[str], tree: Path, log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "HYPOTHESIS_PROFILE": "dev"}
    with log.open("a", encoding="utf-8") as out:
        subprocess.run(args, cwd=tree, env=env, check=True, stdout=out, stderr=out)


def _baseline(module: str, tree: Path, sessions: Path, log: Path) -> float:
    """Run the module's tests unmutated (they must pass) under coverage.

    Records, beside the session, the pristine module, its test files and, for
    every line, the tests that ran it; returns the seconds the run took.
    """
    stem = Path(module).stem
    (sessions / f"{stem}.orig").write_bytes((tree / module).read_bytes())
    (sessions / f"{stem}.files").write_text(
        " ".join(test_files(module)), encoding="utf-8"
    )
    data = sessions / f"{stem}.coverage"
    rc = sessions / f"{stem}.coveragerc"
    rc.write_text(
        _COVERAGE_RC.format(module=tree / module, data=data), encoding="utf-8"
    )
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "coverage",
        "run",
        f"--rcfile={rc}",
        *PYTEST.split(),
    ]
    _run([*command, *test_files(module)], tree, log)
    seconds = time.monotonic() - started
    lines = coverage.CoverageData(basename=str(data))
    lines.read()
    by_line = lines.contexts_by_lineno(str(tree / module))
    tests = {
        n: sorted({_node(c) for c in found if c.startswith("tests.")})
        for n, found in by_line.items()
    }
    (sessions / f"{stem}.lines.json").write_text(json.dumps(tests), encoding="utf-8")
    return seconds


def _node(context: str) -> str:
    """Coverage's ``tests.test_x.Class.test_y`` as pytest's node id."""
    package, module, *name = context.split(".")
    return f"{package}/{module}.py::" + "::".join(name)


def run_session(module: str, tree: Path, sessions: Path, resume: bool) -> None:
    """Mutate ``module`` in ``tree`` and record every mutant's fate in its session."""
    session = session_path(sessions, module)
    log = session.with_suffix(".log")
    config = session.with_suffix(".toml")
    cr = Path(sys.executable).parent
    if not (resume and config.exists() and session.with_suffix(".lines.json").exists()):
        # A mutant that loops forever is cut off: generous beside the clean run.
        timeout = max(120.0, 6 * _baseline(module, tree, sessions, log))
        config.write_text(session_config(module, sessions, timeout), encoding="utf-8")
    if not (resume and session.exists()):
        _run(
            [str(cr / "cosmic-ray"), "init", str(config), str(session), "--force"],
            tree,
            log,
        )
        _run([str(cr / "cr-filter-operators"), str(session), str(config)], tree, log)
    _run([str(cr / "cosmic-ray"), "exec", str(config), str(session)], tree, log)


def run(modules: Iterable[str], sessions: Path, jobs: int, resume: bool) -> None:
    """Run the modules' sessions, ``jobs`` at a time, each in its own tree copy."""
    pending = list(modules)
    sessions.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    failures: list[str] = []

    def worker(tree: Path) -> None:
        _copy_tree(tree)
        while True:
            with lock:
                if not pending:
                    return
                module = pending.pop(0)
            print(f"mutating {module}", flush=True)
            try:
                run_session(module, tree, sessions, resume)
            except subprocess.CalledProcessError as error:
                failures.append(f"{module}: {error}")
            print(f"done {module}", flush=True)

    with tempfile.TemporaryDirectory(prefix="batchfsm-mutation-") as scratch:
        threads = [
            threading.Thread(target=worker, args=(Path(scratch) / f"tree{n}",))
            for n in range(max(1, jobs))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise SystemExit("sessions failed (see their .log):\n" + "\n".join(failures))


def _note_run(sessions: Path, jobs: int) -> None:
    """Record which commit a whole-core run mutates, and when it began."""
    sessions.mkdir(parents=True, exist_ok=True)
    note = sessions / "run.txt"
    head = subprocess.run(
        ["git", "log", "-1", "--format=%h (%cs)"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    line = f"Commit {head}, begun {began}, {jobs} worker(s) under nice -n 19"
    if not note.exists():
        note.write_text(line + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: pick the modules, run their sessions, then report."""
    parser = argparse.ArgumentParser(
        prog="python -m mutation.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("modules", nargs="*", help="core modules (default: changed)")
    parser.add_argument("--all", action="store_true", help="every core module")
    parser.add_argument("--base", default="main", help="what 'changed' is against")
    parser.add_argument("--sessions", type=Path, default=ROOT / ".mutation")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="keep finished mutants")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TESTS]
    if unknown:
        parser.error(
            f"not a core module: {', '.join(unknown)} (choose from {', '.join(TESTS)})"
        )
    try:
        modules = (
            list(TESTS) if args.all else args.modules or changed_modules(args.base)
        )
    except subprocess.CalledProcessError as error:
        parser.error(
            f"cannot compare with {args.base!r} (--base): {error.stderr.strip()}"
        )
    if not modules:
        print(f"no core module differs from {args.base}: nothing to mutate")
        return
    if not args.modules:
        # Biggest first, so the last session to finish is a short one; modules
        # named run in the order named (the ones wanted first, when time is short).
        modules.sort(key=lambda m: -(ROOT / m).stat().st_size)
    if args.all:
        _note_run(args.sessions, args.jobs)
    run(modules, args.sessions, args.jobs, args.resume)

    print(summary([session_path(args.sessions, m) for m in modules]))


if __name__ == "__main__":
    main()
