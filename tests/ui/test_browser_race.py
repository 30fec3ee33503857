"""A second file chosen while the first is being reviewed is never lost, in a real browser.

Upload one X-ray, then another 0.15 / 0.3 / 0.6 s later: the Review page must end on the review
of the file chosen last (its name, and findings computed from its bytes: the SHA-256 shown with
the findings comes from the review object), and while it works it never shows one file's
findings under the other's name. The Worklist must list both files, each with its own review.
One server for the module (browser tests are slow on a shared machine).
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from tests.ui.browser_driver import ARGS, CHROMIUM, FILE_INPUT, streamlit_server

REPO = Path(__file__).resolve().parents[2]
GAPS_S = (0.15, 0.3, 0.6)
TIMEOUT_MS = 240_000

SETTLED = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app && app.getAttribute('data-test-script-state') === 'notRunning'
        && !document.querySelector('[data-stale="true"]');
}"""
#: what the Review page shows now, leaving out elements Streamlit has marked stale (greyed)
VISIBLE = """() => {
    const live = (e) => !e.closest('[data-stale="true"]');
    const texts = Array.from(document.querySelectorAll('[data-testid="stMarkdownContainer"]'))
        .filter(live).map(e => e.innerText);
    return {source: texts.find(t => t.startsWith('Reviewing ')) || null,
            findings: texts.find(t => t.includes('positive finding(s) of')) || null};
}"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _samples() -> tuple[Path, Path]:
    samples = sorted((REPO / "assets" / "samples").glob("*.png"))
    assert len(samples) >= 2, "the repository ships sample X-rays in assets/samples"
    return samples[0], samples[1]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make browser installs it with apt when it can)")
    from playwright.sync_api import sync_playwright

    with streamlit_server(tmp_path_factory.mktemp("race") / "data") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser, url
        finally:
            browser.close()


def _settle(page, quiet_checks: int = 4) -> None:
    """Wait until the script has stopped running and stays stopped (a rerun may follow one)."""
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS, polling=50)
    calm = 0
    while calm < quiet_checks:
        page.wait_for_timeout(400)
        calm = calm + 1 if page.evaluate(SETTLED) else 0


def _shown_digest(findings_text: str | None) -> str | None:
    match = re.search(r"SHA-256 ([0-9a-f]{12})", findings_text or "")
    return match.group(1) if match else None


@pytest.mark.parametrize("gap_s", GAPS_S)
def test_review_page_shows_the_last_file_chosen(browser_page, gap_s):
    browser, url = browser_page
    first, second = _samples()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Upload an X-ray or pick a sample").wait_for(timeout=TIMEOUT_MS)
        page.locator(FILE_INPUT).set_input_files(str(first))
        time.sleep(gap_s)
        page.locator(FILE_INPUT).set_input_files(str(second))
        # while it works: whenever findings are on screen (not greyed), they are the shown file's
        deadline = time.time() + TIMEOUT_MS / 1000
        mismatches = []
        while time.time() < deadline:
            shown = page.evaluate(VISIBLE)
            if shown["source"] and shown["findings"]:
                source_digest = re.search(r"SHA-256 ([0-9a-f]{12})", shown["source"]).group(1)
                if _shown_digest(shown["findings"]) != source_digest:
                    mismatches.append(shown)
            if page.evaluate(SETTLED) and shown["source"] and second.name in shown["source"] \
                    and shown["findings"]:
                break
            page.wait_for_timeout(100)
        _settle(page)
        shown = page.evaluate(VISIBLE)
        assert mismatches == []
        assert shown["source"] is not None and second.name in shown["source"], shown
        assert _digest(second) in shown["source"], shown
        assert _shown_digest(shown["findings"]) == _digest(second), shown
    finally:
        page.close()


def test_worklist_keeps_both_files_each_with_its_own_review(browser_page):
    from playwright.sync_api import expect

    browser, url = browser_page
    first, second = _samples()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{url}/Worklist", wait_until="domcontentloaded")
        page.get_by_text("Upload X-rays (or a zip of them)").wait_for(timeout=TIMEOUT_MS)
        page.locator(FILE_INPUT).set_input_files(str(first))
        time.sleep(GAPS_S[0])
        page.locator(FILE_INPUT).set_input_files(str(second))
        page.wait_for_function("() => document.body.innerText.includes('2 analysed')",
                               timeout=TIMEOUT_MS, polling=250)
        _settle(page)
        seen = {}
        study = page.locator("h3").filter(has_text=re.compile(r"\.png$")).first
        for _ in range(2):
            heading = study.inner_text().strip()
            caption = page.get_by_text(re.compile(r"^SHA-256 [0-9a-f]{12} \(the image")).inner_text()
            seen[heading] = _shown_digest(caption)
            if len(seen) == 1:  # open the other study from the picker
                other = second.name if heading == first.name else first.name
                page.locator('[data-testid="stSelectbox"]').filter(has_text="Open study").click()
                page.get_by_role("option", name=other).click()
                expect(study).to_have_text(other, timeout=60_000)
                _settle(page)
        assert seen == {first.name: _digest(first), second.name: _digest(second)}
    finally:
        page.close()


ANSWERS = """() => Array.from(document.querySelectorAll('[data-testid="stRadio"]'))
    .filter(g => g.innerText.includes('(model:'))
    .map(g => { const inputs = Array.from(g.querySelectorAll('[role="radiogroup"] input'));
                return inputs.findIndex(i => i.checked); })"""


def test_keyboard_shortcuts_walk_studies_and_answer_findings(browser_page):
    """n / p open the next / previous image of the tab, a / d answer the first unanswered
    finding (agree / disagree), h toggles the viewer's heatmap: clicks on the page's own controls."""
    from playwright.sync_api import expect

    browser, url = browser_page
    first, second = _samples()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("Upload an X-ray or pick a sample").wait_for(timeout=TIMEOUT_MS)
        for path in (first, second):
            page.locator(FILE_INPUT).set_input_files(str(path))
            page.wait_for_function("(d) => document.body.innerText.includes(d)", arg=_digest(path),
                                   timeout=TIMEOUT_MS)
            _settle(page)
        page.locator("h1").first.click()  # focus on the page, not in a field

        def press_and_wait_for(key: str, path: Path) -> None:
            page.keyboard.press(key)
            page.wait_for_function(f"""() => {{ const t = ({VISIBLE})(); return t.source
                && t.source.includes({path.name!r}) && t.findings
                && t.findings.includes({_digest(path)!r}); }}""", timeout=TIMEOUT_MS)
            _settle(page)

        press_and_wait_for("p", first)
        press_and_wait_for("n", second)
        assert set(page.evaluate(ANSWERS)) == {-1}  # nothing answered yet
        page.locator("h1").first.click()
        page.keyboard.press("a")
        page.wait_for_function(f"() => ({ANSWERS})()[0] === 0", timeout=60_000)
        _settle(page)
        page.locator("h1").first.click()
        page.keyboard.press("d")
        page.wait_for_function(f"() => ({ANSWERS})()[1] === 1", timeout=60_000)
        answers = page.evaluate(ANSWERS)
        assert answers[:2] == [0, 1] and set(answers[2:]) <= {-1}
        # typing in a field never triggers a shortcut
        page.get_by_label("Comment").fill("n a d")
        assert page.evaluate(ANSWERS)[:2] == [0, 1]
        # h: the viewer's heatmap switch
        page.get_by_text("Zoomable viewer").click()
        switch = page.get_by_role("switch", name="Heatmap", exact=True)
        switch.wait_for(timeout=TIMEOUT_MS)
        _settle(page)
        assert switch.is_checked()
        page.locator("h1").first.click()
        page.keyboard.press("h")
        expect(switch).not_to_be_checked(timeout=60_000)
    finally:
        page.close()
