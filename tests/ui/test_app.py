"""Streamlit AppTest tests of every page, on the bundled demo model."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.usefixtures("app_env")  # tests/ui/conftest.py

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # importing TensorFlow and building the models is slow on 2 cores




def sample_bytes(index: int = 0) -> tuple[str, bytes]:
    samples = sorted((REPO / "assets" / "samples").glob("*.png"))
    assert samples, "the repository ships sample X-rays in assets/samples"
    return samples[index].name, samples[index].read_bytes()


def run_review(upload: tuple[str, bytes, str], query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    at.run()
    assert not at.exception
    if upload is not None:
        at.file_uploader[0].set_value(upload)
        at.run()
        assert not at.exception, at.exception
    return at


def answers(at: AppTest) -> list:
    """The feedback form's answer radios (the main page's; the sidebar holds the heatmap choice)."""
    return list(at.main.radio)


def toggle(at: AppTest, label: str) -> AppTest:
    next(t for t in at.toggle if t.label == label).set_value(True)
    return at.run()


def images(at: AppTest) -> list:
    return [item for img in at.get("image") for item in img.proto.imgs]


def test_upload_shows_findings_heatmaps_colour_scale_and_demo_banner():
    from cxr_core.explain.report import DEMO_DISCLAIMER
    from ui.common import DEMO_BANNER

    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    assert any("not for clinical use" in w.value for w in at.warning)
    assert DEMO_BANNER == DEMO_DISCLAIMER  # the report carries the app's own disclaimer
    table = at.dataframe[0].value
    # the demo bundle carries reading points: each finding's sensitivity / specificity on validation
    assert list(table.columns) == ["finding", "group", "probability", "threshold",
                                   "sens. / spec. (val)", "models positive", "call"]
    others = at.session_state["review"].normal_with_findings()
    contradiction = [w.value for w in at.warning if "together with" in w.value]
    assert contradiction == ([f"The models call 'normal' together with {', '.join(others)}, which "
                              f"'normal' excludes: read these findings as uncertain."] if others else [])
    calls = table["call"].str.startswith("positive").tolist()
    assert calls == sorted(calls, reverse=True)  # positives first
    assert all(round(p, 3) == p for p in table["probability"])  # one precision everywhere
    assert table["models positive"].str.fullmatch(r"\d+/\d+").all()
    positives = sum(calls)
    titles = [m.value for m in at.markdown if "models positive," in m.value]
    assert len(titles) == positives  # one map per positive finding by default
    for title in titles:
        probability = re.search(r"p=(\d\.\d+)", title).group(1)
        assert len(probability) == 5 and float(probability) in table["probability"].tolist()
    captions = [i.caption for i in images(at)]
    assert captions[0].startswith("lungs (cyan), area added below and between them (magenta)")
    assert captions.count("ensemble mean") == positives
    if positives:  # the colour scale is shown with the maps
        assert len(images(at)) == 1 + 1 + positives
    assert [b.label for b in at.get("download_button")] == ["Download report (PDF)",
                                                            "Download report (PNG)"]
    assert any(name.replace("_", "\\_").replace(".", "\\.") in m.value for m in at.markdown)


def test_toggles_add_panels_and_never_build_a_report(monkeypatch):
    import cxr_core.explain.report as report

    def refuse(*args, **kwargs):
        raise AssertionError("a report was built before its download was asked for")

    monkeypatch.setattr(report, "report_pdf", refuse)
    monkeypatch.setattr(report, "report_png", refuse)
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    toggle(at, "Show all findings")  # every finding has a panel row
    base = len(images(at))
    labels = len(at.dataframe[0].value)
    toggle(at, "Uncertainty maps")
    toggle(at, "Each model's map")
    assert not at.exception, at.exception
    members = int(at.dataframe[0].value["models positive"][0].split("/")[1])
    assert len(images(at)) == base + labels * (1 + members)
    captions = [i.caption for i in images(at)]
    assert captions.count("uncertainty (std)") == labels
    assert captions.count("ensemble mean") == labels


def test_state_survives_a_reload_of_the_tab():
    """Image, toggles, answers and the draft comment come back for the same tab token."""
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    toggle(at, "Uncertainty maps")
    answers(at)[0].set_value("disagree")
    at.text_area[0].input("draft, not submitted")
    at.text_input[0].input("Dr Reload")
    at.run()
    token = at.query_params["tab"]
    token = token[0] if isinstance(token, list) else token
    again = run_review(None, query={"tab": token})  # a reload: a new session, the same URL
    assert len(again.dataframe) == 1
    assert any("(upload, SHA-256" in m.value for m in again.markdown)
    assert next(t for t in again.toggle if t.label == "Uncertainty maps").value is True
    assert answers(again)[0].value == "disagree"
    assert again.text_area[0].value == "draft, not submitted"
    assert any("Draft kept for this tab (20 characters)" in c.value for c in again.caption)
    assert again.text_input[0].value == "Dr Reload"
    fresh = run_review(None, query={"tab": "unknown-token"})  # another tab starts empty
    assert any("Upload an X-ray" in i.value for i in fresh.info)


def test_answers_of_earlier_images_do_not_pile_up_in_the_session():
    """Reading image after image in one tab keeps one answer per finding, under the same widget
    keys for every image (so the browser updates the radios in place), cleared when the image
    changes; the tab's kept state does not grow with the images read; comments stay per image."""
    at = run_review(None)
    key_sets = []
    for index in range(3):
        name, data = sample_bytes(index)
        at.file_uploader[0].set_value((name, data, "image/png"))
        at.run()
        assert not at.exception
        assert all(r.value is None for r in answers(at)), "an earlier image's answers were carried over"
        answers(at)[0].set_value("disagree")
        at.text_area[0].input(f"comment {index}")
        at.run()
        assert answers(at)[0].value == "disagree"
        key_sets.append({str(k) for k in at.session_state.keys() if "_decision_" in str(k)})
    assert key_sets[0] == key_sets[1] == key_sets[2]
    assert len(key_sets[0]) == len(at.session_state["review"].labels)
    kept = at.session_state["kept"]["widgets"]
    assert len([n for n in kept if "_decision_" in n]) == len(key_sets[0])
    assert len([n for n in kept if n.endswith("_comment")]) == 3


