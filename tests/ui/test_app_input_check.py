"""Review page: an image the input check refuses shows why and no findings, until 'show anyway'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ..helpers import png_as_dicom

pytestmark = pytest.mark.usefixtures("app_env")  # tests/ui/conftest.py

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300
SAMPLE = sorted((REPO / "assets" / "samples").glob("*.png"))[0]




def review_page(upload) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.file_uploader[0].set_value(upload)
    at.run()
    assert not at.exception, at.exception
    return at


def test_refused_image_shows_the_reason_and_findings_only_when_shown_anyway(app_env):
    hand = png_as_dicom(SAMPLE, Modality="DX", BodyPartExamined="HAND", ViewPosition="PA")
    at = review_page(("hand.dcm", hand, "application/dicom"))
    errors = [e.value for e in at.error]
    assert any("the input check refused this image" in e and "body part is HAND" in e
               for e in errors), errors
    assert len(at.dataframe) == 0 and len(at.get("download_button")) == 0  # no findings, no report
    show = at.checkbox(key=next(c.key for c in at.checkbox if c.label.startswith("Show the findings anyway")))
    show.check()
    at.run()
    assert not at.exception, at.exception
    assert len(at.dataframe) == 1
    assert any("input check refused" in w.value for w in at.warning)
    at.text_input[0].input("Dr Test")
    next(b for b in at.button if b.label.startswith("Agree with the model")).click()
    at.run()
    next(b for b in at.button if b.label == "Submit feedback").click()
    at.run()
    assert any("version 1" in s.value for s in at.success)
    from cxr_core.base.config import settings
    from cxr_core.review.feedback import FeedbackStore

    stored = FeedbackStore(settings().db_url).reviews_frame()["model_output"].iloc[0]
    check = (stored if isinstance(stored, dict) else json.loads(stored))["input_check"]
    assert check["passed"] is False and "HAND" in check["reason"]


def test_frontal_xray_passes_with_a_caption():
    at = review_page((SAMPLE.name, SAMPLE.read_bytes(), "image/png"))
    assert not any("input check refused" in e.value for e in at.error)
    assert any(c.value.startswith("Input check: frontal chest X-ray") for c in at.caption)
    assert len(at.dataframe) == 1
    # the distance score is out of the normal view: only inside the 'details' expander
    assert not any("distance score" in c.value for c in at.main.caption if c not in
                   [d for e in at.expander if e.label == "Input check details" for d in e.caption])
    details = next(e for e in at.expander if e.label == "Input check details")
    assert any(d.value.startswith("Input check passed") for d in details.caption)


def test_a_colour_photograph_is_refused_as_not_a_grayscale_xray():
    import cv2
    import numpy as np

    rng = np.random.default_rng(3)
    photo = np.zeros((400, 400, 3), np.uint8)
    for _ in range(30):
        x, y = (int(v) for v in rng.integers(0, 400, 2))
        cv2.circle(photo, (x, y), int(rng.integers(20, 90)), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    at = review_page(("holiday.jpg", cv2.imencode(".jpg", photo)[1].tobytes(), "image/jpeg"))
    errors = [e.value for e in at.error]
    assert any("the input check refused this image" in e and "not a grayscale X-ray" in e
               for e in errors), errors
    assert len(at.dataframe) == 0
    details = next(e for e in at.expander if e.label == "Input check details")
    assert any("refused by the colour rule" in d.value for d in details.caption)
