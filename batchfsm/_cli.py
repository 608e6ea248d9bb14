"""The ``batchfsm`` command.

- ``batchfsm check FILE|-`` judges recorded Batch objects (JSON Lines of Batch
  objects or list pages, or one JSON array) with :func:`batchfsm.check_trace`
  and prints each violation with its index, batch id and rule; exit 1 on any
  or when the input holds no Batch object, 2 when it cannot be read.
- ``batchfsm diagram [--format mermaid|dot|svg]`` prints the lifecycle diagram.
- ``batchfsm serve [--host] [--port] [--speed] [--seed] [--api-key KEY[=PROJECT]]
  [--keys-file PATH] [--db URL] [--finish-on-retrieve]
  [--lease-seconds S] [--model NAME] [--any-model] [--embedding-dimensions N]
  [--enqueued-token-limit [MODEL=]N] [--store-threads N]
  [--upload-budget BYTES] [--max-storage BYTES] [--max-output-bytes BYTES]
  [--max-connections N] [--max-connections-per-address N] [--head-seconds S]
  [--request-seconds S] [--webhook-url [PROJECT=]URL --webhook-secret whsec_...]
  [--webhook-window S] [--admin]`` serves the emulator; with ``--db`` its batches and
  files live in SQLite or PostgreSQL (several processes may share
  PostgreSQL); ``--model`` (repeatable) and ``--any-model`` widen the model
  catalogue; ``--embedding-dimensions`` shortens the fake's embeddings
  when a request names no dimensions; ``--enqueued-token-limit``
  (repeatable) fails batches over a model's enqueued token limit, as the
  live API does; ``--store-threads`` and
  ``--upload-budget`` size the app's store threads and the bytes uploads in
  flight may hold together; ``--max-storage`` bounds the bytes of each
  project's stored files (an upload past it gets 413) and
  ``--max-output-bytes`` the result lines one batch may store (its requests
  past it fail); the last four bound connections (open at once, from one
  address, the deadlines for a request's head and for all of it).
  ``--api-key`` (repeatable) and ``--keys-file`` give the keys, each in a
  project (``KEY=PROJECT``; a plain ``KEY`` is in the default project).
  ``--webhook-url`` (repeatable; ``PROJECT=URL`` for one project's batches,
  ``*=URL`` for every project's) delivers each batch's event there, signed
  with ``--webhook-secret`` (one for all, or one per URL;
  ``$BATCHFSM_WEBHOOK_SECRET``).
  ``--admin`` adds the admin routes for tests (faults, the request log, the
  clock, reset).
- ``batchfsm conform [--base-url URL] ...`` judges a Batch API server (the
  built-in emulator, in-process, when no URL is given); see
  :mod:`batchfsm._conform_cli` for its exit status.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from . import _conform_cli
from ._diagram import FORMATS, render
from ._errors import BatchFSMError
from ._extras import missing_extra
from ._invariants import check_trace

if TYPE_CHECKING:
    from .emulator import Emulator, SQLStore
    from .emulator._protocol import Limits

__all__ = ["main"]

#: ``serve``'s defaults for the app's sizes (``create_app``'s ``store_threads``
#: and ``upload_bytes_in_flight``, which a test holds them to): as text, so
#: that the parser needs no server extra.
STORE_THREADS = "8"
UPLOAD_BUDGET = "1073872896"
#: ``serve``'s defaults for its bounds on connections (``Limits``', which a
#: test holds them to).
MAX_CONNECTIONS = "512"
MAX_CONNECTIONS_PER_ADDRESS = "64"
HEAD_SECONDS = "10"
REQUEST_SECONDS = "30"
#: The shortest ``--lease-seconds``: a heartbeat every third of a second.
#: Shorter, a process spends its time renewing it, and processes sharing a
#: database take each other's batches over at nearly every step.
MIN_LEASE_SECONDS = 1.0
#: The units ``--upload-budget`` takes (any case): decimal and binary.
BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


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


def _check(source: TextIO, out: TextIO, format: str = "text") -> int:
    documents = list(_documents(source.read().removeprefix("\ufeff")))
    if not documents and format == "text":
        print("no Batch object in the input: nothing to judge", file=out)
        return 1
    violations = check_trace(documents) if documents else []
    if format == "json":
        ids = {d.get("id") for d in documents if isinstance(d, dict)}
        report = {
            "snapshots": len(documents),
            "batches": len(ids),
            "passed": bool(documents) and not violations,
            "violations": [attrs.asdict(v) for v in violations],
        }
        print(json.dumps(report, indent=2), file=out)
        return 0 if report["passed"] else 1
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
            "batches may be interleaved. Exit 1 on any violation or when there is "
            "no Batch object, 2 if the input cannot be read."
        ),
    )
    check.add_argument("file", help="the recording, or - for standard input")
    check.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="the verdict as lines of text or one JSON object (default: %(default)s)",
    )
    diagram = commands.add_parser(
        "diagram",
        help="print the lifecycle diagram",
        description="Print the lifecycle diagram, drawn from the transition table.",
    )
    diagram.add_argument("--format", choices=sorted(FORMATS), default="mermaid")
    _conform_cli.add_parser(commands)
    serve = commands.add_parser(
        "serve",
        help="serve the Batch API emulator over HTTP",
        description=(
            "Serve the emulator's Batch API (files and batches under /v1) for the "
            "official openai client: base_url=http://HOST:PORT/v1. Needs the "
            "server extra: pip install 'batchfsm[server]'."
        ),
    )
    _serve_options(serve)
    _mode_options(serve)
    _model_options(serve)
    _capacity_options(serve)
    _connection_options(serve)
    _upstream_options(serve)
    _webhook_options(serve)
    return parser


def _serve_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s address, clock, ids, keys and database."""
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", default="8000", help="1..65535 (default: 8000)")
    serve.add_argument(
        "--speed",
        default="1",
        help="how many times faster than real time batches progress: a finite "
        "number above 0 (default 1)",
    )
    serve.add_argument(
        "--seed",
        default=None,
        help="an integer: ids reproducible from it (default: random ids)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY[=PROJECT]",
        help="demand 'Authorization: Bearer KEY': one or more printable ASCII "
        "characters without spaces; KEY=PROJECT puts the key's files and "
        "batches in their own project (letters, digits, '_', '-'), invisible "
        "to other projects' keys; repeatable (default: $BATCHFSM_API_KEY, "
        "several separated by spaces; without a key, listening beyond loopback "
        "is a warning)",
    )
    serve.add_argument(
        "--keys-file",
        default=None,
        metavar="PATH",
        help="more keys: one KEY=PROJECT (or KEY) a line; blank lines and "
        "lines starting with '#' are skipped",
    )
    serve.add_argument(
        "--db",
        default=None,
        help="keep batches and files in a database: an SQLite file (PATH or "
        "sqlite:///PATH) or postgresql://... (several serve processes may share "
        "one); default: in memory, lost when serve stops",
    )
    serve.add_argument(
        "--lease-seconds",
        default="30",
        help="with --db: each process renews a heartbeat every third of this, "
        "by the database's clock; one that dies or stalls has its batches taken "
        "over by the others this long after its last heartbeat (within a second if it "
        "ran on this machine and is gone): a finite number of at least "
        f"{MIN_LEASE_SECONDS:g} (default 30)",
    )


