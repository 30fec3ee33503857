"""The Worklist page and the viewer: AppTest on the shipped default bundle, then a real browser."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.review.test_worklist import mixed_files
from tests.ui.test_browser import ARGS, SETTLED, _nav_titles, server  # noqa: F401  (the streamlit server fixture)

pytestmark = pytest.mark.usefixtures("app_env")  # tests/ui/conftest.py

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "app_pages" / "0_Worklist.py")
TIMEOUT = 300




def reviewed_worklist(files: list[tuple[str, bytes, str]] | None = None) -> AppTest:
    """The page after uploading `files` (default: the five mixed files) and waiting for the
    background review."""
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    at.file_uploader[0].set_value(files if files is not None else
                                  [(n, d, "application/octet-stream") for n, d in mixed_files()])
    at.run()
    deadline = time.time() + TIMEOUT
    while any("Reviewing" in p.proto.text for p in at.get("progress")) and time.time() < deadline:
        time.sleep(1)
        at.run()
    assert not at.exception, at.exception
    return at


def widget(at: AppTest, kind: str, label: str):
    """The one widget of a kind whose label starts with `label`."""
    return next(w for w in getattr(at, kind) if w.label.startswith(label))


def figure(at: AppTest) -> tuple[dict, dict]:
    chart = at.get("plotly_chart")[0]
    return json.loads(chart.proto.spec), json.loads(chart.proto.config)


def shown_image(spec: dict) -> np.ndarray:
    """The RGB image the viewer sends to the browser (decoded from its data URI)."""
    uri = spec["data"][0]["source"]
    raw = base64.b64decode(uri.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def current_review(at: AppTest):
    from ui.common import worklist_by_token

    worklist = worklist_by_token(at.query_params["worklist"])
    return worklist, worklist.item(worklist.current).review


def test_five_mixed_files_listed_failed_and_ordered_then_next_and_reload():
    at = reviewed_worklist()
    table = at.dataframe[0].value
    assert table["status"].tolist() == ["ready"] * 4 + ["failed"]
    assert table.loc[4, "file"] == "broken.png"
    assert table.loc[4, "top findings"] == "The file is not a PNG, JPEG or DICOM image."
    scores = table["triage score"].tolist()[:4]
    assert scores == sorted(scores, reverse=True)
    assert {"file", "top findings", "triage score", "why", "segmentation fallback", "read"} <= set(table.columns)
    assert set(table["read"]) == {"no"}
    # the most urgent study is open first; "next" marks it seen (not reported) and moves down
    assert at.selectbox(key="worklist_open").value == table.loc[0, "file"]
    widget(at, "button", "Reviewed, next").click()
    at.run()
    assert at.selectbox(key="worklist_open").value == table.loc[1, "file"]
    assert at.dataframe[0].value["read"].tolist()[:2] == ["seen", "no"]
    assert any("0 reported by a reader (feedback sent), 1 seen without a report" in c.value
               for c in at.caption)
    assert at.dataframe[0].value["open"].tolist()[:3] == ["", "▶", ""]  # the open study is marked
    # picking a study opens it
    at.selectbox(key="worklist_open").set_value(table.loc[3, "file"])
    at.run()
    assert any(table.loc[3, "file"] in md.value for md in at.subheader)
    # the Review page's warning when 'normal' is called with findings it excludes, here too
    others = current_review(at)[1].normal_with_findings()
    assert [w.value for w in at.warning if "together with" in w.value] == (
        [f"The models call 'normal' together with {', '.join(others)}, which 'normal' excludes: "
         f"read these findings as uncertain."] if others else [])
    # a reload of the page (same URL, new session) finds the same list
    token = at.query_params["worklist"]
    again = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    again.query_params["worklist"] = token
    again.run()
    assert not again.exception
    reloaded = again.dataframe[0].value
    assert reloaded["file"].tolist() == table["file"].tolist()
    assert reloaded["read"].tolist()[:1] == ["seen"]


def test_viewer_window_heatmap_and_zoom_are_wired():
    at = reviewed_worklist()
    spec, config = figure(at)
    assert config["scrollZoom"] is True and spec["layout"]["dragmode"] == "pan"
    _, review = current_review(at)
    height, width = review.image.original_size
    # full resolution: the picture has the X-ray's own pixel size, in its own coordinates
    assert shown_image(spec).shape[:2] == (height, width)
    assert spec["layout"]["xaxis"]["range"] == [-0.5, width - 0.5]
    names = [trace.get("name") for trace in spec["data"]]
    # the same outline as the Review page's picture: lungs, the area added below them, the box
    assert names == ["x-ray", "area added below and between the lungs", "lung outline", "crop box"]
    # heatmap off and a narrow window: the picture is the windowed X-ray, grey
    widget(at, "toggle", "Heatmap").set_value(False)
    widget(at, "slider", "Window centre").set_value(0.4)
    widget(at, "slider", "Window width").set_value(0.2)
    widget(at, "toggle", "Lung outline").set_value(False)
    at.run()
    spec, _ = figure(at)
    picture = shown_image(spec).astype(float)
    expected = np.clip((review.image.pixels - 0.3) / 0.2, 0, 1) * 255
    assert np.abs(picture[..., 0] - expected).max() <= 1.0
    assert (picture[..., 0] == picture[..., 1]).all()  # no colour without the heatmap
    assert [trace.get("name") for trace in spec["data"]] == ["x-ray"]
    # heatmap on for the chosen finding: colour appears where its map is hot
    widget(at, "toggle", "Heatmap").set_value(True)
    label = review.labels[int(np.argmax([review.heatmap_original(k).max() for k in range(len(review.labels))]))]
    widget(at, "selectbox", "Heatmap of").set_value(label)
    at.run()
    coloured = shown_image(figure(at)[0]).astype(int)
    heat = review.heatmap_original(review.labels.index(label))
    hot = heat > 0.8
    assert hot.any()
    spread = np.abs(coloured[..., 0] - coloured[..., 2])
    assert spread[hot].mean() > spread[heat == 0].mean() + 10
    # reset brings back the starting window (the DICOM's VOI window, else the whole range)
    from ui.viewer import default_window

    centre, width = default_window(review)
    widget(at, "button", "Reset window").click()
    at.run()
    assert widget(at, "slider", "Window width").value == pytest.approx(min(width, 2.0), abs=1e-3)
    assert widget(at, "slider", "Window centre").value == pytest.approx(centre, abs=1e-3)


def test_dicom_study_starts_at_its_voi_window_and_gives_dicom_results(monkeypatch):
    at = reviewed_worklist()
    at.selectbox(key="worklist_open").set_value("study.dcm")
    at.run()
    _, review = current_review(at)
    assert review.image.window is not None
    centre = widget(at, "slider", "Window centre").value
    width = widget(at, "slider", "Window width").value
    assert centre == pytest.approx(review.image.window[0], abs=1e-3)
    assert width == pytest.approx(min(review.image.window[1], 2.0), abs=1e-3)
    at.button(key="worklist_prepare").click()
    at.run()
    assert not at.exception
    buttons = {b.label: b for b in at.get("download_button")}
    assert {"Report (PNG)", "Report (PDF)", "Findings (DICOM SR)",
            "Report (DICOM Secondary Capture)"} <= set(buttons)
    # named by the image hash, never after the upload ("study.dcm"): the names the page
    # hands to Streamlit's media store with the downloads' bytes
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    names = []
    original = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        names.append(filename)
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    at.run()
    short = review.image.sha256[:12]
    assert {f"cxr_report_{short}.png", f"cxr_report_{short}.pdf", f"cxr_findings_sr_{short}.dcm",
            f"cxr_report_sc_{short}.dcm"} <= set(names)
    assert not any("study" in (name or "") for name in names)


def test_feedback_from_the_worklist_is_stored_and_marks_the_study_read(app_env):
    at = reviewed_worklist()
    worklist, review = current_review(at)
    at.text_input[0].input("Dr Worklist")
    at.text_area[0].input("read from the worklist")
    # no default answers: a submit with unanswered findings is refused and stores nothing
    widget(at, "button", "Submit feedback").click()
    at.run()
    assert any("Answer every finding" in e.value for e in at.error)
    assert not any("version 1" in s.value for s in at.success)
    answers = [r for r in at.radio if "(model: " in r.label]
    assert len(answers) == len(review.labels)  # every finding, whatever the display toggles
    for radio in answers:
        radio.set_value("agree")
    widget(at, "button", "Submit feedback").click()
    at.run()
    assert not at.exception
    assert any("version 1" in s.value for s in at.success)
    from cxr_core.base.config import settings
    from cxr_core.review.feedback import FeedbackStore

    frame = FeedbackStore(settings().db_url).reviews_frame()
    assert frame["reviewer"].tolist() == ["Dr Worklist"]
    assert frame["image_sha256"].iloc[0] == review.image.sha256
    assert worklist.item(worklist.current).reported


# --- a real browser ----------------------------------------------------------------------------

SCREENSHOTS = Path(os.environ["CXR_SCREENSHOT_DIR"]) if os.environ.get("CXR_SCREENSHOT_DIR") else None


def _plot_state(page) -> dict:
    return page.evaluate("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        const source = plot.data[0].source;
        let hash = 0;
        for (let i = 0; i < source.length; i++) { hash = (hash * 31 + source.charCodeAt(i)) | 0; }
        return {x: plot._fullLayout.xaxis.range, hash: hash};
    }""")


