"""A real server in a thread and a real browser (Debian's chromium) for the web view.

Chromium is driven by Playwright for Python with the system browser (never a
downloaded one). Where either is missing the browser tests skip with the
reason, but fail under CI (``CI`` set), which installs both (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import uvicorn

from batchfsm.emulator import Emulator, VirtualClock, create_app
from batchfsm.emulator._server import bind, config

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY = "sk-web-view-test"
LINE = (
    b'{"custom_id":"r%d","method":"POST","url":"/v1/embeddings",'
    b'"body":{"model":"text-embedding-3-small","input":"x"}}\n'
)


def need_browser() -> Any:
    """Playwright's sync API, or a skip (a failure under CI) saying what is missing."""
    missing = None
    if shutil.which(CHROMIUM) is None:
        missing = f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        from playwright import sync_api
    except ImportError:
        missing = "playwright is not installed (pip install playwright)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run under CI: {missing}")
        pytest.skip(missing)
    return sync_api


@contextlib.contextmanager
def serving(emulator: Emulator, api_key: str | None = KEY, **app: Any) -> Iterator[str]:
    """``emulator`` served on a loopback port in a thread; yields its base URL.

    ``app``: more of :func:`create_app`'s keywords.
    """
    sock = bind("127.0.0.1", 0)
    made = uvicorn.Server(config(emulator, api_key=api_key))
    if app:
        made.config.app = create_app(emulator, api_key=api_key, **app)
    thread = threading.Thread(target=made.run, kwargs={"sockets": [sock]})
    thread.start()
    host, port = sock.getsockname()[:2]
    while not made.started:
        thread.join(0.01)
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
    try:
        yield f"http://{host}:{port}"
    finally:
        made.should_exit = True
        thread.join()
        sock.close()


def new_emulator() -> tuple[Emulator, VirtualClock]:
    """An emulator on a virtual clock: batches move only as the test moves time."""
    clock = VirtualClock()
    return Emulator(clock=clock, seed=7, request_seconds=1), clock


def create_batch(base: str, lines: int, api_key: str = KEY) -> dict[str, Any]:
    """A batch of ``lines`` embedding requests, created through the HTTP API."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx2.Client(base_url=base, headers=headers) as http:
        content = b"".join(LINE % i for i in range(lines))
        file = http.post(
            "/v1/files",
            files={"file": ("requests.jsonl", content)},
            data={"purpose": "batch"},
        ).json()
        batch: dict[str, Any] = http.post(
            "/v1/batches",
            json={
                "input_file_id": file["id"],
                "endpoint": "/v1/embeddings",
                "completion_window": "24h",
            },
        ).json()
    return batch


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium, driven by Playwright."""
    sync_api = need_browser()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page: Any, base: str, key: str = KEY) -> None:
    """Enter ``key`` in the view's form, as a person would."""
    page.goto(f"{base}/ui")
    page.fill("#key", key)
    page.click("button[type=submit]")
