"""Run ``batchfsm conform`` against other projects' servers; write the docs page.

Not run by the test suite: it installs a server from the package index into a
throwaway virtual environment, starts it in front of a ``batchfsm serve`` of
this repository (its upstream provider), runs every check through it and,
beside it, against that ``batchfsm serve`` alone, and writes
``docs/known_servers.rst``: each server's version and the date, check by
check, and for each check that fails or warns through the server while it
passes against its upstream alone, the evidence and what we believe the cause
is. Every figure on the page comes from the run; the explanations below are
ours, keyed by server and check, and are shown only for the checks that
failed in this run.

Servers:

- LiteLLM's proxy (``pip install 'litellm[proxy]'``), its files and batch
  routes passing through to ``batchfsm serve`` (``files_settings`` and the
  ``OPENAI_API_BASE`` the batch routes use), a master key of its own, no
  database.
- Llama Stack's server (``pip install llama-stack``, which needs Python 3.12
  or later: ``--python`` names one) with its own Batch API (the ``reference``
  batches provider, ``localfs`` files, SQLite stores) and its inference at
  ``batchfsm serve`` (``remote::openai``). Its batches are its own, not
  passed through, so the upstream alone is no comparison for it.

Usage::

    python scripts/known_servers.py [--venv DIR] [--litellm SPEC]
        [--llama-stack SPEC] [--python PYTHON3.12] [--out PATH]

``--venv DIR`` keeps (and reuses) the virtual environments under DIR instead
of throwaway ones. Needs the package index (``pip``) and the loopback interface, nothing
else.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402 - after the repository is on the path

from batchfsm.conformance import CHECKS, Report, run  # noqa: E402

#: What we believe causes each failure, by (server, check id), with the
#: evidence to look for; shown only when that check fails in the run.
EXPLAINED: dict[tuple[str, str], str] = {
    **dict.fromkeys(
        [
            ("LiteLLM proxy", c)
            for c in (
                "cancel.terminal",
                "errors.not_found",
                "errors.bad_create",
                "errors.endpoint_wording",
                "errors.batch_id_wording",
            )
        ],
        "Theirs. The upstream refuses with a 4xx and the API's error body (the "
        "same check passes against it alone); the proxy turns the refusal into "
        "a 500: its error handler asks ``PrismaDBExceptionHandler`` whether the "
        "error is a database one, which imports ``prisma``, a dependency of the "
        "``extra-proxy`` extra that ``litellm[proxy]`` does not install. The "
        "proxy's log shows the upstream's ``openai.NotFoundError`` (or "
        "``BadRequestError``, ``ConflictError``) followed by ``ModuleNotFoundError: "
        "No module named 'prisma'``.",
    ),
    ("LiteLLM proxy", "errors.metadata_wording"): (
        'Theirs. A ``metadata`` value of the wrong type (``{"tags": ["a"]}``) '
        "is not refused: the proxy creates the batch with ``metadata`` null (it "
        "drops the metadata it was given), so the upstream never sees it; the "
        "upstream alone refuses it with 400 ``invalid_type``. A client's "
        "metadata is silently lost."
    ),
    ("LiteLLM proxy", "files.list"): (
        "Theirs. ``GET /v1/files?limit=1&order=desc&purpose=batch`` answers "
        "every file, where the upstream alone answers one: the proxy does not "
        "pass ``limit`` on to the provider (or drops it), so a client cannot "
        "page the files list."
    ),
    ("LiteLLM proxy", "files.no_extension"): (
        "Theirs. The proxy's own check of batch uploads (LiteLLM PR #37527) "
        "refuses a name without ``.jsonl``; the official ``openai`` client "
        "names raw ``bytes`` and nameless file objects ``upload``, so such "
        "uploads never reach the provider (the live API accepts it)."
    ),
    ("LiteLLM proxy", "files.jsonl_only"): (
        "Wording only: the proxy refuses the ``.txt`` file itself, with its own "
        'message, ``param`` "file" and ``code`` "400", not the live API\'s.'
    ),
    ("LiteLLM proxy", "files.utf8"): (
        'Wording only: the proxy refuses a UTF-16 file itself, as "Batch input '
        'file line 1 is not valid JSON", not with the live API\'s "Must be '
        'utf-8 encoded".'
    ),
    ("LiteLLM proxy", "create.zero_usage"): (
        "Theirs, observed level: the create answer's ``usage`` carries the "
        "chat-completions keys as well (``prompt_tokens``, "
        "``completion_tokens``, …, some null), not only the Batch object's."
    ),
    ("LiteLLM proxy", "headers.request_id"): (
        "Theirs, observed level: the proxy answers without the upstream's "
        "``x-request-id`` (the ``openai`` client's ``_request_id`` is None)."
    ),
}

EXPLAINED.update(
    {
        ("Llama Stack", c): (
            "Theirs. Its Batch objects answer ``expires_at`` null; the Batch "
            "object of the API reference carries the end of the 24h window "
            "(``created_at`` + 86400), which batchfsm's invariant "
            "``expires_at.window`` demands (and, of a failed batch, ``errors`` "
            'without ``object: "list"``: rule ``errors.object``).'
        )
        for c in ("create.echo", "schema.batch", "trace.legal")
    }
)
EXPLAINED.update(
    {
        ("Llama Stack", c): (
            'Theirs. Its refusals are ``{"error": {"message"}}`` only, '
            "without ``type``, ``param`` and ``code`` (for a bad endpoint it "
            'writes them into the message: "… Code: invalid_value. Param: '
            'endpoint").'
        )
        for c in (
            "errors.not_found",
            "errors.bad_create",
            "errors.endpoint_wording",
            "errors.batch_id_wording",
        )
    }
)
EXPLAINED.update(
    {
        ("Llama Stack", c): (
            "Theirs, we believe: the request before it was refused with a 400 "
            "whose handler then raised (its log: ``Exception in ASGI "
            "application`` after ``ValueError: Invalid endpoint``), and the "
            "server dropped the keep-alive connection, so this check's first "
            "request on it was reset."
        )
        for c in ("models.snapshot", "errors.metadata_wording")
    }
)
EXPLAINED.update(
    {
        ("Llama Stack", "list.pagination"): (
            "Possibly ours: the five batches were created within one second, "
            "so their ``created_at`` are equal, and Llama Stack lists such "
            "ties in another order than their creation; the check wants "
            "creation order, and how the live API orders ties is not recorded."
        ),
        ("Llama Stack", "files.list"): (
            "Possibly ours, as ``list.pagination``: both files were uploaded "
            "within one second (equal ``created_at``) and listed in another "
            "order than their upload."
        ),
        ("Llama Stack", "files.expiry"): (
            "Theirs. A ``batch`` file expires 365 days after its creation, not "
            "the documented 30 days (``expires_at`` - ``created_at`` = "
            "31536000)."
        ),
        ("Llama Stack", "files.jsonl_only"): (
            "Theirs. A ``batch`` upload named ``conformance.txt`` is accepted "
            "(200); the live API refuses it with 400."
        ),
        ("Llama Stack", "files.utf8"): (
            "Theirs, observed level: a UTF-16 ``batch`` file is accepted at "
            "upload; the live API refuses it (PSOpenAI issue #19)."
        ),
        ("Llama Stack", "files.no_extension"): (
            "Not the name: the file named ``upload`` is accepted; its batch "
            "fails because the model is unknown to Llama Stack's inference, "
            "which our upstream cannot serve (no model endpoints yet): ours."
        ),
        ("Llama Stack", "validation.required_fields"): (
            "Partly ours: every line also gets ``model_not_found`` (the model "
            "is unknown to its inference, see above); theirs, observed level: "
            '"Model parameter is required" without the live API\'s period.'
        ),
        ("Llama Stack", "validation.missing_file"): (
            'Theirs, observed level: ``param`` "input_file_id", not '
            '"file_id", and "Cannot find file X." without the live API\'s '
            '"or organization … does not have access to it".'
        ),
        ("Llama Stack", "headers.request_id"): (
            "Theirs, observed level: no ``x-request-id`` header."
        ),
    }
)

#: Notes on what a run cannot judge, by (server, check id), when it is skipped.
SKIPPED_NOTES: dict[tuple[str, str], str] = {}
EXPLAINED[("LiteLLM proxy", "validation.failed")] = (
    "The proxy refuses an input file with a malformed line at upload "
    '("Batch input file line 2 is not valid JSON. The file was not '
    'forwarded to the provider."); the live API accepts it and fails the '
    "batch (LiteLLM PR #37527 recorded both), so the check has no batch to "
    "judge."
)


@dataclass
class Judged:
    """One server judged: its name, version, setup, and both reports."""

    name: str
    version: str
    setup: str
    through: Report
    alone: Report | None
    log_errors: list[str] = field(default_factory=list)


def free_port() -> int:
    """A free port on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    """Return once ``url`` answers; exit if the process ends or 180 s pass."""
    deadline = time.monotonic() + 180
    while True:
        try:
            httpx2.get(url, timeout=5)
            return
        except httpx2.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.5)