def test_worklist_viewer_and_feedback_in_a_real_browser(server, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, server_tmp = server
    inputs = []
    for name, data in mixed_files():
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        inputs.append(str(path))
    shots = SCREENSHOTS or tmp_path
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{url}/Worklist", wait_until="domcontentloaded")
            page.get_by_text("Upload X-rays (or a zip of them)").wait_for(timeout=180_000)
            # opened by its URL, the sidebar still names every page as on the Review page
            nav = page.locator('[data-testid="stSidebarNav"] a')
            assert [t.strip() for t in nav.all_inner_texts()] == _nav_titles()
            page.locator("input[type=file]").set_input_files(inputs)
            page.get_by_text("4 analysed, 0 refused by the input check, 1 failed").wait_for(timeout=300_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            first = page.locator("h3").first.inner_text()  # the most abnormal study opens first
            # clicking the second row's selector (rows are 35 px, below a 35 px header) opens it
            box = page.locator("[data-testid=stDataFrame]").first.bounding_box()
            page.mouse.click(box["x"] + 15, box["y"] + 35 * 2.5)
            page.wait_for_function(
                f"() => document.querySelector('h3') && document.querySelector('h3').innerText !== {first!r}",
                timeout=60_000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "worklist.png"), full_page=False)
            # zoom: the mouse wheel over the image narrows the visible x range
            plot = page.locator(".js-plotly-plot").first
            plot.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            before = _plot_state(page)
            pbox = plot.bounding_box()
            assert pbox["y"] + pbox["height"] / 2 < 1100
            page.mouse.move(pbox["x"] + pbox["width"] / 2, pbox["y"] + pbox["height"] / 2)
            page.mouse.wheel(0, -400)
            page.wait_for_timeout(1000)
            after = _plot_state(page)
            assert after["x"][1] - after["x"][0] < before["x"][1] - before["x"][0]
            assert page.locator(".modebar-btn[data-title='Zoom in']").count() == 1
            # window width: the slider sends a new picture to the plot
            slider = page.locator("[data-testid=stSlider]").filter(has_text="Window width") \
                .locator("input[type=range]")
            start_value = slider.input_value()
            slider.focus()
            for _ in range(40):
                page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "() => document.querySelector('[data-testid=stStatusWidget]') === null", timeout=60_000)
            page.wait_for_timeout(3000)
            assert float(slider.input_value()) < float(start_value)
            assert _plot_state(page)["hash"] != after["hash"]
            # a click on the findings table's second row shows that finding's map
            caption = page.locator("[data-testid=stCaptionContainer]").filter(has_text="Scroll to zoom")
            title_before = caption.inner_text()  # "<finding>: p=..., n/m models, ... Scroll to zoom"
            findings_table = page.locator("[data-testid=stDataFrame]").nth(1)
            findings_table.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            table_box = findings_table.bounding_box()
            picture_before = _plot_state(page)["hash"]
            page.mouse.click(table_box["x"] + 15, table_box["y"] + 35 * 2.5)
            page.wait_for_function(
                "(before) => Array.from(document.querySelectorAll('[data-testid=stCaptionContainer]'))"
                ".some(e => e.innerText.includes('Scroll to zoom') && e.innerText !== before)",
                arg=title_before, timeout=60_000)
            page.wait_for_timeout(3000)
            assert _plot_state(page)["hash"] != picture_before
            page.mouse.dblclick(pbox["x"] + pbox["width"] / 2, pbox["y"] + pbox["height"] / 2)
            page.wait_for_timeout(1000)
            viewer = page.locator("[data-testid=stHorizontalBlock]").filter(has=plot).last
            viewer.screenshot(path=str(shots / "viewer.png"))
            # feedback from the worklist
            page.get_by_label("Reviewer name").fill("Dr Browser Worklist")
            page.get_by_label("Reviewer name").press("Tab")
            page.wait_for_function(SETTLED, polling=25)
            # the same form as the Review page: no default answer, one click agrees with the rest
            page.get_by_role("button", name="Submit feedback").click()
            page.get_by_text("Answer every finding before submitting").wait_for(timeout=60_000)
            page.get_by_role("button", name=re.compile("Agree with the model")).click()
            page.get_by_role("button", name=re.compile("Agree with the model")).wait_for(
                state="detached", timeout=60_000)
            page.wait_for_function(SETTLED, polling=25)
            page.get_by_role("button", name="Submit feedback").click()
            page.get_by_text("Feedback saved").wait_for(timeout=60_000)
        finally:
            browser.close()
    for name in ("worklist", "viewer"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
    from cxr_core.review.feedback import FeedbackStore

    frame = FeedbackStore(f"sqlite:///{server_tmp / 'data' / 'feedback.sqlite'}").reviews_frame()
    assert frame["reviewer"].tolist() == ["Dr Browser Worklist"]


def test_viewer_presets_invert_page_cutoff_measure_and_first_view():
    """Window presets and invert change the picture; the heatmap uses the page's cut-off (no
    colour where the map is at or below it); a box is measured in pixels without spacing and
    in mm with it; an image over 2048 px is first shown downsampled."""
    from types import SimpleNamespace

    from cxr_core.explain.overlay import DEFAULT_CUTOFF
    from ui.viewer import FIRST_VIEW_SIDE, PRESETS, measure, viewer_figure

    at = reviewed_worklist()
    _, review = current_review(at)
    widget(at, "toggle", "Heatmap").set_value(False)
    widget(at, "toggle", "Lung outline").set_value(False)
    at.run()
    at.get("button_group")[0].set_value("bone")  # the segmented control
    at.run()
    assert widget(at, "slider", "Window centre").value == pytest.approx(PRESETS["bone"][0])
    assert widget(at, "slider", "Window width").value == pytest.approx(PRESETS["bone"][1])
    plain = shown_image(figure(at)[0]).astype(int)
    widget(at, "toggle", "Invert").set_value(True)
    at.run()
    inverted = shown_image(figure(at)[0]).astype(int)
    assert np.abs(plain + inverted - 255).max() <= 1
    # the heatmap's cut-off is the page's: no colour at or below it
    k = int(np.argmax([review.heatmap_original(j).max() for j in range(len(review.labels))]))
    fig = viewer_figure(review, k, 0.6, False, 0.5, 1.0, cutoff=DEFAULT_CUTOFF)
    coloured = shown_image(json.loads(fig.to_json())).astype(int)
    cool = review.heatmap_original(k) <= DEFAULT_CUTOFF
    assert (coloured[..., 0] == coloured[..., 2])[cool].all()
    # measuring: pixels without spacing (a PNG), mm with it
    assert measure(review, (0, 30), (0, 40)).startswith("Distance: 50 pixels (this image has no pixel spacing")
    spaced = SimpleNamespace(image=SimpleNamespace(patient_study=SimpleNamespace(pixel_spacing=(0.2, 0.1))))
    assert measure(spaced, (0, 30), (0, 40)) .startswith("Distance: 8.5 mm")
    widget(at, "toggle", "Measure").set_value(True)
    at.run()
    assert figure(at)[0]["layout"]["dragmode"] == "select"
    # a large image is first sent at FIRST_VIEW_SIDE px
    big = SimpleNamespace(**{**review.__dict__})
    big.image = SimpleNamespace(**{**review.image.__dict__, "pixels": np.zeros((3000, 2500), np.float32),
                                   "original_size": (3000, 2500)})
    first = shown_image(json.loads(viewer_figure(big, None, 0.6, False, 0.5, 1.0,
                                                 max_side=FIRST_VIEW_SIDE).to_json()))
    assert max(first.shape[:2]) == FIRST_VIEW_SIDE
