"""The mutation run's own pieces: the module map, a mutant's tests, the report."""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from mutation import mutant_tests, report, run

ROOT = Path(__file__).resolve().parent.parent


def test_every_core_module_has_test_files_and_only_core_modules_do():
    config = tomllib.loads((ROOT / "mutation" / "cosmic-ray.toml").read_text())
    assert list(run.TESTS) == config["cosmic-ray"]["module-path"]
    for module, names in run.TESTS.items():
        assert (ROOT / module).is_file(), module
        assert names, module
        for path in run.test_files(module):
            assert (ROOT / path).is_file(), path


def test_a_session_config_mutates_its_module_and_runs_its_mutant_command(tmp_path):
    config = tomllib.loads(run.session_config("batchfsm/_rules.py", tmp_path, 150))
    section = config["cosmic-ray"]
    assert section["module-path"] == ["batchfsm/_rules.py"]
    assert section["timeout"] == 150
    assert section["test-command"].endswith(f"{tmp_path} batchfsm/_rules.py")
    assert "mutant_tests.py" in section["test-command"]
    base = tomllib.loads((ROOT / "mutation" / "cosmic-ray.toml").read_text())
    excluded = base["cosmic-ray"]["filters"]["operators-filter"]["exclude-operators"]
    assert section["filters"]["operators-filter"]["exclude-operators"] == excluded


def test_the_line_a_mutant_changed_is_found():
    pristine = "a = 1\nif a < 2:\n    b = 3\n"
    assert mutant_tests.changed_lines(pristine, pristine.replace("<", "<=")) == {2}
    assert mutant_tests.changed_lines(pristine, pristine) == set()
    # A mutant that changed the line count: everything from the change on.
    assert mutant_tests.changed_lines(
        pristine, "a = 1\nif a:\n    pass\n    b = 3\n"
    ) == {
        2,
        3,
        4,
    }


def test_a_mutant_runs_the_tests_of_its_lines_only():
    by_line = {
        "2": ["tests/test_a.py::test_x"],
        "3": ["tests/test_b.py::test_y"],
        "4": [],
    }
    assert mutant_tests.covering_tests(by_line, {2}) == ["tests/test_a.py::test_x"]
    assert mutant_tests.covering_tests(by_line, {4, 9}) == []
    assert mutant_tests.covering_tests(by_line, {2, 3}) == [
        "tests/test_a.py::test_x",
        "tests/test_b.py::test_y",
    ]


def test_coverage_contexts_become_pytest_node_ids():
    assert run._node("tests.test_rules.test_x") == "tests/test_rules.py::test_x"
    assert (
        run._node("tests.test_rules.TestX.test_y")
        == "tests/test_rules.py::TestX::test_y"
    )


def _survivor(mutant: str) -> report.Survivor:
    return report.Survivor("batchfsm/_m.py", "f", "core/AddNot", 3, "if a:", mutant)


def test_the_score_leaves_out_equivalent_mutants_and_counts_added_tests():
    equivalent, gap, unknown = (_survivor(m) for m in ("if x:", "if y:", "if z:"))
    session = report.Session(
        "batchfsm/_m.py", killed=17, survivors=(equivalent, gap, unknown)
    )
    reasons = {
        equivalent.key: {"kind": "equivalent", "reason": "x is a"},
        gap.key: {"kind": "killed", "reason": "y missed", "test": "tests/t.py::test_y"},
    }
    text, unexplained = report.render([session], reasons, "Commit abc")
    assert unexplained == [unknown]
    # 20 mutants ran, 1 equivalent: 17 of 19 killed, 18 of 19 with the test added.
    assert "17 of 19 non-equivalent mutants killed (89.5%)" in text
    assert "18 of 19 (94.7%) with the tests added" in text
    assert "Equivalent: x is a" in text
    assert "now killed by ``tests/t.py::test_y``: y missed" in text
    assert "**Unexplained**" in text


def test_the_not_run_column_is_there_only_while_mutants_are_left():
    finished = report.Session("batchfsm/_m.py", killed=3)
    unfinished = report.Session("batchfsm/_n.py", killed=2, pending=4)
    text, _ = report.render([finished], {}, "Run")
    assert "not run" not in text and "3 mutants ran." in text
    text, _ = report.render([finished, unfinished], {}, "Run")
    assert "- not run" in text
    assert "5 mutants ran; 4 were not run when this page was written." in text
    # The total row: 5 run, 5 killed, 0 survived, 0 equivalent, 0 added, 4 left.
    total = text.split("* - total")[1].split("Survivors")[0].split()
    assert total == ["-", "5", "-", "5", "-", "0", "-", "0", "-", "0", "-", "4"]


def test_an_entry_with_its_original_line_matches_only_the_mutant_of_that_line(
    tmp_path,
):
    # Two lines of a module can become the same mutant line ("for x in []:").
    one, other = (
        report.Survivor(
            "batchfsm/_m.py", "f", "core/ZeroIterationForLoop", n, o, "for x in []:"
        )
        for n, o in ((3, "for x in a:"), (5, "for x in b:"))
    )
    toml = tmp_path / "survivors.toml"
    toml.write_text(
        "\n".join(
            f'[[survivor]]\nmodule = "batchfsm/_m.py"\n'
            f'operator = "core/ZeroIterationForLoop"\nmutant = "for x in []:"\n'
            f'original = "{s.original}"\nkind = "equivalent"\nreason = "{s.line}"\n'
            for s in (one, other)
        ),
        encoding="utf-8",
    )
    session = report.Session("batchfsm/_m.py", killed=1, survivors=(one, other))
    text, unexplained = report.render([session], report.read_reasons(toml), "Run")
    assert unexplained == []
    assert "Equivalent: 3" in text
    assert "Equivalent: 5" in text


def test_a_survivor_is_read_from_its_diff():
    diff = "--- a/m.py\n+++ b/m.py\n@@ -1,1 +1,1 @@\n-    if a < b:\n+    if a <= b:\n"
    assert report._changed(diff) == ("if a < b:", "if a <= b:")
    removal = "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,1 @@\n-\n-@cache\n def f():\n"
    assert report._changed(removal) == ("@cache", "(removed) @cache")


def test_every_reason_is_complete_and_every_test_named_exists():
    for key, entry in report.read_reasons().items():
        assert entry["kind"] in {"equivalent", "killed"}, key
        assert entry["reason"].strip(), key
        if entry["kind"] == "killed":
            path, name = entry["test"].split("::")
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert name in names, entry["test"]


def test_the_docs_page_lists_every_reason_and_no_unexplained_survivor():
    page = (ROOT / "docs" / "mutation.rst").read_text(encoding="utf-8")
    assert "**Unexplained**" not in page
    for entry in report.read_reasons().values():
        assert entry["mutant"] in page, entry


@pytest.mark.parametrize("pattern", ["--all", "tox -e mutation"])
def test_the_docs_say_how_to_run_it(pattern):
    page = (ROOT / "docs" / "mutation.rst").read_text(encoding="utf-8")
    assert re.search(re.escape(pattern), page)


def test_the_quick_run_picks_the_core_modules_changed_against_the_base(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "batchfsm").mkdir()
    for name in ("_rules.py", "_moves.py", "_cli.py"):
        (tmp_path / "batchfsm" / name).write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    assert run.changed_modules("HEAD", tmp_path) == []
    for name in ("_rules.py", "_cli.py"):  # _cli is not core: never mutated
        (tmp_path / "batchfsm" / name).write_text("x = 2\n")
    assert run.changed_modules("HEAD", tmp_path) == ["batchfsm/_rules.py"]
