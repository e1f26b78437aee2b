"""``python -m example_app.screenshots``: the pictures in ``docs/screenshots/`` (1200x800 PNG).

Starts the demo in a thread (embedded defaults, a throw-away data directory), walks one ad click to
an order in Debian's Chromium, and photographs the store's home (with the cookie banner), a
product page, the order confirmation, the sandbox's diagnostics page and the library's
diagnostics page.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, ViewportSize, sync_playwright

from example_app.demo import RunningDemo, start_in_thread

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT: ViewportSize = {"width": 1200, "height": 800}


def _shoot(page: Page, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def take(running: RunningDemo, out: Path, chromium: str) -> list[Path]:
    demo = running.demo
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(15_000)

        page.goto(demo.urls(epik="dj0yJnU9screenshot")["ad_click"])
        page.wait_for_function("window.tracklayer && !window.tracklayer.q")
        page.wait_for_load_state("load")
        shots.append(_shoot(page, out, "home"))

        page.click("[data-consent=accept]")
        page.goto(f"{demo.origin('www')}/p/mm-vase-01")
        page.click("button:has-text('Add to cart')")
        page.wait_for_selector("[data-added]:not([hidden])")
        shots.append(_shoot(page, out, "product"))

        page.goto(f"{demo.origin('www')}/p/mm-board-05")
        page.click("button:has-text('Add to cart')")
        page.wait_for_selector("[data-added]:not([hidden])")
        page.goto(f"{demo.origin('checkout')}/checkout")
        page.fill("input[name=email]", "ann@example.com")
        page.fill("input[name=first_name]", "Ann")
        page.fill("input[name=last_name]", "Lee")
        page.fill("input[name=city]", "Menlo Park")
        page.fill("input[name=zip]", "94025")
        page.click("button:has-text('Continue to payment')")
        page.wait_for_url(re.compile(r"/pay\?"))
        page.click("[data-test-card]")
        page.click(".pay-button")
        page.wait_for_url(re.compile(r"/confirmation\?order="))
        page.wait_for_load_state("load")
        shots.append(_shoot(page, out, "confirmation"))

        demo.engine.deliverer.flush(10.0)
        page.goto(demo.urls()["sandbox"])
        shots.append(_shoot(page, out, "sandbox-diagnostics"))
        page.goto(demo.urls()["diagnostics"])
        shots.append(_shoot(page, out, "tracklayer-diagnostics"))
        browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m example_app.screenshots", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as data_dir, start_in_thread(data_dir) as running:
        print("screenshots:")
        take(running, args.out, chromium)
    return 0


if __name__ == "__main__":
    sys.exit(main())
