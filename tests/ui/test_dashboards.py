"""AppTest tests of the research dashboards (Metrics and Models pages) on synthetic bundles
with known predictions: intervals, calibration, operating points, comparison, the published
method, and the Models page's picker, lineage and model card."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.modeling.bundle_factory import make_split, write_synthetic_bundle

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120
LABELS = ["copd signs", "cardiomegaly", "pleural effusion", "rare finding"]


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """A models folder with a parent bundle and its fine-tuned child (PadChest-style labels)."""
    models = tmp_path / "models"
    split = make_split(700, LABELS, [0.3, 0.25, 0.2, 0.005], seed=11)
    write_synthetic_bundle(models / "parent", split, LABELS, [0.8, 0.8, 0.8, 0.8], seed=1,
                           bundle_id="padchest-parent")
    write_synthetic_bundle(models / "child", split, LABELS, [2.0, 2.0, 2.0, 2.0], seed=2,
                           bundle_id="padchest-child",
                           lineage={"parent_bundle_id": "padchest-parent", "reviews_used": 12,
                                    "new_training_images": 10, "relabelled_training_images": 2})
    monkeypatch.setenv("CXR_MODELS_DIR", str(models))
    monkeypatch.setenv("CXR_BUNDLE", "child")
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    from ui.common import get_bundle

    get_bundle.clear()
    yield models
    get_bundle.clear()


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app_pages" / name), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(encoded) -> np.ndarray:
    """A plotly array from a figure's JSON (plain list or base64 'bdata')."""
    if isinstance(encoded, dict):
        import base64

        return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"])
    return np.asarray(encoded)


def test_metrics_page_shows_intervals_counts_and_readable_curves(models_dir):
    at = page("1_Metrics.py")
    assert [t.label for t in at.tabs] == ["Per label", "Calibration", "Operating points",
                                         "Compare bundles", "Published method"]
    overall_auc = float(at.metric[0].value)
    low, high = (float(v) for v in at.caption[1].value.removeprefix("95% interval ").split(" to "))
    assert low <= overall_auc <= high  # the macro AUC's interval surrounds it
    table = at.dataframe[0].value
    targets = np.load(models_dir / "child" / "test_predictions.npz")["targets"]
    assert (table["images"] == targets.shape[0]).all()
    assert dict(zip(table["label"], table["positives"])) == dict(zip(LABELS, targets.sum(axis=0).tolist()))
    assert table.loc[table["label"] == "rare finding", "ci_note"].iloc[0].startswith("too few positives")
    # readable headers, three decimals, the label column pinned
    config = json.loads(at.dataframe[0].proto.columns)
    assert config["best_member"]["label"] == "Best member" and config["label"]["pinned"] is True
    assert config["CTP"]["type_config"]["format"] == "%.3f"
    figs = {f["layout"]["title"]["text"].split(":")[0]: f for f in figures(at)}
    bars = next(f for t, f in figs.items() if t.startswith("AUC per label"))
    marker = bars["data"][1]
    assert marker["mode"] == "markers" and len(values(marker["x"])) == len(LABELS)
    upper = values(marker["error_x"]["array"])
    assert (upper > 0).sum() == len(LABELS) - 1  # every label but the rare one has an interval
    numbers = bars["data"][2]  # the value, interval and counts, right of each interval
    assert numbers["mode"] == "text" and any("too few cases" in text for text in numbers["text"])
    roc, pr = figs["ROC"], figs["Precision-recall"]
    assert roc["layout"]["xaxis"]["range"][0] < 0 < 1 < roc["layout"]["yaxis"]["range"][1]
    assert all("(AP " in trace["name"] for trace in pr["data"])
    assert pr["layout"]["legend"]["y"] < 0  # legend below the curves, not over them