def _mode_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s fast lane and web view."""
    serve.add_argument(
        "--finish-on-retrieve",
        action="store_true",
        help="the fast lane, for test suites: the first retrieve after a create "
        "answers the batch finished (it passes every status, every stamp "
        "written), whatever --speed says",
    )
    serve.add_argument(
        "--no-ui",
        dest="ui",
        action="store_false",
        help="serve no web view (by default one is at /ui, behind the API key)",
    )


def _model_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s models and the fake's embeddings."""
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="accept this model name on every endpoint too (repeatable)",
    )
    serve.add_argument(
        "--any-model", action="store_true", help="accept every model name"
    )
    serve.add_argument(
        "--embedding-dimensions",
        default=None,
        metavar="N",
        help="an embedding's dimensions when its request names none (default: "
        "the model's size, as the live API answers; at most the model's size)",
    )


def _capacity_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s limits and sizes."""
    serve.add_argument(
        "--enqueued-token-limit",
        action="append",
        default=[],
        metavar="[MODEL=]N",
        help="fail a batch (token_limit_exceeded) when its model's enqueued "
        "batches would hold more than N prompt tokens: N for every model, "
        "MODEL=N for one (repeatable; default: no limit)",
    )
    serve.add_argument(
        "--store-threads",
        default=STORE_THREADS,
        metavar="N",
        help="at most N worker threads at once run the calls on a --db store, and "
        f"uploads; more wait their turn (a whole number, default {STORE_THREADS})",
    )
    serve.add_argument(
        "--upload-budget",
        default=UPLOAD_BUDGET,
        metavar="BYTES",
        help="the bytes all uploads in flight may hold together; another upload "
        "that would pass it gets 429, one alone always passes (bytes, or with "
        f"a unit: 400MB, 1GiB; default {UPLOAD_BUDGET}: two of the largest uploads)",
    )
    serve.add_argument(
        "--max-storage",
        default=None,
        metavar="BYTES",
        help="the bytes each project's stored files may hold together (all of "
        "them, without projects): an "
        "upload that would pass it gets 413 storage_limit_exceeded; result files "
        "count toward it but are never refused (bytes, or with a unit: 10GB; "
        "default: no limit)",
    )
    serve.add_argument(
        "--max-output-bytes",
        default=None,
        metavar="BYTES",
        help="the bytes of result lines one batch may store: the request whose "
        "answer would pass it, and every one after it, fails with the error line "
        "batch_output_limit_exceeded (bytes, or with a unit: 100MB; default: no "
        "limit)",
    )


def _upstream_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s gateway options: an upstream server answers the requests."""
    serve.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="[MODEL=]URL",
        help="send each request line to URL + the line's url (an OpenAI-compatible "
        "server: vLLM, SGLang, llama.cpp, Ollama, another batchfsm serve); "
        "MODEL=URL routes that model's lines (repeatable); a URL alone is the "
        "route of every other model and accepts every model name (default: the "
        "built-in fake answers)",
    )
    serve.add_argument(
        "--upstream-api-key",
        default=None,
        metavar="KEY",
        help="sent to the upstreams as 'Authorization: Bearer KEY' (default: "
        "$BATCHFSM_UPSTREAM_API_KEY; none if unset)",
    )
    serve.add_argument(
        "--upstream-concurrency",
        default="64",
        metavar="N",
        help="requests in flight at once per upstream (default 64)",
    )
    serve.add_argument(
        "--upstream-timeout",
        default="600",
        metavar="S",
        help="seconds one try of a request may take, its whole answer included "
        "(default 600)",
    )
    serve.add_argument(
        "--upstream-tries",
        default="5",
        metavar="N",
        help="tries in all of a request that meets a connection error, a timeout, "
        "408, 409, 429 or 5xx; waits honour Retry-After, else a jittered "
        "exponential backoff (default 5)",
    )
    serve.add_argument(
        "--upstream-rpm",
        default=None,
        metavar="N",
        help="requests per minute per upstream (default: no limit)",
    )
    serve.add_argument(
        "--upstream-tpm",
        default=None,
        metavar="N",
        help="prompt tokens per minute per upstream, estimated as the fake "
        "handler counts them (default: no limit)",
    )


