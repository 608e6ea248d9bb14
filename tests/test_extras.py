"""Whatever an install lacks, the user reads one line naming what to install."""

import subprocess
import sys

import pytest

from tests.blocking import batchfsm_without, without

HINT = "install it with: pip install 'batchfsm[server]'"


def run(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize(
    ("command", "blocked", "named"),
    [
        ("conform", ("starlette",), "starlette"),
        ("conform", ("anyio",), "anyio"),
        ("conform", ("python_multipart", "multipart"), "python-multipart"),
        ("serve", ("python_multipart", "multipart"), "python-multipart"),
    ],
)
def test_a_command_says_one_line_and_exits_2(command, blocked, named):
    options = ["--port", "0"] if command == "serve" else []  # never left running
    result = run(batchfsm_without(*blocked), command, *options)
    assert result.returncode == 2
    assert result.stderr == f"batchfsm {command}: {named} is not installed; {HINT}\n"


@pytest.mark.parametrize(
    ("blocked", "named"),
    [(("anyio",), "anyio"), (("python_multipart", "multipart"), "python-multipart")],
)
def test_create_app_names_the_extra(blocked, named):
    code = without(*blocked) + (
        "from batchfsm.emulator import create_app\n"  # the name is imported on use
    )
    result = run([sys.executable, "-c", code])
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"ModuleNotFoundError: {named} is not installed; {HINT}"