def test_calibration_tab_reports_ece_and_fits_a_stored_calibration(models_dir):
    at = page("1_Metrics.py")
    summary = next(df.value for df in at.dataframe if "ece" in df.value.columns and "model" in df.value.columns)
    assert summary["model"].tolist()[0] == "CTP" and summary["ece"].between(0, 1).all()
    at.selectbox(key="cal_fit").select("isotonic")
    at.checkbox(key="cal_default").check()
    next(b for b in at.button if b.label == "Fit and store").click()
    at.run()
    assert not at.exception, at.exception
    assert any("isotonic calibration stored" in s.value for s in at.success)
    manifest = json.loads((models_dir / "child" / "manifest.json").read_text())
    assert manifest["threshold_method"] == "f1+isotonic" and "isotonic" in manifest["calibration"]
    assert "calibrated" in at.caption[0].value


def test_operating_point_is_saved_as_a_named_threshold_method(models_dir):
    at = page("1_Metrics.py")
    at.selectbox(key="op_label").select("cardiomegaly")
    at.run()
    slider = next(s for s in at.slider if s.label == "Threshold for cardiomegaly")
    slider.set_value(0.2)
    at.run()
    sens = next(m for m in at.metric if m.label == "Sensitivity")
    assert 0 <= float(sens.value) <= 1
    # the operating-points table: no duplicate columns; 'chosen here' only for the moved label
    frames = [d.value for d in at.dataframe if "stored (f1)" in d.value.columns]
    assert frames and list(frames[-1].columns) == ["label", "stored (f1)", "chosen here"]
    moved = frames[-1].set_index("label")["chosen here"]
    assert moved["cardiomegaly"] == pytest.approx(0.2) and moved.drop("cardiomegaly").isna().all()
    next(t for t in at.text_input if t.label == "Save these thresholds as").input("screening")
    next(c for c in at.checkbox if c.label.startswith("Make it the bundle's default threshold")).check()
    next(b for b in at.button if b.label == "Save threshold method").click()
    at.run()
    assert not at.exception, at.exception
    assert any("'screening' saved" in s.value for s in at.success)
    manifest = json.loads((models_dir / "child" / "manifest.json").read_text())
    entry = manifest["thresholds"]["screening"]
    assert manifest["threshold_method"] == "screening"
    assert entry["ensemble"][LABELS.index("cardiomegaly")] == pytest.approx(0.2)
    assert entry["ensemble"][0] == pytest.approx(manifest["thresholds"]["f1"]["ensemble"][0])


def test_operating_points_are_chosen_on_validation_and_the_page_says_so(models_dir):
    """The operating-point view counts validation images, a saved set records that split, and
    the page's caption names the split the thresholds were chosen on."""
    at = page("1_Metrics.py")
    assert "chosen on the validation split" in at.caption[0].value
    val_images = int(np.load(models_dir / "child" / "val_predictions.npz")["targets"].shape[0])
    assert any(f"of {val_images} validation images" in c.value for c in at.caption)
    next(t for t in at.text_input if t.label == "Save these thresholds as").input("screening")
    next(c for c in at.checkbox if c.label.startswith("Make it the bundle's default threshold")).check()
    next(b for b in at.button if b.label == "Save threshold method").click()
    at.run()
    assert not at.exception, at.exception
    manifest = json.loads((models_dir / "child" / "manifest.json").read_text())
    assert manifest["thresholds"]["screening"]["chosen_on"] == "validation"
    assert "screening" in at.caption[0].value and "chosen on the validation split" in at.caption[0].value


def test_compare_tab_and_published_method_tab(models_dir):
    at = page("1_Metrics.py")
    markdown = " ".join(m.value for m in at.markdown)
    assert "`padchest-parent` → `padchest-child`" in markdown
    assert "padchest-child minus padchest-parent (CTP)" in markdown
    comparison = next(df.value for df in at.dataframe if "B - A" in df.value.columns)
    assert set(comparison.loc[comparison["label"] != "rare finding", "Verdict"]) == {"B better"}
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert any(t.startswith("AUC difference per label") for t in titles)
    assert any(t.startswith("AUC per label, CTP: this bundle and the published method") for t in titles)
    sides = next(df.value for df in at.dataframe if "paper_auc" in df.value.columns)
    assert sides.set_index("label").loc["copd signs", "paper_auc"] == pytest.approx(0.833)


