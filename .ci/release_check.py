"""The release check: build, ``twine check``, install the wheel in a clean venv, use it.

Run by ``tox -e release`` (``python .ci/release_check.py WORKDIR``):

1. ``python -m build`` makes the sdist and the wheel of this checkout;
2. ``twine check --strict`` judges their metadata (the README renders);
3. a new virtual environment, with nothing but the wheel (``[server,openai]``)
   and pytest installed from the package index;
4. there, ``batchfsm conform`` must judge the built-in emulator and pass, and
   the docs' recipes (``docs/examples/test_recipe_*.py``, copied beside
   nothing else) must pass as a user's tests: the fixtures come from the
   installed wheel, not from this tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str | Path, cwd: Path | None = None) -> str:
    """Run ``command``; its output, or exit with it shown if it fails."""
    shown = " ".join(str(part) for part in command)
    print(f"release check: {shown}", flush=True)
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"release check failed: {shown}\n{done.stdout}{done.stderr}")
    return done.stdout


def main(work: Path) -> None:
    """Build into ``work``, install in a venv there and smoke-test."""
    shutil.rmtree(work, ignore_errors=True)
    dist, env, user = work / "dist", work / "venv", work / "user"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    built = sorted(dist.iterdir())
    wheels = [path for path in built if path.suffix == ".whl"]
    if len(wheels) != 1 or len(built) != 2:
        sys.exit(f"release check failed: expected one sdist and one wheel, got {built}")
    run(sys.executable, "-m", "twine", "check", "--strict", *built)
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    run(python, "-m", "pip", "install", "-q", f"{wheels[0]}[server,openai]", "pytest")
    user.mkdir()
    out = run(python, "-m", "batchfsm", "conform", cwd=user)
    print(out.strip().splitlines()[-1], flush=True)
    for recipe in sorted((ROOT / "docs" / "examples").glob("test_recipe_*.py")):
        shutil.copy(recipe, user)
    # A user's own config: without one pytest would find this tree's pyproject.toml
    # above `work` (under .tox), whose `pythonpath` puts the tree before the wheel.
    (user / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\n", encoding="utf-8"
    )
    out = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=user)
    print(out.strip().splitlines()[-1], flush=True)
    _plugin_is_the_wheels(python, env, user)


def _plugin_is_the_wheels(python: Path, env: Path, user: Path) -> None:
    """Exit unless pytest took batchfsm's plugin from ``env``, not from this tree."""
    trace = ("--co", "-q", "-p", "no:cacheprovider", "--trace-config")
    out = run(python, "-m", "pytest", *trace, cwd=user)
    plugin = "PLUGIN registered: <module 'batchfsm.emulator.pytest_plugin' from "
    where = [line for line in out.splitlines() if line.startswith(plugin)]
    if len(where) != 1 or not where[0].startswith(f"{plugin}'{env}{os.sep}"):
        sys.exit(f"release check failed: batchfsm's plugin not from {env}: {where}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python .ci/release_check.py WORKDIR")
    main(Path(sys.argv[1]).resolve())