def _upstream_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Emulator's keywords for ``--upstream``, or a one-line ValueError."""
    if not args.upstream:
        return {}
    from .emulator._upstream import DEFAULT_ROUTE, UpstreamHandler, parse_routes

    routes = parse_routes(args.upstream)
    key = args.upstream_api_key
    if key is None:
        key = os.environ.get("BATCHFSM_UPSTREAM_API_KEY") or None
    concurrency = _whole("--upstream-concurrency", args.upstream_concurrency)
    handler = UpstreamHandler(
        routes,
        api_key=key,
        concurrency=concurrency,
        timeout=_positive("--upstream-timeout", args.upstream_timeout),
        tries=_whole("--upstream-tries", args.upstream_tries),
        requests_per_minute=None
        if args.upstream_rpm is None
        else _whole("--upstream-rpm", args.upstream_rpm),
        tokens_per_minute=None
        if args.upstream_tpm is None
        else _whole("--upstream-tpm", args.upstream_tpm),
    )
    settings: dict[str, Any] = {
        "handler": handler,
        "concurrency": concurrency * len(set(routes.values())),
        "request_seconds": 0,  # the upstream sets the pace
        "extra_models": [model for model in routes if model != DEFAULT_ROUTE],
    }
    if DEFAULT_ROUTE in routes:
        settings["any_model"] = True  # the upstream says which models it serves
    return settings