@contextmanager
def started(
    command: list[str], ready: str, what: str, log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, its output in ``log``, ended (by its pid) on leaving."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
        try:
            try:
                wait_ready(ready, process, what)
            except RuntimeError as exc:
                tail = log.read_text("utf-8", errors="replace")[-3000:]
                raise SystemExit(
                    f"known_servers: {exc}; its log ends:\n{tail}"
                ) from None
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def judge(base: str, key: str | None) -> Report:
    """Every check against the server at ``base``."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx2.Client(base_url=base, headers=headers, timeout=120) as http:
        return run(http, timeout=300)


def environment(
    path: Path | None, spec: str, *more: str, base: str | None = None
) -> tuple[Path, str]:
    """A virtual environment holding ``spec`` (and ``more``): python, version.

    ``base`` is the Python to make it with (default: this one).
    """
    where = path or Path(tempfile.mkdtemp(prefix="known-servers-"))
    python = where / "bin" / "python"
    if not python.exists() and base:
        subprocess.run([base, "-m", "venv", str(where)], check=True)
    elif not python.exists():
        venv.create(where, with_pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", spec, *more], check=True)
    name = re.split(r"[\[<>=!~ ]", spec, maxsplit=1)[0]
    version = subprocess.run(
        [str(python), "-c",
         f"import importlib.metadata as m; print(m.version({name!r}))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return python, version


def final_errors(log: Path) -> list[str]:
    """The last line of every traceback in a server's log, counted."""
    lines = log.read_text("utf-8", errors="replace").splitlines()
    found: dict[str, int] = {}
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            end = next(
                (j for j in range(i + 1, len(lines)) if not lines[j].startswith(" ")),
                None,
            )
            if end is not None:
                last = lines[end].strip()[:200]
                found[last] = found.get(last, 0) + 1
    return [f"{count}x {line}" for line, count in found.items()]


LITELLM_CONFIG = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}
      api_key: sk-upstream
