"""The README's two first commands: a venv step each, and CI runs the test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    return [
        line
        for line in block.group(1).splitlines()
        if line and not line.startswith("#")
    ]


def test_there_are_two_commands_each_in_a_venv():
    commands = readme_commands()
    assert len(commands) == 2
    for command in commands:
        # A Python that refuses system-wide installs (PEP 668) takes them in a venv.
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
        assert "python3 -m pip" not in command


def test_ci_runs_the_readme_test_command():
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert run[-1] == readme_commands()[1]
    assert readme_commands()[1].endswith("python -m tox")


def test_the_docs_do_not_promise_an_install_from_the_package_index():
    pages = [*sorted((ROOT / "docs").glob("*.rst")), ROOT / "README.md"]
    promise = re.compile(r"pip install '?batchfsm\b")
    for page in pages:
        text = page.read_text(encoding="utf-8")
        kept = [line for line in text.splitlines() if promise.search(line)]
        # Only the sentence that translates the messages' hint may name it.
        assert all("Where a message of batchfsm says" in line for line in kept), kept


def test_tox_runs_the_release_check():
    tox = (ROOT / "tox.ini").read_text(encoding="utf-8")
    env_list = re.search(r"^env_list = (.*)$", tox, re.M)
    assert env_list is not None
    assert "release" in [e.strip() for e in env_list.group(1).split(",")]
    assert "python .ci/release_check.py" in tox
