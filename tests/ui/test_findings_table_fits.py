"""The Review page's findings table fits a 1400 px wide browser window: every column, the
'call' column last, is on screen without scrolling the table sideways (a real browser)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.browser_driver import ARGS, CHROMIUM, streamlit_server

SETTLED = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector('[data-stale="true"]');
}"""
#: the findings table's grid: how wide its columns are, and how wide the part that shows them
GRID = """() => {
    const frame = document.querySelector('[data-testid="stDataFrame"]');
    const scroller = frame && frame.querySelector('.dvn-scroller');
    return scroller && {content: scroller.scrollWidth, shown: scroller.clientWidth,
                        right: frame.getBoundingClientRect().right, window: window.innerWidth};
}"""


def test_every_findings_column_is_visible_at_1400_px(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with streamlit_server(tmp_path / "data") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Upload an X-ray or pick a sample").wait_for(timeout=180_000)
            page.locator('[data-testid="stSelectbox"]').filter(has_text="try a sample").click()
            page.get_by_role("option").nth(1).click()  # the first sample
            page.get_by_text("positive finding(s) of").wait_for(timeout=300_000)
            page.wait_for_function(SETTLED, timeout=300_000)
            page.wait_for_timeout(1000)
            grid = page.evaluate(GRID)
            page.screenshot(path=str(tmp_path / "review_1400.png"))
        finally:
            browser.close()
    assert grid is not None, "no findings table on the page"
    # the columns' total width fits the table (nothing hidden on the right) and the table the window
    assert grid["content"] <= grid["shown"] + 1, grid
    assert grid["right"] <= grid["window"], grid
