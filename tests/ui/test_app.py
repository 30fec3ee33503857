"""Streamlit AppTest tests of every page, on the bundled demo model."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # importing TensorFlow and building the models is slow on 2 cores


@pytest.fixture(autouse=True)
def app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CXR_DB_URL", raising=False)
    monkeypatch.delenv("CXR_BUNDLE", raising=False)
    monkeypatch.chdir(REPO)
    # AppTest installs the page as sys.modules["__main__"] and leaves it there; restore it, or
    # later tests that spawn processes (which re-import __main__) would run a page instead
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    return tmp_path


def sample_bytes() -> tuple[str, bytes]:
    samples = sorted((REPO / "assets" / "samples").glob("*.png"))
    assert samples, "the repository ships sample X-rays in assets/samples"
    return samples[0].name, samples[0].read_bytes()


def run_review(upload: tuple[str, bytes, str]) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    at.file_uploader[0].set_value(upload)
    at.run()
    assert not at.exception, at.exception
    return at


def test_upload_shows_findings_heatmaps_and_demo_banner():
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    assert any("not for clinical use" in w.value for w in at.warning)
    assert len(at.dataframe) >= 1
    table = at.dataframe[0].value
    assert {"finding", "probability", "threshold", "agreement", "positive"} <= set(table.columns)
    assert table["positive"].tolist() == sorted(table["positive"].tolist(), reverse=True)
    # one overview image plus at least one heatmap (toggle 'all findings' to be sure)
    at.toggle[0].set_value(True)
    at.run()
    assert not at.exception
    assert len(at.get("image")) >= 1 + len(table)
    assert [b.label for b in at.get("download_button")] == ["Download report (PNG)", "Download report (PDF)"]


def test_uncertainty_and_member_toggles_add_panels():
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    at.toggle[0].set_value(True)  # every finding has a panel row
    at.run()
    base = len(at.get("image"))
    labels = len(at.dataframe[0].value)
    at.toggle[1].set_value(True)  # uncertainty: one more panel per finding
    at.toggle[2].set_value(True)  # each model's map: one more per member
    at.run()
    assert not at.exception, at.exception
    members = int(at.dataframe[0].value["agreement"][0].split("/")[1])
    assert len(at.get("image")) == base + labels * (1 + members)
    captions = [item.caption for img in at.get("image") for item in img.proto.imgs]
    assert captions.count("uncertainty (std)") == labels
    assert captions.count("ensemble mean") == labels


def test_sample_picker_works_without_upload():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.selectbox[0].select_index(1)
    at.run()
    assert not at.exception and len(at.dataframe) >= 1


@pytest.mark.parametrize("upload,needle", [
    (("notes.png", b"this is not an image", "image/png"), "not a PNG, JPEG or DICOM"),
    (("cut.png", None, "image/png"), "truncated"),
    (("flat.png", "flat", "image/png"), "blank"),
])
def test_bad_upload_shows_one_clear_message(upload, needle):
    name, content, mime = upload
    if content is None:
        content = sample_bytes()[1][:2000]
    elif content == "flat":
        content = cv2.imencode(".png", np.full((256, 256), 9, np.uint8))[1].tobytes()
    at = run_review((name, content, mime))
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and needle in errors[0], errors
    assert "Traceback" not in errors[0]


def test_feedback_is_stored_and_revisions_versioned(app_env):
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    at.toggle[0].set_value(True)  # all findings shown, so each has a decision
    at.run()
    at.text_input[0].input("<script>alert(1)</script>Dr Test")
    at.text_area[0].input("looks right")
    at.button[0].click()
    at.run()
    assert not at.exception
    assert any("version 1" in s.value for s in at.success)
    at.button[0].click()
    at.run()
    assert any("version 2" in s.value for s in at.success)
    from cxr_core.base.config import settings
    from cxr_core.review.feedback import FeedbackStore

    frame = FeedbackStore(settings().db_url).reviews_frame()
    assert frame["version"].tolist() == [1, 2]
    assert frame["reviewer"].iloc[0] == "<script>alert(1)</script>Dr Test"


def test_feedback_without_reviewer_is_refused():
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    at.button[0].click()
    at.run()
    assert any("reviewer" in e.value for e in at.error)


def test_metrics_page_renders_for_the_bundle():
    at = AppTest.from_file(str(REPO / "pages" / "1_Metrics.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert [m.label for m in at.metric][:2] == ["AUC (macro, CTP)", "F1 macro (CTP)"]
    assert len(at.get("plotly_chart")) >= 3
    table = at.dataframe[0].value
    assert {"best_member", "ensembles_beating_all_members", "CTP"} <= set(table.columns)


def test_feedback_and_models_pages_render():
    at = AppTest.from_file(str(REPO / "pages" / "2_Feedback.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and any("No reviews yet" in i.value for i in at.info)
    at = AppTest.from_file(str(REPO / "pages" / "3_Models.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.metric[0].label == "Findings"
    assert any("not for clinical use" in w.value for w in at.warning)


def test_review_page_runs_a_compiled_bundle_on_the_lite_engine(tmp_path, monkeypatch):
    """A bundle with TensorFlow Lite members (compile-bundle) is reviewed through them, and
    the Models page says so."""
    import shutil

    from cxr_core.base.config import settings
    from cxr_core.explain.engines import compile_bundle

    models = tmp_path / "models"
    shutil.copytree(settings().default_bundle_path, models / "compiled")
    compile_bundle(models / "compiled")
    monkeypatch.setenv("CXR_MODELS_DIR", str(models))
    monkeypatch.setenv("CXR_BUNDLE", "compiled")
    monkeypatch.setenv("CXR_ENGINE", "auto")
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    assert len(at.dataframe) >= 1
    at.toggle[0].set_value(True)
    at.run()
    assert not at.exception
    assert len(at.get("image")) >= 1 + len(at.dataframe[0].value)
    from ui_common import get_reviewer

    from cxr_core.modeling.bundle import Bundle

    members = len(Bundle.load(models / "compiled").archs)
    assert [e.kind for e in get_reviewer(str(models / "compiled")).engines] == ["lite"] * members
    page = AppTest.from_file(str(REPO / "pages" / "3_Models.py"), default_timeout=TIMEOUT)
    page.run()
    assert not page.exception
    assert any("yes (fast start)" in md.value for md in page.markdown)


def test_unknown_engine_setting_is_an_in_page_error(monkeypatch):
    from ui_common import get_reviewer

    get_reviewer.clear()  # the models are cached per process: load them again with the setting
    monkeypatch.setenv("CXR_ENGINE", "onnx")
    name, data = sample_bytes()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.file_uploader[0].set_value((name, data, "image/png"))
    at.run()
    assert not at.exception
    assert any("Unknown inference engine" in e.value for e in at.error)