files_settings:
  - custom_llm_provider: openai
    api_base: {upstream}
    api_key: sk-upstream
"""


def litellm(spec: str, env_dir: Path | None, work: Path, upstream: str) -> Judged:
    """LiteLLM's proxy in front of ``upstream`` (a ``batchfsm serve``), judged."""
    python, version = environment(env_dir and env_dir / "litellm", spec)
    config = work / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(upstream=f"{upstream}/v1"), "utf-8")
    key = f"sk-{secrets.token_hex(24)}"
    port = free_port()
    env = {
        "LITELLM_MASTER_KEY": key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from the network
        "OPENAI_API_KEY": "sk-upstream",
        "OPENAI_API_BASE": f"{upstream}/v1",  # where the batch routes go
    }
    command = [str(python.parent / "litellm"), "--config", str(config),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    log = work / "litellm.log"
    base = f"http://127.0.0.1:{port}"
    with started(command, f"{base}/health/liveliness", "LiteLLM", log, env):
        through = judge(base, key)
    setup = (
        f"``pip install '{spec}'``; ``litellm --config`` with one model "
        "``openai/gpt-4o-mini`` and ``files_settings`` (provider ``openai``) "
        "both at the upstream, ``OPENAI_API_BASE`` at the upstream (the batch "
        "routes' provider), a master key of its own (sent as the API key), no "
        "database."
    )
    return Judged("LiteLLM proxy", version, setup, through, judge(upstream, None),
                  final_errors(log))  # fmt: skip


LLAMA_STACK_CONFIG = """\
version: 2
distro_name: conform
apis: [batches, files, inference]
providers:
  inference:
  - provider_id: openai
    provider_type: remote::openai
    config: {{api_key: sk-upstream, base_url: "{upstream}"}}
  files:
  - provider_id: builtin-files
    provider_type: inline::localfs
    config:
      storage_dir: "{work}/files"
      metadata_store: {{table_name: files_metadata, backend: sql_default}}
  batches:
  - provider_id: reference
    provider_type: inline::reference
    config:
      kvstore: {{namespace: batches, backend: kv_default}}
storage:
  backends:
    kv_default: {{type: kv_sqlite, db_path: "{work}/kvstore.db"}}
    sql_default: {{type: sql_sqlite, db_path: "{work}/sql_store.db"}}
  stores:
    metadata: {{namespace: registry, backend: kv_default}}
    inference: {{table_name: inference_store, backend: sql_default}}
    conversations: {{table_name: openai_conversations, backend: sql_default}}
    prompts: {{namespace: prompts, backend: kv_default}}
    connectors: {{namespace: connectors, backend: kv_default}}
registered_resources:
  models:
  - {{model_id: gpt-4o-mini, provider_id: openai, provider_model_id: gpt-4o-mini,
     model_type: llm}}
server: {{host: 127.0.0.1, port: {port}}}
"""


def python312() -> str | None:
    """A Python 3.12 or later that runs here (on PATH, or pyenv's), if any."""
    import glob
    import shutil

    candidates = [shutil.which(f"python3.{minor}") for minor in (12, 13, 14)]
    home = os.path.expanduser("~/.pyenv/versions")
    candidates += [f"{v}/bin/python" for v in sorted(glob.glob(f"{home}/3.1[2-9]*"))]
    for candidate in filter(None, candidates):
        works = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info >= (3, 12)"],
            capture_output=True,
            check=False,
        )
        if works.returncode == 0:  # a pyenv shim of a version not set fails
            return candidate
    return None


