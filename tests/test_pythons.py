"""Every Python we claim runs in CI, and we claim only the Pythons CI runs (#26)."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The CI machine's own Python: Debian 12's (bookworm).
HOST = "3.11"


def tox_pythons() -> set[str]:
    """The versions of the ``py3XX`` environments in tox's ``env_list``."""
    tox = (ROOT / "tox.ini").read_text(encoding="utf-8")
    found = re.search(r"^env_list = (.*)$", tox, re.M)
    assert found is not None
    versions: set[str] = set()
    for entry in re.findall(r"py3(\{[\d,]+\}|\d+)", found.group(1)):
        minors = entry.strip("{}").split(",")
        versions.update(f"3.{minor}" for minor in minors)
    return versions


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_classifiers_name_exactly_the_pythons_tox_runs() -> None:
    classifiers = pyproject()["project"]["classifiers"]
    claimed = {
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert claimed == tox_pythons() == {"3.11", "3.13", "3.14"}


def test_requires_python_starts_at_the_oldest_python_run() -> None:
    oldest = min(tox_pythons(), key=lambda v: tuple(map(int, v.split("."))))
    assert pyproject()["project"]["requires-python"] == f">={oldest}"


def test_ci_makes_every_python_tox_runs_but_its_own() -> None:
    script = (ROOT / ".ci" / "pythons").read_text(encoding="utf-8")
    found = re.search(r"^pythons=\((.*)\)$", script, re.M)
    assert found is not None
    made = {entry.split(":")[1] for entry in found.group(1).split()}
    assert made == tox_pythons() - {HOST}
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pythons="$(.ci/pythons)"' in run


@pytest.mark.slow  # tox starts, reads its configuration and our toxfile.py
@pytest.mark.parametrize(("ci", "skips"), [("", "True"), ("1", "False")])
def test_a_missing_python_is_skipped_only_outside_ci(ci: str, skips: str) -> None:
    env = {**os.environ, "CI": ci}
    ask = ["config", "-e", "py313,py314", "-k", "skip_missing_interpreters"]
    shown = subprocess.run(
        [sys.executable, "-m", "tox", *ask],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert re.findall(r"skip_missing_interpreters = (\w+)", shown) == [skips] * 2
