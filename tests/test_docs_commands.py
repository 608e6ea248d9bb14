"""Every shell command the docs show with its output is run, and must print it.

A command is a ``$ `` line in an indented block of a docs page (or the README);
the lines under it, up to a blank line, are its output (stdout and stderr as a
terminal shows them; ``...`` stands for any lines, as in doctests). A command
shown without output (one that needs your server) is not run. ``batchfsm serve``
runs until stopped: the lines shown of its banner are compared, on a free port
instead of the one shown.
"""

import doctest
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.rst")), ROOT / "README.md"]
PROMPT = re.compile(r"^(\s*)\$ (.+)$")


def shown() -> list[tuple[str, str, str]]:
    """(where, command, output) of every command shown with its output."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = PROMPT.match(line)
            if not match:
                continue
            indent, output = match.group(1), []
            for after in lines[number + 1 :]:
                if not after.startswith(indent) or not after.strip():
                    break
                if PROMPT.match(after):
                    break
                output.append(after[len(indent) :])
            if output:
                where = f"{page.relative_to(ROOT)}:{number + 1}"
                found.append((where, match.group(2), "\n".join(output) + "\n"))
    return found


EXAMPLES = shown()


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == "batchfsm":
        return [sys.executable, "-m", "batchfsm", *words[1:]]
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    raise AssertionError(f"the docs show a command the tests cannot run: {command}")


def banner_of_serve(words: list[str], expected: str) -> tuple[str, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    shown_port = words[words.index("--port") + 1]
    words[words.index("--port") + 1] = port
    with subprocess.Popen(
        words, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as server:
        try:
            assert server.stdout is not None
            banner = "".join(
                server.stdout.readline() for _ in range(expected.count("\n"))
            )
        finally:
            server.terminate()
    return banner, expected.replace(f":{shown_port}/", f":{port}/")


def test_the_docs_show_commands_with_their_output():
    commands = {command for _, command, _ in EXAMPLES}
    assert "batchfsm check docs/examples/trace.jsonl" in commands
    assert "python -m batchfsm conform" in commands


@pytest.mark.parametrize(
    ("command", "expected"),
    [pytest.param(c, o, id=where) for where, c, o in EXAMPLES],
)
def test_a_command_in_the_docs_prints_what_the_docs_show(command, expected):
    words = argv(command)
    if words[3:4] == ["serve"]:
        got, expected = banner_of_serve(words, expected)
    else:
        result = subprocess.run(
            words, cwd=ROOT, capture_output=False, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False, timeout=600,
        )  # fmt: skip
        got = result.stdout
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS
    assert checker.check_output(expected, got, flags), (
        f"$ {command}\nshown:\n{expected}\nprinted:\n{got}"
    )
