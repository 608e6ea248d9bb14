"""Screenshots of the web view for the docs: ``python scripts/screenshots.py``.

A real server (an emulator on a virtual clock) and Debian's headless chromium
driven by Playwright; writes ``docs/_static/web-batches.png`` and
``docs/_static/web-batch.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import (  # noqa: E402  (the repository's own helpers)
    chromium,
    create_batch,
    log_in,
    new_emulator,
    serving,
)

OUT = ROOT / "docs" / "_static"


def main() -> None:
    """Make a few batches at different stages, then photograph two pages."""
    emulator, clock = new_emulator()
    with serving(emulator) as base:
        done = create_batch(base, 3)
        clock.advance(20)  # the first batch completes
        create_batch(base, 4)  # this one stays validating
        running = create_batch(base, 12)
        clock.advance(5)  # in progress: 4 of 12
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1500, "height": 420})
            log_in(page, base)
            page.wait_for_selector(".live-state:text('live')")
            page.screenshot(path=str(OUT / "web-batches.png"), full_page=True)
            page.set_viewport_size({"width": 900, "height": 700})
            page.goto(f"{base}/ui/batches/{running['id']}")
            page.wait_for_selector(".live-state:text('live')")
            page.screenshot(path=str(OUT / "web-batch.png"), full_page=True)
    print(f"wrote 2 screenshots to {OUT} (batches {done['id']}, {running['id']})")


if __name__ == "__main__":
    main()
