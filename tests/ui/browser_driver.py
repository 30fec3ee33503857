"""Real-browser driving for the load and hostile-input tests and `benchmarks/bench_load.py`.

Every selector the browser uses is in this module (stable things only: the file input, the
form's field labels, the submit button's text, finding names), so a change to the Review page
is adapted here once.
"""

from __future__ import annotations

import asyncio
import re
import contextlib
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

# --- selectors (the only place they live) ---------------------------------------------------
FILE_INPUT = "input[type=file]"
SUBMIT_BUTTON = "Submit feedback"  # role=button name; shown once a review is on the page
REVIEWER_FIELD = "Reviewer name"  # label of the text input
COMMENT_FIELD = "Comment"  # label of the text area
SAVED_TEXT = "Feedback saved"
AGREE_OPTION = "agree"  # exact text of a finding's radio option
FORM = "[data-testid=stForm]"
RADIO_GROUP = "[role=radiogroup]"
FEEDBACK_PAGE = "/Feedback"
APP_READY = "[data-testid=stApp]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(data_dir: Path, env: dict | None = None, start_timeout: float = 180):
    """`streamlit run app.py` on 127.0.0.1 with its own data folder; yields the URL, stops it."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, CXR_DATA_DIR=str(data_dir), **(env or {}))
    if "CXR_DB_URL" not in (env or {}):
        full_env.pop("CXR_DB_URL", None)
    log = open(data_dir / "streamlit.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.address",
         "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {data_dir / 'streamlit.log'}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()


@dataclass
class SessionResult:
    """What one browser session did and saw."""

    reviewer: str
    file: Path
    review_s: float = float("nan")  # upload -> the review (and its form) on screen
    save_s: float = float("nan")  # submit click -> "saved" on screen
    text: str = ""  # the page's visible text once the review was shown
    error: str = ""
    extra: dict = field(default_factory=dict)


async def answer_every_finding(page) -> None:
    """Answer every finding as the model did (the form has no default answers): the form's
    explicit "Agree with the model on the N unanswered" button."""
    button = page.get_by_role("button", name=re.compile(r"^Agree with the model"))
    await button.click()
    await button.wait_for(state="detached", timeout=120_000)


async def review_and_submit(context, url: str, result: SessionResult, comment: str,
                            upload_gate: asyncio.Event | None = None,
                            submit_gate: asyncio.Barrier | None = None,
                            timeout_ms: int = 300_000) -> SessionResult:
    """One reviewer: open the app, upload a file, wait for the review, submit feedback."""
    page = await context.new_page()
    try:
        await page.goto(url, wait_until="domcontentloaded")
        await page.locator(FILE_INPUT).wait_for(state="attached", timeout=timeout_ms)
        if upload_gate is not None:
            await upload_gate.wait()
        start = time.perf_counter()
        await page.locator(FILE_INPUT).set_input_files(str(result.file))
        await page.get_by_role("button", name=SUBMIT_BUTTON).wait_for(timeout=timeout_ms)
        result.review_s = time.perf_counter() - start
        result.text = await page.inner_text("body")
        await answer_every_finding(page)
        await page.get_by_label(REVIEWER_FIELD).fill(result.reviewer)
        await page.get_by_label(COMMENT_FIELD).fill(comment)
        if submit_gate is not None:
            await submit_gate.wait()
        start = time.perf_counter()
        await page.get_by_role("button", name=SUBMIT_BUTTON).click()
        await page.get_by_text(SAVED_TEXT).wait_for(timeout=timeout_ms)
        result.save_s = time.perf_counter() - start
    except Exception as exc:  # reported per session; the caller asserts on it
        result.error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if submit_gate is not None:
            await submit_gate.abort()  # the others stop waiting for this session
    finally:
        await page.close()
    return result


async def _run_sessions(url: str, jobs: list[tuple[str, Path]], comment: str, timeout_s: float
                        ) -> list[SessionResult]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            contexts = [await browser.new_context(viewport={"width": 1280, "height": 900})
                        for _ in jobs]  # one context each: separate cookies, separate sessions
            gate = asyncio.Event()
            barrier = asyncio.Barrier(len(jobs))
            results = [SessionResult(name, path) for name, path in jobs]
            tasks = [asyncio.create_task(review_and_submit(ctx, url, res, f"{comment} ({res.reviewer})",
                                                           gate, barrier, int(timeout_s * 1000)))
                     for ctx, res in zip(contexts, results)]
            await asyncio.sleep(0)
            gate.set()  # every session uploads at once (each waits for its page first)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=timeout_s)
            return results
        finally:
            await browser.close()


def run_sessions(url: str, jobs: list[tuple[str, Path]], comment: str = "load test",
                 timeout_s: float = 600) -> list[SessionResult]:
    """Run len(jobs) browser sessions at once, each uploading its file; bounded by timeout_s.
    A session that fails leaves the barrier short, so all share one deadline."""
    return asyncio.run(_run_sessions(url, jobs, comment, timeout_s))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a few latencies."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def review_files(count: int) -> list[Path]:
    """Different X-rays: the shipped samples, then NIH images from ../shared when present."""
    files = sorted((REPO / "assets" / "samples").glob("*.png"))
    nih = Path(os.environ.get("CXR_SHARED_DIR", REPO.parent / "shared" / "data")) / "nih-sample" / "images"
    if nih.is_dir():
        files = files[:2] + sorted(nih.glob("*.png"))[: max(0, count - 2)] + files[2:]
    return files[:count]
