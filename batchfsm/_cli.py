"""The ``batchfsm`` command.

``batchfsm check FILE|-`` reads recorded Batch objects (JSON Lines, one JSON
array, or list-endpoint pages) and reports every problem with its batch id and
index; it exits 1 if there is any, 2 if the input cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ._convert import from_dict
from ._errors import SchemaError

__all__ = ["main"]


class _InputError(Exception):
    """The input cannot be read as recorded Batch objects."""


def _documents(text: str) -> Iterator[Any]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            documents = json.loads(text)
        except ValueError as exc:
            raise _InputError(f"not valid JSON: {exc}") from None
        yield from documents
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as exc:
            raise _InputError(f"line {number}: not valid JSON: {exc}") from None
        # A page of GET /v1/batches holds its batches under "data".
        if isinstance(document, dict) and document.get("object") == "list":
            yield from document.get("data") or []
        else:
            yield document


def _check(source: TextIO, out: TextIO) -> int:
    problems = 0
    count = 0
    for index, document in enumerate(_documents(source.read())):
        count += 1
        batch_id = document.get("id") if isinstance(document, dict) else None
        try:
            from_dict(document)
        except SchemaError as exc:
            for path, message in exc.errors:
                problems += 1
                print(
                    f"#{index} {batch_id or '?'}: schema @ {path or '<document>'}: "
                    f"{message}",
                    file=out,
                )
    print(
        f"{count} snapshot(s), {problems} problem(s)",
        file=out,
    )
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``batchfsm`` command line; returns the exit status.

    Example:
        >>> main(["--version"])  # doctest: +ELLIPSIS
        batchfsm ...
        0
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="batchfsm",
        description="The OpenAI-style Batch lifecycle: check recorded batches.",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="check recorded Batch objects",
        description=(
            "Check recorded Batch objects: JSON Lines (one Batch or one list page "
            "per line) or one JSON array. Exit 1 on any problem."
        ),
    )
    check.add_argument("file", help="the recording, or - for standard input")
    args = parser.parse_args(argv)
    if args.version:
        print(f"batchfsm {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.file == "-":
            return _check(sys.stdin, sys.stdout)
        with open(args.file, encoding="utf-8") as source:
            return _check(source, sys.stdout)
    except (OSError, UnicodeDecodeError, _InputError) as exc:
        print(f"batchfsm check: {args.file}: {exc}", file=sys.stderr)
        return 2
