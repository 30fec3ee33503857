"""Seconds from a fresh `streamlit run app.py` process start to the first complete review in a
real browser (Debian chromium via playwright), and of the later reviews, for: the shipped
default bundle as shipped, the same bundle compiled (Lite engine), and a compiled
five-architecture bundle (the method's DenseNet201, EfficientNetB0, InceptionV3,
InceptionResNetV2, Xception; random weights, 54 labels, 224 px, thresholds that make 3 of
the 54 findings positive, as in a typical study).

Method: chromium is started first (a user's browser is already open). The clock starts when the
server process is spawned; the browser loads the Review page as soon as the server answers,
uploads a sample X-ray the moment the upload box shows, and the first review is complete when
the page shows that image's review (its SHA-256 prefix, the findings and the heatmaps) and the
script run has finished (reports are built when downloaded). Later reviews: another sample
uploaded one second after the previous review is on screen (a reader looks at it first), the
same end point. The server's CPU seconds (user + system, all threads)
are recorded too: on a busy shared machine they show what the start costs without the wait
for other processes. `python -m benchmarks.bench_app_start [default|tensorflow|compiled|five]`
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import REPO, write_result

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))
LATER_REVIEWS = 3
#: pause between a review on screen and the next upload (a reader reads the result); the browser
#: finishes painting meanwhile instead of competing with the next review for the 2 cores
READ_PAUSE_MS = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the server process has used so far: unlike wall
    time it hardly depends on what else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> float:
    return os.getloadavg()[0]


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _page_done(page, digest: str, timeout_ms: int = 600_000) -> None:
    """Wait until the review of the image with this SHA-256 prefix is on the page (its
    findings table and heatmaps) and the script run has finished (no stale element left)."""
    page.wait_for_function(
        """(digest) => document.body.innerText.includes(digest)
            && document.body.innerText.includes('positive finding(s) of')""",
        arg=digest, timeout=timeout_ms, polling=25)
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            return app && app.getAttribute('data-test-script-state') === 'notRunning'
                && !document.querySelector('[data-stale="true"]');
        }""", timeout=timeout_ms, polling=25)


def first_and_later(models_dir: Path, bundle: str, engine: str = "auto") -> dict:
    """One fresh server: seconds to the first complete review, then later reviews."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "CXR_MODELS_DIR": str(models_dir), "CXR_BUNDLE": bundle,
           "CXR_ENGINE": engine, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CXR_DATA_DIR": tempfile.mkdtemp(prefix="cxr-bench-data-")}
    env.pop("CXR_DB_URL", None)
    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.address",
             "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],  # as `make run`
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1):
                        break
                except OSError:
                    if time.perf_counter() - start > 300:
                        raise RuntimeError("streamlit did not start within 300 s") from None
                    time.sleep(0.05)
            server_up = time.perf_counter() - start
            page.goto(url, wait_until="domcontentloaded")
            page.locator("input[type=file]").wait_for(state="attached", timeout=300_000)
            page_shown = time.perf_counter() - start
            page.locator("input[type=file]").set_input_files(str(SAMPLES[0]))
            _page_done(page, _digest(SAMPLES[0]))
            first = time.perf_counter() - start
            first_cpu = _cpu_seconds(proc.pid)
            load = _load()
            later, later_cpu = [], []
            for i in range(LATER_REVIEWS):
                sample = SAMPLES[1 + i % (len(SAMPLES) - 1)]
                page.wait_for_timeout(READ_PAUSE_MS)  # the reader looks at the result first
                t0, c0 = time.perf_counter(), _cpu_seconds(proc.pid)
                page.locator("input[type=file]").set_input_files(str(sample))
                _page_done(page, _digest(sample))
                later.append(time.perf_counter() - t0)
                later_cpu.append(_cpu_seconds(proc.pid) - c0)
        finally:
            browser.close()
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"server_up_s": round(server_up, 2), "page_shown_s": round(page_shown, 2),
            "first_complete_review_s": round(first, 2),
            "later_review_median_s": round(statistics.median(later), 2),
            "later_reviews_s": [round(v, 2) for v in later],
            "server_cpu_to_first_review_s": round(first_cpu, 2),
            "server_cpu_later_review_median_s": round(statistics.median(later_cpu), 2),
            "load_average_1min_at_first_review": round(load, 1)}


def _compiled_copy(source: Path, target_dir: Path) -> Path:
    import shutil

    from cxr_core.explain.engines import compile_bundle

    target = target_dir / source.name
    shutil.copytree(source, target)
    compile_bundle(target)
    return target


def _five_architecture_bundle(target_dir: Path, k: int = 54) -> Path:
    """A compiled bundle of the method's five architectures (random weights) in target_dir."""
    import keras
    import numpy as np

    from cxr_core.explain.engines import compile_bundle
    from cxr_core.modeling.bundle import write_bundle
    from cxr_core.modeling.model_building import build_classifier
    from cxr_core.modeling.registry import METHOD_ARCHITECTURES

    labels = [f"l{i}" for i in range(k)]
    keras.utils.set_random_seed(0)
    members = [build_classifier(a, labels, 224, weights=None, augment=False) for a in METHOD_ARCHITECTURES]
    rng = np.random.default_rng(0)
    path = write_bundle(target_dir / "five", members, labels, "bench", rng.random((5, 40, k)),
                        rng.integers(0, 2, (40, k)), training={})
    compile_bundle(path)
    _typical_positives(path)
    return path


