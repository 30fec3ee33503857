"""The Review and Worklist pages show one X-ray the same way: the same (calibrated, at the
chosen operating point) probabilities, and the same sentence when no finding passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.test_worklist import reviewed_worklist

pytestmark = pytest.mark.usefixtures("app_env")  # tests/ui/conftest.py

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300
SAMPLE = sorted((REPO / "assets" / "samples").glob("*.png"))[0]


def review_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.file_uploader[0].set_value((SAMPLE.name, SAMPLE.read_bytes(), "image/png"))
    at.run()
    assert not at.exception, at.exception
    return at


def worklist_page() -> AppTest:
    return reviewed_worklist([(SAMPLE.name, SAMPLE.read_bytes(), "image/png")])


def shown_messages(at: AppTest) -> list[str]:
    return [i.value for i in at.info if i.value.startswith("No finding above threshold")]


def test_one_xray_shows_the_same_calibrated_numbers_on_both_pages():
    from cxr_core.base.config import settings
    from cxr_core.modeling.bundle import Bundle
    from cxr_core.review.pipeline import normal_index
    from ui.common import worklist_by_token

    bundle = Bundle.load(settings().default_bundle_path)
    point = bundle.reading["default"]
    assert bundle.threshold_entry(point).get("calibration")  # the case of the defect
    review = review_page()
    findings = review.dataframe[0].value.set_index("finding")
    worklist = worklist_page()
    row = worklist.dataframe[0].value.iloc[0]
    item = worklist_by_token(worklist.query_params["worklist"]).item(row["file"])
    # the Worklist's study is read where the Review page reads it: calibrated, at its point
    assert (item.review.threshold_method, item.review.calibration) == (point, "isotonic")
    assert np.allclose(findings.loc[item.review.labels, "probability"], item.review.probs.round(3))
    # and its list says so in the Review page's numbers: the positives, 3 decimals
    k_normal = normal_index(item.review.labels)
    positives = findings[findings["call"].str.startswith("positive") & (findings.index != "normal")]
    assert row["top findings"] == ", ".join(f"{label} {p:.3f}" for label, p in positives["probability"].items())
    assert k_normal is not None and not shown_messages(review) and not shown_messages(worklist)
    viewer = worklist.dataframe[1].value.set_index("finding")  # the open study's viewer table
    assert np.allclose(viewer.loc[findings.index, "probability"], findings["probability"])


def test_no_finding_reads_the_same_on_both_pages(monkeypatch):
    """Thresholds no probability reaches: one sentence on the Review page, in the Worklist's
    list and above its open study."""
    from cxr_core.explain.report import no_finding_message
    from cxr_core.modeling.bundle import Bundle

    original = Bundle.thresholds

    def unreachable(self, method=None):
        ensemble, members = original(self, method)
        return np.full_like(ensemble, 1.0), np.full_like(members, 1.0)

    monkeypatch.setattr(Bundle, "thresholds", unreachable)
    review = review_page()
    assert not review.dataframe[0].value["call"].str.startswith("positive").any()
    worklist = worklist_page()
    sentence = "No finding above threshold."
    assert no_finding_message(review.session_state["review"]) == sentence
    assert shown_messages(review) == [sentence, f"{sentence} Turn on 'Show all findings' to see every heatmap."]
    assert worklist.dataframe[0].value["top findings"].tolist() == [sentence]
    assert shown_messages(worklist) == [sentence]