def test_models_page_lists_ids_keeps_the_active_bundle_on_a_failed_switch_and_renders_the_card(models_dir):
    broken = models_dir / "broken"
    shutil.copytree(models_dir / "parent", broken)
    (broken / "test_predictions.npz").write_bytes(b"tampered")
    (models_dir / "child" / "MODEL_CARD.md").write_text("# Model card: padchest-child\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    at = page("3_Models.py")
    picker = at.selectbox(key="models_bundle_picker")
    assert set(picker.options) == {"padchest-child", "padchest-parent (parent)",
                                  "padchest-parent (broken)"}  # a repeated id names its folder
    assert picker.value == "padchest-child"
    assert not any(str(models_dir) in option for option in picker.options)
    assert any("**padchest-child**" in m.value and "`padchest-parent`" in m.value for m in at.markdown)
    assert any(m.value.startswith("# Model card: padchest-child") for m in at.markdown)
    assert not at.get("json")
    picker.select("padchest-parent (broken)")
    at.run()
    assert not at.exception, at.exception
    assert any("Could not switch to padchest-parent (broken)" in e.value for e in at.error)
    assert at.selectbox(key="models_bundle_picker").value == "padchest-child"
    assert at.subheader[0].value == "padchest-child"
    at.selectbox(key="models_bundle_picker").select("padchest-parent (parent)")
    at.run()
    assert not at.exception and at.subheader[0].value == "padchest-parent"
    assert at.selectbox(key="models_bundle_picker").value == "padchest-parent (parent)"


def test_metrics_page_keeps_its_numbers_in_a_900_px_window(models_dir, tmp_path):
    """Real Chromium at 900 px: the headline numbers are not cut off ("0.87..."), the
    members-vs-ensembles table keeps its number columns at a readable width, and the tabs
    render without an exception."""
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip(f"{chromium} is not installed (make test installs it with apt when it can)")
    from playwright.sync_api import sync_playwright

    from tests.ui.browser_driver import streamlit_server

    with streamlit_server(models_dir.parent / "data", env={"CXR_MODELS_DIR": str(models_dir),
                                                          "CXR_BUNDLE": "child"}) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.goto(f"{url}/Metrics", wait_until="domcontentloaded")
            page.get_by_text("Members vs ensembles").wait_for(timeout=180_000)
            values = page.locator('[data-testid="stMetricValue"]')
            values.first.wait_for(timeout=30_000)
            assert values.count() >= 4
            for i in range(4):  # the headline figures above the tabs
                clipped = values.nth(i).evaluate(  # the inner box is the one that ellipsises
                    "e => [e, ...e.querySelectorAll('*')].some(c => c.scrollWidth > c.clientWidth + 1)")
                assert not clipped, values.nth(i).inner_text()
            headers = page.locator('[data-testid="stDataFrame"]').first
            headers.wait_for(timeout=30_000)
            box = headers.bounding_box()
            assert box and box["width"] > 300
            for tab in ("Calibration", "Operating points", "Compare bundles", "Published method"):
                page.get_by_role("tab", name=tab).click()
                page.wait_for_timeout(1500)
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(tmp_path / "metrics_900.png"))
        finally:
            browser.close()


def test_metrics_terms_are_explained_in_plain_words(models_dir):
    """CTP, PTC, Hamming loss and the threshold method get one line each where they appear."""
    from ui.glossary import TERMS, threshold_words

    at = page("1_Metrics.py")
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    for term in ("CTP", "PTC", "Hamming loss"):
        assert TERMS[term] in captions
    assert threshold_words("f1").capitalize() in captions
    assert "maximises its F1 score" in threshold_words("f1")
    hamming = next(m for m in at.metric if m.label == "Hamming loss (CTP)")
    assert TERMS["Hamming loss"] in hamming.proto.help
    assert all(TERMS["CTP"] in m.proto.help for m in at.metric if "(CTP)" in m.label)