def test_one_source_at_a_time_and_its_name_shown_with_the_results():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.selectbox[0].select_index(1)
    at.run()
    assert not at.exception and len(at.dataframe) == 1
    sample = at.selectbox[0].value
    assert any(sample.split("_")[0] in m.value and "(sample" in m.value for m in at.markdown)
    name, data = sample_bytes(2)
    at.file_uploader[0].set_value(("my_upload.png", data, "image/png"))
    at.run()
    assert at.selectbox[0].value == "(none)"  # the upload replaced the sample
    assert any("my\\_upload" in m.value and "(upload" in m.value for m in at.markdown)
    at.selectbox[0].select_index(2)
    at.run()
    # the sample replaced the upload (the uploader keeps showing the file it took: its key is
    # fixed, so that a file chosen during a review is never lost)
    assert any(at.selectbox[0].value.split("_")[0] in m.value and "(sample" in m.value
               for m in at.markdown)
    assert not any("my\\_upload" in m.value for m in at.markdown)
    at.run()  # the uploader still holds the same file: it is not taken again
    assert any("(sample" in m.value for m in at.markdown)
    next(b for b in at.button if b.label == "Clear image").click()
    at.run()
    assert any("Upload an X-ray" in i.value for i in at.info) and not at.dataframe


def test_upload_limit_is_one_number_in_mib(monkeypatch):
    import tomllib

    from cxr_core.base.config import settings

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == settings().max_upload_mb
    monkeypatch.setenv("CXR_MAX_UPLOAD_MB", "1")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert at.file_uploader[0].proto.max_upload_size_mb == 1  # what the uploader enforces
    big = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (1100, 1100), np.uint8))[1]
    assert 2**20 < len(big) < 2 * 2**20
    at.file_uploader[0].set_value(("big.png", big.tobytes(), "image/png"))
    at.run()
    errors = [e.value for e in at.error]
    assert errors == [f"The file is {len(big) / 2**20:.1f} MB; the limit is 1 MB."]


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


