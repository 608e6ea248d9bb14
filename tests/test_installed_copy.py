"""A bare ``pytest`` in this tree beside a non-editable install of batchfsm.

pytest loads the ``pytest11`` entry point (``batchfsm.emulator.pytest_plugin``)
before it collects, which imports batchfsm; beside a wheel installed in
site-packages that was the installed copy, and the doctests of ``batchfsm/``
then failed to collect ("import file mismatch"). ``pythonpath = ["."]`` in
pyproject.toml puts this tree first before pytest loads any plugin, as
``python -m pytest`` does.

The installed copy is what pip leaves in site-packages for a wheel: the package's
files and a dist-info naming pyproject.toml's entry points, first on the path.
"""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _install_copy(site: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    groups = {
        "console_scripts": project["project"]["scripts"],
        **project["project"]["entry-points"],
    }
    shutil.copytree(
        ROOT / "batchfsm",
        site / "batchfsm",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    info = site / "batchfsm-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: batchfsm\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n"
            for group, points in groups.items()
        ),
        encoding="utf-8",
    )


def _collect(site: Path, *python_options: str) -> tuple[list[str], str]:
    """The test ids ``pytest --co`` finds from the root, and its whole output."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTEST_ADDOPTS", "PYTEST_PLUGINS"}
        and not name.startswith("PYTEST_DISABLE")
    }
    env["PYTHONPATH"] = str(site)
    pytest = ["-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "--trace-config"]
    done = subprocess.run(
        [sys.executable, *python_options, *pytest],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]  # the errors and their summary
    return [line for line in done.stdout.splitlines() if "::" in line], output


def test_a_bare_pytest_collects_what_python_m_pytest_does(tmp_path):
    _install_copy(tmp_path)
    # -P: nothing before site-packages but PYTHONPATH, as for the `pytest` command
    bare, output = _collect(tmp_path, "-P")
    python_m, _ = _collect(tmp_path)
    assert bare == python_m
    assert any(test.startswith("batchfsm/_cli.py::") for test in bare)
    # The plugin is registered once, from this tree.
    plugin = ROOT / "batchfsm" / "emulator" / "pytest_plugin.py"
    registered = [
        line
        for line in output.splitlines()
        if line.startswith("PLUGIN registered: <module 'batchfsm.")
    ]
    module = "batchfsm.emulator.pytest_plugin"
    assert registered == [f"PLUGIN registered: <module '{module}' from '{plugin}'>"]
