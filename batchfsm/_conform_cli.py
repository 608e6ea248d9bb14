"""``batchfsm conform``: judge a Batch API server from the command line.

Exit status: 0 when no check failed and at least one passed; 1 when a check
failed; 2 when nothing could be judged (a server that is not a Batch API, or
every check skipped), for bad arguments, a server that cannot be reached and
a missing extra.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import textwrap
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._extras import missing_extra
from ._reports import FORMATS, Progress
from .conformance import CHECKS

if TYPE_CHECKING:
    import httpx2

    from .conformance import Report
    from .emulator._receiver import WebhookReceiver

__all__ = ["add_parser", "conform"]


def _checks_help() -> str:
    """One entry per check: id, level, and what it demands (with its source)."""
    lines = ["checks (id [level]: what it demands):"]
    for declared in CHECKS.values():
        lines += textwrap.wrap(
            f"{declared.id} [{declared.level}]: {declared.description}",
            width=79,
            initial_indent="  ",
            subsequent_indent="      ",
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _run_options(add: Callable[..., Any]) -> None:
    """``conform``'s options for how the checks run."""
    add(
        "--strict",
        action="store_true",
        help="a failed 'observed' check (behaviour only observed on the live API, "
        "not documented) fails the run instead of warning",
    )
    add(
        "--time-scale",
        type=float,
        default=1.0,
        help="real seconds per second of waiting, below 1 for servers that run "
        "fast clocks (default: %(default)s)",
    )
    add(
        "--timeout",
        type=float,
        default=3_600.0,
        help="seconds to poll one batch before its check fails (default: %(default)s)",
    )
    add(
        "--endpoint",
        default="/v1/chat/completions",
        help="the batch endpoint the input files' requests use (default: %(default)s)",
    )
    add(
        "--webhook-secret",
        metavar="whsec_...",
        help="start a webhook receiver and check that batch events reach it signed "
        "with this secret (set the server to deliver there: serve --webhook-url "
        "URL --webhook-secret ...; the built-in emulator is set by itself); "
        "without it the webhook checks skip, except against the built-in "
        "emulator (judged at a receiver on a free port, with a secret of its own)",
    )
    add(
        "--webhook-listen",
        default="127.0.0.1:8765",
        metavar="HOST:PORT",
        help="where the receiver listens (default: %(default)s); it receives at "
        "http://HOST:PORT/webhooks",
    )
    add(
        "--model",
        default="gpt-4o-mini",
        help="the model the input files' requests name; the server must serve it "
        "on --endpoint (default: %(default)s)",
    )


def _receiver(args: argparse.Namespace) -> WebhookReceiver | None:
    """The webhook receiver to judge webhooks at, or a one-line ValueError.

    The one ``--webhook-secret`` asks for; for the built-in emulator without
    one, a receiver on a free loopback port with a secret of its own.
    """
    from .emulator._receiver import WebhookReceiver
    from .emulator._webhooks import check_secret

    if args.webhook_secret is None:
        if args.base_url is not None:
            return None
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        return WebhookReceiver(secret, "127.0.0.1", 0)
    secret = check_secret(args.webhook_secret, "--webhook-secret")
    host, _, port = args.webhook_listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
        raise ValueError(
            f"--webhook-listen must be HOST:PORT, got {args.webhook_listen!r}"
        )
    try:
        return WebhookReceiver(secret, host.strip("[]"), int(port))
    except OSError as exc:
        raise ValueError(
            f"--webhook-listen {args.webhook_listen}: {exc.strerror or exc}"
        ) from None