def llama_stack(
    spec: str, base: str, env_dir: Path | None, work: Path, upstream: str
) -> Judged:
    """Llama Stack's server with its own Batch API, inference at ``upstream``."""
    # mcp 2 renamed McpError, which llama_stack imports at start: pin it.
    pins = ("mcp<2",)
    where = env_dir and env_dir / "llama-stack"
    python, version = environment(where, spec, *pins, base=base)
    home = work / "llama-stack"
    home.mkdir()
    port = free_port()
    config = home / "config.yaml"
    config.write_text(
        LLAMA_STACK_CONFIG.format(upstream=f"{upstream}/v1", work=home, port=port),
        "utf-8",
    )
    command = [
        str(python.parent / "llama"),
        "stack",
        "run",
        str(config),
        "--port",
        str(port),
    ]
    log = work / "llama-stack.log"
    base_url = f"http://127.0.0.1:{port}"
    with started(command, f"{base_url}/v1/health", "Llama Stack", log, {}):
        through = judge(base_url, None)
    setup = (
        f"``pip install {spec} 'mcp<2'`` on ``{Path(base).resolve().name}``: "
        "its own Batch API (the ``reference`` "
        "batches provider, ``localfs`` files, SQLite stores), inference "
        "``remote::openai`` at the upstream, which serves no model endpoints "
        "yet, so every request of a batch fails there (the Batch lifecycle "
        "is judged all the same). ``mcp<2``: without the pin it does not "
        "start (``ImportError: cannot import name 'McpError' from 'mcp'``)."
    )
    return Judged("Llama Stack", version, setup, through, None, final_errors(log))


def _cell(text: str) -> str:
    """One line, for a table cell."""
    return " ".join(text.split()) or "—"