def _typical_positives(path: Path, positives: int = 3) -> None:
    """Random weights give every X-ray nearly the same probabilities, and F1 thresholds chosen
    on random validation data call most of the 54 labels positive. A PadChest study has a few
    findings, and what the page draws grows with the positives, so the ensemble thresholds are
    set to make `positives` labels positive on the samples (the one per-label rule: the labels
    of highest mean probability on the samples are positive)."""

    import numpy as np

    from cxr_core.modeling.bundle import Bundle
    from cxr_core.review.pipeline import Reviewer

    reviewer = Reviewer.from_paths(str(path))
    probs = np.stack([reviewer.review_one(s.read_bytes(), filename=s.name).probs for s in SAMPLES])
    mean = probs.mean(axis=0)
    top = set(np.argsort(-mean)[:positives].tolist())
    thresholds = [float(probs[:, j].min() - 1e-4) if j in top else float(min(probs[:, j].max() + 1e-4, 0.9999))
                  for j in range(probs.shape[1])]
    bundle = Bundle.load(path)
    entry = bundle.threshold_entry()
    bundle.set_thresholds(bundle.threshold_method, {**entry, "ensemble": thresholds})
    bundle.save()


def main(which: list[str] | None = None) -> int:
    from cxr_core.base.config import settings

    which = which or ["default", "tensorflow", "five"]
    default = settings().default_bundle_path
    result: dict = {"method": __doc__.split("Method: ", 1)[1].split("`python")[0].strip(),
                    "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "default" in which:
            result["default_bundle"] = {"bundle": default.name, "engine": "auto",
                                        **first_and_later(default.parent, default.name)}
        if "tensorflow" in which:  # the same bundle on the TensorFlow engine (what Grad-CAM research uses)
            result["default_bundle_tensorflow"] = {"bundle": default.name, "engine": "tensorflow",
                                                   **first_and_later(default.parent, default.name,
                                                                     engine="tensorflow")}
        if "compiled" in which:  # a bundle shipped without Lite members, compiled here first
            compiled = _compiled_copy(default, tmp / "compiled")
            result["default_bundle_compiled"] = {"bundle": default.name, "engine": "lite",
                                                 **first_and_later(compiled.parent, compiled.name)}
        if "five" in which:
            five = _five_architecture_bundle(tmp / "five-models")
            result["five_architectures_compiled"] = {"engine": "lite", "labels": 54,
                                                     **first_and_later(five.parent, five.name)}
    write_result("app_start", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