def _webhook_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s webhook endpoints."""
    serve.add_argument(
        "--webhook-url",
        action="append",
        default=[],
        metavar="[PROJECT=]URL",
        help="POST each batch's event (batch.completed, batch.failed, "
        "batch.expired, batch.cancelled) to URL, signed as Standard Webhooks, "
        "at least once (repeatable); PROJECT=URL: the events of that project's "
        "batches only (as the live API's webhooks are set per project), *=URL: "
        "every project's; a plain URL is refused when --api-key puts keys in "
        "projects",
    )
    serve.add_argument(
        "--webhook-secret",
        action="append",
        default=[],
        metavar="whsec_...",
        help="the secret the events are signed with: one for every --webhook-url, "
        "or one per --webhook-url in the same order (default: "
        "$BATCHFSM_WEBHOOK_SECRET)",
    )
    serve.add_argument(
        "--webhook-window",
        default="259200",
        metavar="S",
        help="how long after its first attempt an event is retried (with "
        "jittered exponential backoff) before it is given up (default 259200: "
        "72 hours)",
    )


def _webhook_url(setting: str, projects: set[str]) -> tuple[str, str | None]:
    """``[PROJECT=]URL`` as (URL, project or None: every project's), or a ValueError.

    ``projects`` are those the keys are in: a project named must be one, and
    a plain URL is refused when they are other than the default project's,
    so that no endpoint is told another project's events unless ``*=``
    says so.
    """
    from .emulator._projects import DEFAULT_PROJECT, check_project

    if setting.startswith(("http://", "https://")) or "=" not in setting:
        if projects - {DEFAULT_PROJECT}:
            raise ValueError(
                f"--webhook-url {setting}: the API keys are in projects "
                f"({', '.join(sorted(projects))}): name the project whose events "
                "it gets, PROJECT=URL, or *=URL for every project's"
            )
        return setting, None
    project, _, url = setting.partition("=")
    if project == "*":
        return url, None
    check_project(project, f"--webhook-url {setting}: the project")
    if project not in projects:
        raise ValueError(f"--webhook-url {setting}: no API key is in project {project}")
    return url, project


def _webhooks(args: argparse.Namespace, keys: dict[str, str] | None) -> Any:
    """The ``Webhooks`` the options name (None if no URL), or a one-line ValueError.

    ``keys`` are the API keys (key to project; None: no key), for the
    project each URL is bound to.
    """
    from .emulator import WebhookEndpoint, Webhooks
    from .emulator._projects import DEFAULT_PROJECT

    projects = set(keys.values()) if keys else {DEFAULT_PROJECT}
    urls = [_webhook_url(url, projects) for url in args.webhook_url]
    secrets = args.webhook_secret
    window = _positive("--webhook-window", args.webhook_window)
    if not urls:
        if secrets:
            raise ValueError("--webhook-secret needs a --webhook-url to sign for")
        return None
    if not secrets:
        env = os.environ.get("BATCHFSM_WEBHOOK_SECRET")
        if env is None:
            raise ValueError(
                "--webhook-url needs a --webhook-secret whsec_... (or "
                "BATCHFSM_WEBHOOK_SECRET)"
            )
        secrets = [env]
    if len(secrets) == 1:
        secrets = secrets * len(urls)
    if len(secrets) != len(urls):
        raise ValueError(
            f"{len(urls)} --webhook-url and {len(secrets)} --webhook-secret: give "
            "one secret for all, or one per URL"
        )
    return Webhooks(
        [WebhookEndpoint(u, s, p) for (u, p), s in zip(urls, secrets, strict=True)],
        window_seconds=window,
    )


def _connection_options(serve: argparse.ArgumentParser) -> None:
    """``serve``'s bounds on connections (``Limits``)."""
    serve.add_argument(
        "--max-connections",
        default=MAX_CONNECTIONS,
        metavar="N",
        help="connections open at once; more are closed as they arrive "
        f"(default {MAX_CONNECTIONS})",
    )
    serve.add_argument(
        "--max-connections-per-address",
        default=None,
        metavar="N",
        help="connections open at once from one client address (an IPv6 "
        "client's /64), so that one client cannot take them all; more are closed "
        f"as they arrive (default {MAX_CONNECTIONS_PER_ADDRESS}, or "
        "--max-connections if that is less)",
    )
    serve.add_argument(
        "--admin",
        action="store_true",
        help="add the admin routes for tests (/_admin/: faults, the request log, "
        "the clock, reset, a batch failed or expired on command), behind "
        "--api-key as every route",
    )
    serve.add_argument(
        "--head-seconds",
        default=None,
        metavar="S",
        help="a request's line and headers must arrive within S seconds of the "
        "connection opening or of its previous answer, or it is closed "
        f"(default {HEAD_SECONDS}, or --request-seconds if that is less)",
    )
    serve.add_argument(
        "--request-seconds",
        default=REQUEST_SECONDS,
        metavar="S",
        help="the whole request (its body too) must arrive within S seconds of "
        "that, and each answer must be read within S seconds of its being ready "
        f"(default {REQUEST_SECONDS})",
    )


def _positive(option: str, text: str, at_most: float = math.inf) -> float:
    """``text`` as a finite number above 0, or a one-line ValueError naming it."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= at_most):
        limit = "" if at_most == math.inf else f" (at most {at_most:g})"
        raise ValueError(
            f"{option} must be a finite number above 0{limit}, got {text!r}"
        )
    return value


def _serve_settings(
    args: argparse.Namespace, max_speed: float
) -> tuple[int, float, int | None, float, dict[str, int]]:
    """The settings, or a one-line ValueError naming the option.

    The port, speed, seed, lease and enqueued token limits (model, or "*", to
    tokens). Every one is checked, ``--db`` or not: a setting that is wrong is
    refused even where it would not be used.
    """
    port_text, speed_text, seed_text = args.port, args.speed, args.seed
    if not (port_text.isascii() and port_text.isdigit()) or not (
        1 <= int(port_text) <= 65_535
    ):
        raise ValueError(f"--port must be an integer in 1..65535, got {port_text!r}")
    speed = _positive("--speed", speed_text, max_speed)
    lease = _positive("--lease-seconds", args.lease_seconds)
    if lease < MIN_LEASE_SECONDS:
        raise ValueError(
            f"--lease-seconds must be a finite number of at least "
            f"{MIN_LEASE_SECONDS:g}, got {args.lease_seconds!r}"
        )
    seed = None
    if seed_text is not None:
        try:
            seed = int(seed_text)
        except ValueError:
            raise ValueError(f"--seed must be an integer, got {seed_text!r}") from None
    from .emulator._enqueued import parse_limit

    limits = dict(map(parse_limit, args.enqueued_token_limit))  # the last one wins
    return int(port_text), speed, seed, lease, limits


def _whole(option: str, text: str, units: dict[str, int] | None = None) -> int:
    """``text`` as a whole number above 0 (with a unit of ``units``), or a ValueError.

    Example:
        >>> _whole("--upload-budget", "400MB", BYTE_UNITS), _whole("--n", "8")
        (400000000, 8)
        >>> _whole("--upload-budget", "1 GiB", BYTE_UNITS)
        1073741824
    """
    found = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", text)
    scale = None
    if found is not None:
        unit = found[2].lower()
        scale = 1 if not unit else (units or {}).get(unit)
    if found is None or scale is None or int(found[1]) == 0:
        kind = (
            "a whole number of bytes above 0, with or without a unit "
            "(B, kB, MB, GB, KiB, MiB, GiB)"
            if units
            else "a whole number above 0"
        )
        raise ValueError(f"{option} must be {kind}, got {text!r}")
    return int(found[1]) * scale


def _app_settings(args: argparse.Namespace) -> tuple[int, int]:
    """The store threads and the upload budget, or a one-line ValueError."""
    threads = _whole("--store-threads", args.store_threads)
    budget = _whole("--upload-budget", args.upload_budget, BYTE_UNITS)
    return threads, budget


def _storage_settings(args: argparse.Namespace) -> dict[str, int | None]:
    """The storage bounds, as the emulator takes them, or a one-line ValueError."""
    return {
        "max_storage_bytes": None
        if args.max_storage is None
        else _whole("--max-storage", args.max_storage, BYTE_UNITS),
        "max_output_bytes": None
        if args.max_output_bytes is None
        else _whole("--max-output-bytes", args.max_output_bytes, BYTE_UNITS),
        "embedding_dimensions": None
        if args.embedding_dimensions is None
        else _whole("--embedding-dimensions", args.embedding_dimensions),
    }


def _sized_fake_only(gateway: dict[str, Any], bounds: dict[str, Any]) -> dict[str, Any]:
    """``gateway``, refusing ``--embedding-dimensions`` with ``--upstream``."""
    if gateway and bounds["embedding_dimensions"] is not None:
        raise ValueError(
            "--embedding-dimensions sizes the fake's embeddings: with "
            "--upstream, the upstream answers"
        )
    return gateway


def _keys_file(path: str) -> list[tuple[str, str]]:
    """The settings of a keys file, each with where it stands, or a ValueError."""
    try:
        with open(path, encoding="utf-8") as lines:
            text = lines.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--keys-file {path}: cannot be read ({exc})") from None
    return [
        (line.strip(), f"--keys-file {path} line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]


def _api_keys(args: argparse.Namespace) -> dict[str, str] | None:
    """Key to project from ``--api-key`` and ``--keys-file``, else the environment.

    None: no key. A one-line ValueError naming the setting (never the key)
    if one is no key, names no project, or a key is bound to two projects.
    """
    from .emulator._projects import parse_key

    settings = [(key, "--api-key") for key in args.api_key or ()]
    if args.keys_file is not None:
        settings += _keys_file(args.keys_file)
    if not settings:
        value = os.environ.get("BATCHFSM_API_KEY")
        if value is None:
            return None
        # Empty: refused below as a key that is empty.
        settings = [(key, "BATCHFSM_API_KEY") for key in value.split() or [value]]
    keys: dict[str, str] = {}
    for setting, name in settings:
        key, project = parse_key(setting, name)
        if keys.setdefault(key, project) != project:
            raise ValueError(f"{name}: this key is bound to two projects")
    return keys


def _limits(args: argparse.Namespace) -> Limits:
    """``serve``'s bounds on connections, or a one-line ValueError."""
    from .emulator._protocol import Limits

    most = _whole("--max-connections", args.max_connections)
    request_seconds = _positive("--request-seconds", args.request_seconds)
    # A bound left to its default follows the one it must not pass: lowering
    # --max-connections (or --request-seconds) alone is never refused.
    per_address = args.max_connections_per_address
    head_seconds = args.head_seconds
    try:
        return Limits(
            max_connections=most,
            max_connections_per_address=min(int(MAX_CONNECTIONS_PER_ADDRESS), most)
            if per_address is None
            else _whole("--max-connections-per-address", per_address),
            head_seconds=min(float(HEAD_SECONDS), request_seconds)
            if head_seconds is None
            else _positive("--head-seconds", head_seconds),
            request_seconds=request_seconds,
        )
    except (TypeError, ValueError) as exc:  # named by field: by option here
        raise ValueError(_LIMIT_FIELD.sub(_as_option, str(exc))) from None


#: ``Limits``' fields that are ``serve`` options, as its errors name them.
_LIMIT_FIELD = re.compile(
    r"\b(max_connections_per_address|max_connections|head_seconds|request_seconds)\b"
)


def _as_option(field: re.Match[str]) -> str:
    return "--" + field[1].replace("_", "-")


def _banner(
    base_url: str,
    kept: str,
    limits: dict[str, int],
    bounds: dict[str, Any],
    ui: bool = False,
) -> None:
    """``serve``'s first lines: where it listens, what it keeps, its bounds."""
    print(f"batchfsm emulator: base_url={base_url}", flush=True)
    print(f"batchfsm emulator: {kept}", flush=True)
    if ui:
        view = base_url.removesuffix("/v1") + "/ui"
        print(f"batchfsm emulator: web view at {view}", flush=True)
    if limits:
        shown = ", ".join(f"{model} {n:,}" for model, n in sorted(limits.items()))
        print(f"batchfsm emulator: enqueued token limits: {shown}", flush=True)
    shown = ", ".join(
        f"{name} {bounds[key]:,} bytes"
        for name, key in (
            ("storage", "max_storage_bytes"),
            ("output per batch", "max_output_bytes"),
        )
        if bounds[key] is not None
    )
    if shown:
        print(f"batchfsm emulator: bounds: {shown}", flush=True)


def _banner_extras(admin: bool, gateway: dict[str, Any], webhooks: Any) -> None:
    """``serve``'s lines on what it adds: admin routes, upstreams, webhooks."""
    if admin:
        print("batchfsm emulator: admin routes on (/_admin/)", flush=True)
    if gateway:
        routes = gateway["handler"].routes
        shown = ", ".join(f"{model} -> {url}" for model, url in sorted(routes.items()))
        print(f"batchfsm emulator: upstream: {shown}", flush=True)
    if webhooks is not None:
        shown = ", ".join(
            f"{e.url} ({'every project' if e.project is None else e.project})"
            for e in webhooks.endpoints
        )
        print(f"batchfsm emulator: webhooks to {shown}", flush=True)


def _serve(args: argparse.Namespace) -> int:
    try:
        from .emulator import Emulator, SystemClock
        from .emulator._clock import MAX_SPEED
        from .emulator._server import ServeError, bind, serve
    except ImportError as exc:
        print(f"batchfsm serve: {missing_extra(exc, 'server')}", file=sys.stderr)
        return 2
    try:
        port, speed, seed, lease, limits = _serve_settings(args, MAX_SPEED)
        threads, budget = _app_settings(args)
        bounds = _storage_settings(args)
        api_keys, connections = _api_keys(args), _limits(args)
        gateway = _sized_fake_only(_upstream_settings(args), bounds)
        webhooks = _webhooks(args, api_keys)
        sock = bind(args.host, port)
    except (ValueError, ServeError) as exc:
        print(f"batchfsm serve: {exc}", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    models = {
        **gateway,
        "extra_models": [*args.model, *gateway.get("extra_models", ())],
        "any_model": args.any_model or gateway.get("any_model", False),
        "enqueued_token_limit": limits or None,
        "webhooks": webhooks,
        "finish_on_retrieve": args.finish_on_retrieve,
        **bounds,
    }
    if args.db is None:
        emulator = Emulator(clock=SystemClock(speed), seed=seed, **models)
        kept = "ephemeral: batches and files are lost when it stops (--db keeps them)"
        store = None
    else:
        try:
            store, emulator = _durable(args.db, lease, speed, seed, models)
        except (ValueError, BatchFSMError) as exc:
            sock.close()
            print(f"batchfsm serve: {exc}", file=sys.stderr)
            return 2
        kept = f"batches and files kept in {store.where}"
    _banner(f"http://{host}:{port}/v1", kept, limits, bounds, args.ui)
    _banner_extras(args.admin, gateway, webhooks)
    try:
        serve(
            emulator,
            sock,
            api_key=None,
            api_keys=api_keys,
            store_threads=threads,
            upload_budget=budget,
            limits=connections,
            admin=args.admin,
            ui=args.ui,
        )
    finally:
        sock.close()
        if store is not None:
            store.close()
    return 0


def _durable(
    db: str, lease: float, speed: float, seed: int | None, models: dict[str, Any]
) -> tuple[SQLStore, Emulator]:
    """The store ``--db`` names and an emulator on it, its clock anchored there."""
    from .emulator import AnchoredClock, Emulator, open_store

    store = open_store(db, lease_seconds=lease)
    try:
        clock = AnchoredClock(store, speed)
    except BaseException:
        store.close()
        raise
    emulator = Emulator(
        clock=clock, store=store, files=store.files, ids=store.ids(seed), **models
    )
    return store, emulator


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
        return _serve(args)
    if args.command == "conform":
        return _conform_cli.conform(args)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        if args.file == "-":
            return _check(sys.stdin, sys.stdout, args.format)
        # utf-8-sig: a byte order mark at the start (Windows tools write one)
        # is no character of the recording.
        with open(args.file, encoding="utf-8-sig") as source:
            return _check(source, sys.stdout, args.format)
    except (OSError, UnicodeDecodeError, _InputError) as exc:
        print(f"batchfsm check: {args.file}: {exc}", file=sys.stderr)
        return 2
