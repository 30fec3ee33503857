"""A real browser (Debian chromium driven by playwright) against `streamlit run app.py`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("CXR_SCREENSHOT_DIR", "")) if os.environ.get("CXR_SCREENSHOT_DIR") else None
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make test installs it with apt when it can)")
    port = _free_port()
    env = dict(os.environ, CXR_DATA_DIR=str(tmp_path / "data"))
    env.pop("CXR_DB_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start within 120 s")
        yield url, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _shot(page, name: str, tmp_path: Path) -> Path:
    target = (SCREENSHOTS or tmp_path) / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    return target


def test_upload_review_feedback_in_a_real_browser(server):
    from playwright.sync_api import sync_playwright

    url, tmp_path = server
    sample = sorted((REPO / "assets" / "samples").glob("*.png"))[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Upload an X-ray or pick a sample").wait_for(timeout=180_000)
            page.locator("input[type=file]").set_input_files(str(sample))
            page.get_by_text("positive finding(s) of").wait_for(timeout=240_000)
            page.get_by_text("Show all findings").click()
            page.get_by_text("Download report (PDF)").wait_for(timeout=120_000)
            heatmaps = page.locator("[data-testid=stImage] img")
            heatmaps.first.wait_for(timeout=60_000)
            assert heatmaps.count() >= 2
            _shot(page, "review", tmp_path)
            page.get_by_label("Reviewer name").fill("Dr Browser")
            page.get_by_label("Comment").fill("checked in chromium")
            page.get_by_role("button", name="Submit feedback").click()
            page.get_by_text("Feedback saved").wait_for(timeout=60_000)
            for name in ("Metrics", "Feedback", "Models"):
                page.goto(f"{url}/{name}", wait_until="domcontentloaded")
                page.locator("h1").first.wait_for(timeout=120_000)
                if name == "Metrics":
                    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
                page.wait_for_timeout(3000)
                _shot(page, name.lower(), tmp_path)
        finally:
            browser.close()

    from cxr_core.review.feedback import FeedbackStore

    store = FeedbackStore(f"sqlite:///{tmp_path / 'data' / 'feedback.sqlite'}")
    frame = store.reviews_frame()
    assert len(frame) == 1
    assert frame["reviewer"].iloc[0] == "Dr Browser"
    assert frame["comment"].iloc[0] == "checked in chromium"
