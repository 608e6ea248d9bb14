"""The web view in a real browser: Debian's headless chromium, driven by Playwright.

Skipped with the reason where chromium or Playwright is missing; failed under CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchfsm.emulator import Emulator, VirtualClock

from .browser import KEY, LINE, chromium, create_batch, log_in, new_emulator, serving

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def browser() -> Any:
    with chromium() as browser:
        yield browser


@pytest.fixture
def site() -> Any:
    emulator, clock = new_emulator()
    with serving(emulator) as base:
        yield base, emulator, clock


def _counts(page: Any, batch_id: str) -> str:
    text: str = page.text_content(f'tr[data-batch="{batch_id}"] .counts')
    return text


def test_the_list_shows_a_batch_and_its_progress_moves_without_a_reload(
    browser: Any, site: tuple[str, Emulator, VirtualClock]
) -> None:
    base, _, clock = site
    batch = create_batch(base, 5)
    page = browser.new_page()
    log_in(page, base)
    row = f'tr[data-batch="{batch["id"]}"]'
    page.wait_for_selector(row)
    assert page.text_content(f"{row} [data-field=status]") == "validating"
    assert page.text_content(f"{row} td:nth-child(6)") == "/v1/embeddings"
    page.evaluate("window.notReloaded = true")
    page.wait_for_selector(".live-state:text('live')")
    clock.advance(1)  # validated: in progress
    page.wait_for_selector(f"{row} [data-status=in_progress]")
    clock.advance(2)  # two requests answered
    page.wait_for_selector(f"{row} .counts:text-matches('^2/5')")
    assert page.get_attribute(f"{row} progress", "value") == "2"
    assert page.get_attribute(f"{row} progress", "max") == "5"
    clock.advance(10)
    page.wait_for_selector(f"{row} [data-status=completed]")
    assert _counts(page, batch["id"]) == "5/5"
    assert page.evaluate("window.notReloaded") is True  # the same page all along


def test_the_batch_page_shows_the_timeline_and_highlights_the_status(
    browser: Any, site: tuple[str, Emulator, VirtualClock]
) -> None:
    base, _, clock = site
    batch = create_batch(base, 2)
    page = browser.new_page()
    log_in(page, base)
    page.click(f'a[href="/ui/batches/{batch["id"]}"]')
    page.wait_for_selector(".live-state:text('live')")
    stamps = page.eval_on_selector_all(
        "[data-field=timeline] tr", "rows => rows.map(r => r.dataset.stamp)"
    )
    assert stamps == ["created_at"]
    assert _highlighted(page) == ["validating"]
    clock.advance(1)
    page.wait_for_selector("[data-field=diagram][data-current=in_progress]")
    assert _highlighted(page) == ["in_progress"]
    clock.advance(10)
    page.wait_for_selector("tr[data-stamp=completed_at]")
    stamps = page.eval_on_selector_all(
        "[data-field=timeline] tr", "rows => rows.map(r => r.dataset.stamp)"
    )
    assert stamps == ["created_at", "in_progress_at", "finalizing_at", "completed_at"]
    since = page.text_content("tr[data-stamp=in_progress_at] td:nth-child(3)")
    assert since == "0m 01s"
    assert _highlighted(page) == ["completed"]


def _highlighted(page: Any) -> list[str]:
    """The statuses whose box the browser paints in the highlight colour."""
    found: list[str] = page.eval_on_selector_all(
        ".diagram g[data-status]",
        "groups => groups.filter(g => getComputedStyle(g.querySelector('rect')).fill"
        " === 'rgb(253, 230, 138)').map(g => g.dataset.status)",
    )
    return found


def test_the_download_links_return_the_files(
    browser: Any, site: tuple[str, Emulator, VirtualClock]
) -> None:
    base, _, clock = site
    batch = create_batch(base, 3)
    clock.advance(30)
    page = browser.new_page()
    log_in(page, base)
    page.goto(f"{base}/ui/batches/{batch['id']}")
    page.wait_for_selector("a[data-file=output]")
    with page.expect_download() as given:
        page.click("a[data-file=input]")
    assert Path(given.value.path()).read_bytes() == b"".join(LINE % i for i in range(3))
    with page.expect_download() as given:
        page.click("a[data-file=output]")
    lines = Path(given.value.path()).read_bytes().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["r0", "r1", "r2"]


def test_a_wrong_key_sees_nothing(
    browser: Any, site: tuple[str, Emulator, VirtualClock]
) -> None:
    base, _, _ = site
    batch = create_batch(base, 1)
    page = browser.new_page()
    log_in(page, base, key="sk-wrong")
    assert page.text_content("[role=alert]") == "Incorrect API key provided."
    for path in ("/ui", f"/ui/batches/{batch['id']}"):
        page.goto(base + path)
        assert batch["id"] not in page.content()
        assert page.url == f"{base}/ui/login"
    answer = page.request.get(f"{base}/ui/files/{batch['input_file_id']}")
    assert answer.status == 401
    assert page.context.cookies() == []


def test_the_key_is_kept_in_an_http_only_strict_cookie_never_in_a_url(
    browser: Any, site: tuple[str, Emulator, VirtualClock]
) -> None:
    base, _, _ = site
    page = browser.new_page()
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    log_in(page, base)
    page.wait_for_selector("#batches")
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert page.evaluate("document.cookie") == ""  # no script can read it
    assert not any(KEY in url for url in seen)


def test_each_projects_key_sees_its_own_batches_only(browser: Any) -> None:
    emulator, clock = new_emulator()
    keys = {"sk-team-a": "team_a", "sk-team-b": "team_b"}
    with serving(emulator, api_key=None, api_keys=keys) as base:
        mine = create_batch(base, 2, api_key="sk-team-a")
        theirs = create_batch(base, 2, api_key="sk-team-b")
        clock.advance(30)
        page = browser.new_page()
        log_in(page, base, key="sk-team-a")
        page.wait_for_selector(".live-state:text('live')")
        shown = page.eval_on_selector_all(
            "tr[data-batch]", "rows => rows.map(r => r.dataset.batch)"
        )
        assert shown == [mine["id"]]
        page.goto(f"{base}/ui/batches/{theirs['id']}")
        assert page.text_content("[role=alert]") == (
            f"No batch found with id '{theirs['id']}'."
        )
        assert theirs["input_file_id"] not in page.content()
        answer = page.request.get(f"{base}/ui/files/{theirs['input_file_id']}")
        assert answer.status == 404
        own = page.request.get(f"{base}/ui/files/{mine['input_file_id']}")
        assert own.status == 200