def submit(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Submit feedback").click()
    return at.run()


def test_feedback_has_no_default_answer_and_no_duplicate_versions(app_env):
    from cxr_core.base.config import settings
    from cxr_core.review.feedback import FeedbackStore

    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    labels = len(at.dataframe[0].value)
    assert len(answers(at)) == labels  # every finding, whatever the display toggles
    assert all(r.value is None for r in answers(at))  # nothing pre-selected
    at.text_input[0].input("<script>alert(1)</script>Dr Test")
    submit(at)
    assert any("unanswered" in e.value for e in at.error)  # an unread submit stores nothing
    next(b for b in at.button if b.label.startswith("Agree with the model")).click()
    at.run()
    assert all(r.value == "agree" for r in answers(at))
    answers(at)[-1].set_value("disagree")
    at.text_area[0].input("looks right")
    submit(at)
    assert not at.exception
    assert any("version 1" in s.value for s in at.success)
    submit(at)  # the same answers again: no new version
    assert any("Nothing changed since version 1" in i.value for i in at.info)
    at.text_area[0].input("looks right, revised")
    submit(at)
    assert any("version 2" in s.value for s in at.success)
    frame = FeedbackStore(settings().db_url).reviews_frame()
    assert frame["version"].tolist() == [1, 2]
    assert frame["reviewer"].iloc[0] == "<script>alert(1)</script>Dr Test"
    assert len(frame["decisions"].iloc[0]) == labels


def test_feedback_without_reviewer_is_refused():
    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    next(b for b in at.button if b.label.startswith("Agree with the model")).click()
    at.run()
    submit(at)
    assert any("reviewer" in e.value for e in at.error)


def test_metrics_page_renders_for_the_bundle():
    at = AppTest.from_file(str(REPO / "app_pages" / "1_Metrics.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert [m.label for m in at.metric][:2] == ["AUC (macro, CTP)", "F1 macro (CTP)"]
    assert len(at.get("plotly_chart")) >= 3
    table = at.dataframe[0].value
    assert {"best_member", "ensembles_beating_all_members", "CTP"} <= set(table.columns)


def test_feedback_and_models_pages_render():
    at = AppTest.from_file(str(REPO / "app_pages" / "2_Feedback.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and any("No reviews yet" in i.value for i in at.info)
    at = AppTest.from_file(str(REPO / "app_pages" / "3_Models.py"), default_timeout=TIMEOUT)
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
    toggle(at, "Show all findings")
    assert not at.exception
    assert len(images(at)) >= 1 + len(at.dataframe[0].value)
    from ui.common import get_reviewer

    from cxr_core.modeling.bundle import Bundle

    members = len(Bundle.load(models / "compiled").archs)
    assert [e.kind for e in get_reviewer(str(models / "compiled")).engines] == ["lite"] * members
    page = AppTest.from_file(str(REPO / "app_pages" / "3_Models.py"), default_timeout=TIMEOUT)
    page.run()
    assert not page.exception
    assert any("yes (fast start)" in md.value for md in page.markdown)


def test_unknown_engine_setting_is_an_in_page_error(monkeypatch):
    from ui.common import get_reviewer

    get_reviewer.clear()  # the models are cached per process: load them again with the setting
    monkeypatch.setenv("CXR_ENGINE", "onnx")
    name, data = sample_bytes()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.file_uploader[0].set_value((name, data, "image/png"))
    at.run()
    assert not at.exception
    assert any("Unknown inference engine" in e.value for e in at.error)


def test_the_review_page_opens_the_zoomable_viewer_and_keeps_it_open():
    """The viewer of the Worklist (zoom, pan, window/level, one finding's map) on the Review
    page, behind one toggle that stays on for the next image."""
    import json

    at = run_review(sample_bytes(0) + ("image/png",))
    assert not at.exception and not at.get("plotly_chart")  # closed by default: nothing to draw
    next(t for t in at.toggle if t.label == "Zoomable viewer").set_value(True)
    at.run()
    assert not at.exception
    chart = at.get("plotly_chart")[0]
    spec, config = json.loads(chart.proto.spec), json.loads(chart.proto.config)
    assert config["scrollZoom"] is True and spec["layout"]["dragmode"] == "pan"
    height, width = at.session_state["review"].image.original_size
    assert spec["layout"]["xaxis"]["range"] == [-0.5, width - 0.5]
    assert any(s.label.startswith("Window centre") for s in at.slider)
    name, data = sample_bytes(1)
    at.file_uploader[0].set_value((name, data, "image/png"))
    at.run()
    assert not at.exception and at.get("plotly_chart")  # still open for the next image


def test_a_segmentation_fallback_is_named_with_its_reason():
    """The overview and the viewer share one warning for a fallback, with the segmenter's reason."""

    def page():
        from types import SimpleNamespace

        from ui.common import fallback_warning

        mask = SimpleNamespace(reason="no lung found")
        fallback_warning(SimpleNamespace(pre=SimpleNamespace(fallback=True, mask=mask)))

    at = AppTest.from_function(page, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert [w.value for w in at.warning] == [
        "Lung segmentation fell back to the whole image (no lung found); findings may be less reliable."]


def test_a_review_is_drawn_only_under_the_image_it_was_made_from():
    """The page checks the SHA-256 the review carries against the source it shows: a review of
    another image (a run stopped half-way) is never drawn; the page says it is still working."""
    name, data = sample_bytes(0)
    at = run_review((name, data, "image/png"))
    first_review = at.session_state["review"]
    assert any(f"SHA-256 `{first_review.image.sha256[:12]}`" in m.value and "positive finding(s)" in m.value
               for m in at.markdown)
    other_name, other = sample_bytes(1)
    at.file_uploader[0].set_value((other_name, other, "image/png"))
    at.run()
    assert at.session_state["review"].image.sha256 != first_review.image.sha256
    at.session_state["review"] = first_review  # paired with the second source's key
    at.run()
    assert not at.exception
    assert any("Still working on" in i.value for i in at.info)
    assert not at.dataframe and not any("positive finding(s)" in m.value for m in at.markdown)


def test_the_threshold_method_is_explained_where_it_appears():
    from ui.glossary import threshold_words

    name, data = sample_bytes(0)
    at = run_review((name, data, "image/png"))
    line = next(m for m in at.markdown if "positive finding(s) of" in m.value)
    review = at.session_state["review"]
    assert f"thresholds: {review.threshold_method}" in line.value
    assert line.proto.help == threshold_words(review.threshold_method)
    assert threshold_words("f1+isotonic").endswith("on isotonic-calibrated probabilities")


def test_an_expert_adds_findings_the_model_does_not_list_and_the_feedback_page_shows_them():
    from cxr_core.base.config import settings
    from cxr_core.review.feedback import FeedbackStore
    from ui.common import padchest_terms

    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    next(b for b in at.button if b.label.startswith("Agree with the model")).click()
    at.run()
    at.text_input[0].input("Dr Added")
    next(t for t in at.text_input if t.label.startswith("Other findings (free text")).input(
        "rib fracture; old granuloma")
    terms = padchest_terms()  # the PadChest tree when ../shared has it (it is not shipped)
    picker = next(m for m in at.multiselect if m.label == "Other findings (PadChest terms)")
    if terms:
        picker.set_value([terms[0]])
    submit(at)
    assert any("version 1" in s.value for s in at.success), [e.value for e in at.error]
    stored = FeedbackStore(settings().db_url).reviews_frame()["other_findings"].iloc[0]
    expected = ([{"finding": terms[0], "source": "padchest"}] if terms else []) + [
        {"finding": "rib fracture", "source": "free text"}, {"finding": "old granuloma", "source": "free text"}]
    assert stored == expected
    page = AppTest.from_file(str(REPO / "app_pages" / "2_Feedback.py"), default_timeout=TIMEOUT)
    page.run()
    assert not page.exception
    rows = page.dataframe[0].value
    assert "rib fracture, old granuloma" in rows["Other findings (not in the model)"].iloc[0]


def test_previous_and_next_study_walk_the_images_this_tab_reviewed():
    from ui.shortcuts import SHORTCUTS

    first_name, first = sample_bytes(0)
    second_name, second = sample_bytes(1)
    at = run_review((first_name, first, "image/png"))
    at.file_uploader[0].set_value((second_name, second, "image/png"))
    at.run()

    def shown() -> str:
        return at.session_state["review"].image.sha256

    def button(label: str):
        return next(b for b in at.button if b.label == label)

    assert shown() == hashlib.sha256(second).hexdigest()
    assert button("Next study ▶").disabled and not button("◀ Previous study").disabled
    button("◀ Previous study").click()
    at.run()
    assert shown() == hashlib.sha256(first).hexdigest()
    assert any(first_name.split("_")[0] in m.value and "Reviewing" in m.value for m in at.markdown)
    button("Next study ▶").click()
    at.run()
    assert shown() == hashlib.sha256(second).hexdigest()
    # the shortcuts are listed in a help popover
    assert any(p.proto.popover.label.endswith("Keyboard shortcuts") for p in at.get("popover"))
    listed = " ".join(m.value for m in at.markdown)
    assert all(f"**{key}**: {what}" in listed for key, what in SHORTCUTS.items())


def test_the_heatmap_method_is_the_bundles_choice_and_can_be_switched_in_the_sidebar():
    """The shipped bundle chose occlusion maps (measured better on radiologists' boxes); the
    sidebar offers the method's Grad-CAM too, the review is computed again with it, and the
    caption above the maps names the method shown."""
    from cxr_core.explain.occlusion import MAP_METHOD_DESCRIPTIONS

    name, data = sample_bytes()
    at = run_review((name, data, "image/png"))
    radio = next(r for r in at.radio if r.label == "Heatmaps")
    assert radio.value == "occlusion" and radio.options[0].endswith("(this model's choice)")
    assert radio.options[1].startswith("Grad-CAM")  # written as the method's name, not "Grad-cam"
    assert at.session_state["review"].map_method == "occlusion"
    assert any(c.value == MAP_METHOD_DESCRIPTIONS["occlusion"] for c in at.caption)
    occlusion_maps = at.session_state["review"].mean_maps.copy()
    occlusion_timings = dict(at.session_state["review"].timings)
    radio.set_value("gradcam")
    at.run()
    assert not at.exception
    review = at.session_state["review"]
    assert review.map_method == "gradcam" and review.image.sha256 == hashlib.sha256(data).hexdigest()
    assert any(c.value == MAP_METHOD_DESCRIPTIONS["gradcam"] for c in at.caption)
    assert not np.allclose(review.mean_maps, occlusion_maps)
    radio = next(r for r in at.radio if r.label == "Heatmaps")
    radio.set_value("occlusion")
    at.run()
    back = at.session_state["review"]
    assert back.map_method == "occlusion" and np.allclose(back.mean_maps, occlusion_maps)
    assert back.timings == occlusion_timings  # the kept review, not computed again
