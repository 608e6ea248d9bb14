"""The ``batchfsm`` command.

- ``batchfsm check FILE|-`` judges recorded Batch objects (JSON Lines of Batch
  objects or list pages, or one JSON array) with :func:`batchfsm.check_trace`
  and prints each violation with its index, batch id and rule; exit 1 on any,
  2 when the input cannot be read.
- ``batchfsm diagram [--format mermaid|dot|svg]`` prints the lifecycle diagram.
- ``batchfsm serve [--host] [--port] [--speed] [--api-key]`` serves the emulator.
- ``batchfsm conform [--base-url URL] ...`` judges a Batch API server (the
  built-in emulator, in-process, when no URL is given); exit 0 only if no
  check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ._diagram import FORMATS, render
from ._invariants import check_trace

__all__ = ["main"]


class _InputError(Exception):
    """The input cannot be read as recorded Batch objects."""


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _InputError(f"{where}not valid JSON: {exc}") from None
    except RecursionError:
        raise _InputError(f"{where}not valid JSON: nested too deeply") from None


def _batches(document: Any, where: str) -> Iterator[Any]:
    # A page of GET /v1/batches holds its batches under "data".
    if isinstance(document, dict) and document.get("object") == "list":
        data = document.get("data")
        if not isinstance(data, list):
            raise _InputError(f"{where}a list page without a data array")
        yield from data
    else:
        yield document


def _documents(text: str) -> Iterator[Any]:
    try:  # one JSON document: an array, a list page, or a single Batch
        whole = json.loads(text)
    except (ValueError, RecursionError):
        whole = None
    if isinstance(whole, list):
        for item in whole:
            yield from _batches(item, "")
        return
    if isinstance(whole, dict):
        yield from _batches(whole, "")
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            where = f"line {number}: "
            yield from _batches(_parse(line, where), where)


def _check(source: TextIO, out: TextIO) -> int:
    documents = list(_documents(source.read()))
    violations = check_trace(documents)
    for v in violations:
        print(
            f"#{v.index} {v.batch_id or '?'} {v.rule}"
            f"{' @ ' + v.path if v.path else ''}: {v.message}",
            file=out,
        )
    ids = {repr(d.get("id")) for d in documents if isinstance(d, dict)}
    print(
        f"{len(documents)} snapshot(s) of {len(ids)} batch(es): "
        f"{len(violations) or 'no'} violation(s)",
        file=out,
    )
    return 1 if violations else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchfsm",
        description="The OpenAI-style Batch lifecycle, exact and typed.",
    )
    parser.add_argument("--version", action="store_true", help="print the version")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="judge recorded Batch objects against the lifecycle",
        description=(
            "Judge recorded Batch objects: JSON Lines (one Batch object or one "
            "GET /v1/batches page per line) or one JSON array. Snapshots of many "
            "batches may be interleaved. Exit 1 on any violation, 2 if the input "
            "cannot be read."
        ),
    )
    check.add_argument("file", help="the recording, or - for standard input")
    diagram = commands.add_parser(
        "diagram",
        help="print the lifecycle diagram",
        description="Print the lifecycle diagram, drawn from the transition table.",
    )
    diagram.add_argument("--format", choices=sorted(FORMATS), default="mermaid")
    conform = commands.add_parser(
        "conform",
        help="judge a Batch API server, check by check",
        description=(
            "Drive a Batch API server (files and batches under /v1) and judge every "
            "answer against the lifecycle. Without --base-url, the built-in emulator "
            "is run in-process on a virtual clock. Exit 0 only if no check fails."
        ),
    )
    conform.add_argument(
        "--base-url", help="the server's root, e.g. http://127.0.0.1:8000"
    )
    conform.add_argument(
        "--api-key",
        default=os.environ.get("BATCHFSM_API_KEY"),
        help="sent as 'Authorization: Bearer KEY' (default: $BATCHFSM_API_KEY)",
    )
    conform.add_argument("--json", action="store_true", help="print the report as JSON")
    conform.add_argument(
        "--only", action="append", metavar="ID", help="run only this check (repeatable)"
    )
    conform.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per second of waiting (below 1 for fast servers)",
    )
    conform.add_argument(
        "--timeout",
        type=float,
        default=3_600.0,
        help="seconds to poll one batch before its check fails (default 3600)",
    )
    conform.add_argument("--endpoint", default="/v1/chat/completions")
    conform.add_argument("--model", default="gpt-4o-mini")
    serve = commands.add_parser(
        "serve",
        help="serve the Batch API emulator over HTTP",
        description=(
            "Serve the emulator's Batch API (files and batches under /v1) for the "
            "official openai client: base_url=http://HOST:PORT/v1. Needs the "
            "server extra: pip install 'batchfsm[server]'."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="default: 8000")
    serve.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="how many times faster than real time batches progress (default 1)",
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("BATCHFSM_API_KEY"),
        help="demand 'Authorization: Bearer KEY' (default: $BATCHFSM_API_KEY)",
    )
    return parser


_MARKS = {"pass": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}


def _conform(args: argparse.Namespace) -> int:
    import time

    import httpx2

    from .conformance import CHECKS, Result, emulator_client, run

    unknown = set(args.only or ()) - set(CHECKS)
    if unknown:
        print(
            f"batchfsm conform: unknown check id(s) {', '.join(sorted(unknown))}; "
            f"ids: {', '.join(CHECKS)}",
            file=sys.stderr,
        )
        return 2
    if args.time_scale <= 0 or args.timeout <= 0:
        print(
            "batchfsm conform: --time-scale and --timeout must be positive",
            file=sys.stderr,
        )
        return 2
    if args.base_url is None:
        http, wait = emulator_client()
        target = "the built-in emulator (in-process, virtual clock)"
    else:
        root = args.base_url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        http = httpx2.Client(base_url=root, headers=headers, timeout=60)
        scale = args.time_scale

        def wait(seconds: float) -> None:
            time.sleep(seconds * scale)

        target = root

    def progress(result: Result) -> None:
        print(f"  {_MARKS[result.outcome]} {result.id}", file=sys.stderr, flush=True)

    print(f"batchfsm conform: judging {target}", file=sys.stderr, flush=True)
    try:
        with http:
            http.get("/v1/batches", params={"limit": 1})  # reachable at all?
            report = run(
                http,
                wait=wait,
                only=set(args.only) if args.only else None,
                endpoint=args.endpoint,
                model=args.model,
                timeout=args.timeout,
                progress=progress,
            )
    except httpx2.TransportError as exc:
        print(f"batchfsm conform: cannot reach {target}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(_summary(report))
    return 0 if report.passed else 1


def _summary(report: Any) -> str:
    width = max(len(r.id) for r in report.results)
    lines = [f"{'check':<{width}}  result  what it demands", "-" * (width + 60)]
    for r in report.results:
        lines.append(f"{r.id:<{width}}  {r.outcome:<6}  {r.description}")
        if r.outcome == "fail":
            lines.extend(
                f"{'':<{width}}    > {line}" for line in r.evidence.splitlines()
            )
    lines.extend(f"note: {note}" for note in report.notes)
    counts = {
        o: sum(r.outcome == o for r in report.results) for o in ("pass", "fail", "skip")
    }
    lines.append(
        f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
    )
    return "\n".join(lines)


def _serve(host: str, port: int, speed: float, api_key: str | None) -> int:
    try:
        import uvicorn

        from .emulator import Emulator, SystemClock, create_app
    except ImportError as exc:
        print(
            f"batchfsm serve: {exc.name} is missing; "
            "install the server extra: pip install 'batchfsm[server]'",
            file=sys.stderr,
        )
        return 2
    if speed <= 0:
        print("batchfsm serve: --speed must be positive", file=sys.stderr)
        return 2
    app = create_app(Emulator(clock=SystemClock(speed)), api_key=api_key)
    print(f"batchfsm emulator: base_url=http://{host}:{port}/v1", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``batchfsm`` command line; returns the exit status.

    Example:
        >>> main(["diagram"])  # doctest: +ELLIPSIS
        stateDiagram-v2
        ...
        0
    """
    from . import __version__

    args = _parser().parse_args(argv)
    if args.version:
        print(f"batchfsm {__version__}")
        return 0
    if args.command == "diagram":
        sys.stdout.write(render(args.format))
        return 0
    if args.command == "serve":
        return _serve(args.host, args.port, args.speed, args.api_key)
    if args.command == "conform":
        return _conform(args)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        if args.file == "-":
            return _check(sys.stdin, sys.stdout)
        with open(args.file, encoding="utf-8") as source:
            return _check(source, sys.stdout)
    except (OSError, UnicodeDecodeError, _InputError) as exc:
        print(f"batchfsm check: {args.file}: {exc}", file=sys.stderr)
        return 2