def add_parser(commands: Any) -> None:
    """Add the ``conform`` subcommand to the ``batchfsm`` parser."""
    conform = commands.add_parser(
        "conform",
        help="judge a Batch API server, check by check",
        description=textwrap.fill(
            "Drive a Batch API server (files and batches under /v1) and judge every "
            "answer against the lifecycle. Without --base-url, the built-in emulator "
            "is run in-process on a virtual clock. Exit 0 when no check failed and "
            "one passed, 1 when a check failed, 2 when nothing could be judged "
            "(a server that is not a Batch API, every check skipped), for bad "
            "arguments or an unreachable server. Needs the server extra: "
            "pip install 'batchfsm[server]'.",
            width=79,
        ),
        epilog=_checks_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = conform.add_argument
    add(
        "--base-url",
        help="the server's root, e.g. http://127.0.0.1:8000 (a trailing /v1 is "
        "fine; default: the built-in emulator)",
    )
    add(
        "--api-key",
        help="sent as 'Authorization: Bearer KEY' (default: $BATCHFSM_API_KEY)",
    )
    add(
        "--other-api-key",
        metavar="KEY",
        help="a second key, of another project: the projects.* checks judge "
        "that the first key's files and batches are invisible to it, and "
        "webhooks.own_project (with --webhook-secret) that its batch events never "
        "reach the receiver (skipped without; the built-in emulator runs them "
        "with two keys of its own)",
    )
    add(
        "--format",
        choices=FORMATS,
        default="text",
        help="the report's format: a table, JSON, or JUnit XML for CI (one test "
        "case per check; default: %(default)s)",
    )
    add("--json", action="store_true", help="the same as --format json")
    add(
        "--output",
        metavar="FILE",
        help="write the report to FILE instead of stdout",
    )
    add(
        "--only",
        action="append",
        metavar="ID",
        choices=list(CHECKS),
        help="run only this check, and the checks it needs first (repeatable); "
        f"one of: {', '.join(CHECKS)}",
    )
    _run_options(add)


#: The built-in emulator's two keys, each of its own project.
_BUILT_IN_KEYS = {"sk-conform": "proj_conform", "sk-conform-other": "proj_other"}


def _built_in(
    receiver: WebhookReceiver | None,
) -> tuple[httpx2.Client, httpx2.Client, Callable[[float], None]]:
    """Clients of two keys, of two projects, on one in-process emulator.

    It delivers its batches' events to ``receiver``, if there is one.
    """
    import httpx2

    from .emulator import (
        Emulator,
        EmulatorTransport,
        VirtualClock,
        WebhookEndpoint,
        create_app,
    )

    clock = VirtualClock()
    hooks = (  # the first key's project's endpoint, as the live API's are
        [WebhookEndpoint(receiver.url, receiver.secret, project="proj_conform")]
        if receiver is not None and receiver.secret is not None
        else None
    )
    transport = EmulatorTransport(
        create_app(Emulator(clock=clock, webhooks=hooks), api_keys=_BUILT_IN_KEYS)
    )
    first, other = (
        httpx2.Client(
            transport=transport,
            base_url="http://batchfsm.emulator",
            headers={"Authorization": f"Bearer {key}"},
        )
        for key in _BUILT_IN_KEYS
    )
    return first, other, clock.advance


def _client(
    args: argparse.Namespace, receiver: WebhookReceiver | None = None
) -> tuple[httpx2.Client, httpx2.Client | None, Callable[[float], None], str]:
    """The client, the other key's (or None), how to wait, and what is judged."""
    import httpx2

    if args.base_url is None:
        http, second, advance = _built_in(receiver)
        where = "the built-in emulator (in-process, virtual clock)"
        return http, second, advance, where
    root = args.base_url.rstrip("/").removesuffix("/v1")
    key = args.api_key or os.environ.get("BATCHFSM_API_KEY")
    scale = args.time_scale

    def wait(seconds: float) -> None:
        time.sleep(seconds * scale)

    def client(key: str | None) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx2.Client(base_url=root, headers=headers, timeout=60)

    other = client(args.other_api_key) if args.other_api_key else None
    return client(key), other, wait, root


def _write(
    args: argparse.Namespace, report: Report, seconds: float, target: str
) -> int:
    """Write the report where ``--output`` says, in ``--format``; 2 if it cannot."""
    from ._reports import render

    format = "json" if args.json else args.format
    text = render(report, format, seconds=seconds, target=target, text=summary)
    if args.output is None:
        print(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    except OSError as exc:
        print(f"batchfsm conform: --output {args.output}: {exc}", file=sys.stderr)
        return 2
    return 0


def conform(args: argparse.Namespace) -> int:
    """Run ``batchfsm conform``; returns the exit status."""
    if args.time_scale <= 0 or args.timeout <= 0:
        print(
            "batchfsm conform: --time-scale and --timeout must be positive",
            file=sys.stderr,
        )
        return 2
    try:
        import httpx2  # noqa: F401 - the extra is there (the run imports it)

        from .conformance import run  # noqa: F401
    except ImportError as exc:
        print(f"batchfsm conform: {missing_extra(exc, 'server')}", file=sys.stderr)
        return 2
    try:
        receiver = _receiver(args)
    except ImportError as exc:  # the receiver needs the server extra too
        print(f"batchfsm conform: {missing_extra(exc, 'server')}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"batchfsm conform: {exc}", file=sys.stderr)
        return 2
    try:
        return _conform(args, receiver)
    finally:
        if receiver is not None:
            receiver.close()


def _conform(args: argparse.Namespace, receiver: WebhookReceiver | None) -> int:
    import httpx2

    from .conformance import run

    try:
        http, other, wait, target = _client(args, receiver)
    except ImportError as exc:  # the built-in emulator needs all of the server extra
        print(f"batchfsm conform: {missing_extra(exc, 'server')}", file=sys.stderr)
        return 2
    except httpx2.InvalidURL as exc:
        print(f"batchfsm conform: --base-url {args.base_url!r}: {exc}", file=sys.stderr)
        return 2
    print(f"batchfsm conform: judging {target}", file=sys.stderr, flush=True)
    if receiver is not None and args.webhook_secret is not None:
        print(
            f"batchfsm conform: webhook receiver at {receiver.url}",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    shown = Progress(sys.stderr)
    try:
        with http:
            http.get("/v1/batches", params={"limit": 1})  # reachable at all?
            report = run(
                http,
                wait=wait,
                only=set(args.only) if args.only else None,
                strict=args.strict,
                endpoint=args.endpoint,
                model=args.model,
                timeout=args.timeout,
                progress=shown.ended,
                other_http=other,
                webhooks=receiver,
                waiting=shown.waiting,
            )
    except httpx2.TransportError as exc:
        print(f"batchfsm conform: cannot reach {target}: {exc}", file=sys.stderr)
        return 2
    finally:
        shown.close()
        if other is not None:
            other.close()
    seconds = time.monotonic() - started
    if report.not_judged is not None:  # one line, not a page per check
        print(f"batchfsm conform: {target}: {report.not_judged}", file=sys.stderr)
        if args.json or args.format != "text" or args.output is not None:
            _write(args, report, seconds, target)  # a CI report says so too
        return 2
    if _write(args, report, seconds, target):
        return 2
    return 0 if report.passed else 1 if report.judged else 2


def summary(report: Report) -> str:
    """The report as a table; every fail, warning and skip with its reason.

    Example:
        >>> from batchfsm.conformance import Report, Result
        >>> print(summary(Report((Result("trace.legal", "skip", "nothing"),))))
        check        result  what it demands
        ...
        trace.legal  skip    All Batch objects answered, in order, pass check_trace()
                       > nothing
        0 passed, 0 failed, 0 warned, 1 skipped: nothing was judged
    """
    width = max(len(r.id) for r in report.results)
    lines = [f"{report.refused}"] if report.refused else []
    lines += [f"5xx, never right: {call}" for call in report.server_errors]
    lines += [f"{'check':<{width}}  result  what it demands", "-" * (width + 60)]
    for r in report.results:
        lines.append(f"{r.id:<{width}}  {r.outcome:<6}  {r.description}")
        if r.outcome == "fail" and r.level != CHECKS[r.id].level:
            lines.append(f"{'':<{width}}    > (its required part failed)")
        if r.outcome != "pass":
            lines.extend(
                f"{'':<{width}}    > {line}" for line in r.evidence.splitlines()
            )
    lines.extend(f"note: {note}" for note in report.notes)
    counts = (
        f"{report.count('pass')} passed, {report.count('fail')} failed, "
        f"{report.count('warn')} warned, {report.count('skip')} skipped"
    )
    if not report.count("pass"):
        counts += ": nothing was judged"
    lines.append(counts)
    return "\n".join(lines)
