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