def _row(judged: Judged, check_id: str) -> list[str]:
    mine = {r.id: r for r in judged.through.results}[check_id]
    alone = {r.id: r for r in judged.alone.results}[check_id] if judged.alone else None
    key = (judged.name, check_id)
    if mine.outcome in ("fail", "warn"):
        why = EXPLAINED.get(key, "Not explained yet: see the evidence.")
        if alone and alone.outcome in ("fail", "warn"):
            why = "It fails against the upstream alone too: ours. " + why
        note = f"{why} Evidence: ``{_cell(mine.evidence)[:600]}``"
    elif mine.outcome == "skip":
        note = SKIPPED_NOTES.get(key, _cell(mine.evidence))
    else:
        note = ""
    level = f"{mine.level}" if mine.outcome in ("fail", "warn") else ""
    return [f"``{check_id}``", mine.outcome + (f" ({level})" if level else ""),
            alone.outcome if alone else "n/a", note]  # fmt: skip


def section(judged: Judged) -> list[str]:
    """The page's section for one server: its version, setup and table."""
    t = judged.through
    lines = [
        judged.name, "-" * len(judged.name), "",
        f"Version {judged.version}. {judged.setup}", "",
        f"Through it: {t.count('pass')} passed, {t.count('fail')} failed, "
        f"{t.count('warn')} warned, {t.count('skip')} skipped"
        + (f"; {len(t.server_errors)} answers were 5xx" if t.server_errors else "")
        + (f". Its upstream alone: {judged.alone.count('pass')} of "
           f"{len(judged.alone.results)} passed." if judged.alone else "."), "",
        ".. list-table::", "   :header-rows: 1", "   :widths: 2 1 1 6", "",
        "   * - check", "     - through it", "     - upstream alone",
        "     - what we believe, and the evidence",
    ]  # fmt: skip
    for check_id in CHECKS:
        first, *rest = _row(judged, check_id)
        lines.append(f"   * - {first}")
        lines += [f"     - {_cell(cell)}" for cell in rest]
    if judged.log_errors:
        lines += ["", "The last line of each traceback in its log, counted:", ""]
        lines += [f"- ``{_cell(e)}``" for e in judged.log_errors]
    return [*lines, ""]


def page(servers: list[Judged], date: str) -> str:
    """The whole page."""
    title = "What conform finds in known servers"
    lines = [
        title, "=" * len(title), "",
        f"Generated by ``scripts/known_servers.py`` on {date}; do not edit by "
        "hand. Each server is installed from the package index into a "
        "throwaway virtual environment and started in front of a ``batchfsm "
        "serve`` of this repository (its upstream provider, in memory, at real "
        "speed); every check runs through it and, beside it, against the "
        "upstream alone. A check that fails or warns through the server and "
        "passes against the upstream alone is a difference the server makes; "
        "we say what we believe causes it, with the evidence of this run "
        "(the request and answer, and the server's own log).", "",
    ]  # fmt: skip
    for judged in servers:
        lines += section(judged)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Judge every server; write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, help="keep the environment here")
    parser.add_argument("--litellm", default="litellm[proxy]", help="pip spec")
    parser.add_argument("--llama-stack", default="llama-stack", help="pip spec")
    parser.add_argument("--python", help="a Python 3.12+ for Llama Stack")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "known_servers.rst")
    args = parser.parse_args(argv)
    date = datetime.date.today().isoformat()
    with tempfile.TemporaryDirectory(prefix="known-servers-") as tmp:
        work = Path(tmp)
        port = free_port()
        serve = [sys.executable, "-m", "batchfsm", "serve", "--port", str(port)]
        upstream = f"http://127.0.0.1:{port}"
        env = {"PYTHONPATH": str(ROOT)}
        with started(serve, f"{upstream}/v1/batches", "batchfsm serve",
                     work / "serve.log", env):  # fmt: skip
            servers = [litellm(args.litellm, args.venv, work, upstream)]
            base = args.python or python312()
            if base:
                servers.append(
                    llama_stack(args.llama_stack, base, args.venv, work, upstream)
                )
            else:
                print("known_servers: no Python 3.12+ found, Llama Stack skipped")
    args.out.write_text(page(servers, date), "utf-8")
    print(f"known_servers: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
