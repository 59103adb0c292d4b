"""The dashboard in a real headless browser (the system Chromium driven by playwright):
the page loads, shows every site and a chart, and follows a round that lands, without a
reload. Never `playwright install`: the test skips when Chromium or playwright is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.conftest import SITES, add_evidence, add_round
from tests.dashboard.test_dashboard_cli import dashboard
from tests.tracking.conftest import CHROMIUM_FLAGS, chromium_binary


@pytest.mark.slow
def test_page_shows_the_sites_and_follows_a_new_round(seg_run: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    exe = chromium_binary()
    add_evidence(seg_run)
    args = [f for f in CHROMIUM_FLAGS if f != "--headless"]
    with dashboard(seg_run) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=args, headless=True)
        try:
            page = browser.new_page()
            failed: list[str] = []
            errors: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            expect = sync_api.expect
            expect(page.locator("#round")).to_have_text("2", timeout=30_000)
            for site in SITES:
                expect(page.locator(f"#sites [data-site={site}]")).to_be_visible()
            expect(page.locator("#chart-mean svg.main-svg").first).to_be_attached()
            assert page.evaluate("() => typeof Plotly") == "object"  # served offline
            alarm = page.locator("#alarms li[data-site=site2]")
            expect(alarm).to_contain_text("lose 0.30 Dice on the other sites' cases")
            expect(page.locator("#observations li[data-site=site1]")).to_be_visible()
            expect(page.locator("#cross-chart svg.main-svg").first).to_be_attached()
            expect(page.locator("#contrib tr[data-site=site2]")).to_contain_text("harmful")
            page.select_option("#cross-region", "ET")
            expect(page.locator("#cross-chart")).to_contain_text("-0.40")
            add_round(seg_run, 3)
            expect(page.locator("#round")).to_have_text("3", timeout=15_000)
            expect(page.locator("#link")).to_have_text("live")  # by the event stream
            assert not [u for u in failed if "/api/events" not in u], failed
            assert errors == []
        finally:
            browser.close()
