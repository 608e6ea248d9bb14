"""The repository is self-contained: nothing in it reads a path outside it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "parents[" + "2]")
SKIPPED = {"__pycache__", "_build", "build", "dist", "node_modules"}


def _project_files() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*")
        if path.is_file()
        and not any(
            part.startswith(".") or part in SKIPPED or part.endswith(".egg-info")
            for part in path.relative_to(ROOT).parts[:-1]
        )
    ]


def test_no_file_refers_to_a_path_outside_the_repository():
    offenders = [
        str(path.relative_to(ROOT))
        for path in _project_files()
        if any(
            needle in path.read_text(encoding="utf-8", errors="replace")
            for needle in OUTSIDE
        )
    ]
    assert offenders == []


def test_the_reference_data_is_in_the_repository():
    from .conftest import REFERENCE_EXAMPLES, SCHEMA_PATH

    assert SCHEMA_PATH.is_file()
    assert {p.stem for p in REFERENCE_EXAMPLES} == {
        "validating",
        "in_progress",
        "cancelling",
        "completed",
        "failed",
    }


#: What ``python -m benchmarks`` may not import: it runs with the bench extra
#: only (``tox -e bench``), where neither the tests nor pytest are installed.
NOT_FOR_BENCHMARKS = ("tests", "pytest", "hypothesis")


def _imports(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_benchmarks_import_nothing_of_the_tests_nor_pytest():
    # Every import, at the top or inside a function (where the old ones hid).
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "benchmarks").rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in NOT_FOR_BENCHMARKS
    }
    assert found == set()


def test_the_library_imports_nothing_of_the_tests():
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "batchfsm").rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] == "tests"
    }
    assert found == set()
