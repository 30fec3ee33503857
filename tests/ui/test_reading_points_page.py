"""The Review page reads at an operating point the reader chooses (balanced, high sensitivity,
high specificity; each fitted on validation), says whether the probabilities are calibrated, and
never reports 'normal' positive together with another positive finding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300


@pytest.fixture
def reading_bundle(app_env, monkeypatch):
    """A copy of the shipped bundle with its reading points fitted (by the library call the
    `operating-points` command makes), made the app's bundle."""
    from cxr_core.evaluation.reading_points import fit_reading_points

    copy = app_env / "bundle"
    shutil.copytree(REPO / "models" / "cxr-demo", copy)
    fit_reading_points(copy)
    monkeypatch.setenv("CXR_BUNDLE", str(copy))
    return copy


def _pick(at: AppTest, label: str, value: str) -> AppTest:
    next(s for s in at.selectbox if s.label == label).set_value(value)
    return at.run()


def _coherent(table) -> bool:
    positive = table.set_index("finding")["call"].str.startswith("positive")
    return not (positive.get("normal", False) and positive.drop("normal").any())


def test_review_page_offers_operating_points_and_never_calls_normal_with_a_finding(reading_bundle):
    from cxr_core.modeling.bundle import Bundle

    bundle = Bundle.load(reading_bundle)
    samples = sorted(p.name for p in (REPO / "assets" / "samples").glob("*.png"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at = _pick(at, "...or try a sample", samples[0])
    assert not at.exception, at.exception
    choice = next(s for s in at.sidebar.selectbox if s.label == "Operating point")
    assert choice.options == ["balanced", "high sensitivity", "high specificity"]
    assert choice.value == "balanced"  # the default reading
    overruled = 0
    for point in ("high sensitivity", "balanced", "high specificity"):
        at = _pick(at, "Operating point", point)
        entry = bundle.threshold_entry(point)
        for name in samples:
            at = _pick(at, "...or try a sample", name)
            assert not at.exception, at.exception
            table = at.dataframe[0].value
            review = at.session_state["review"]
            assert review.threshold_method == point and review.calibration == entry["calibration"]
            shown = dict(zip(table["finding"], table["threshold"]))
            assert all(shown[lab] == round(t, 3) for lab, t in zip(bundle.labels, entry["ensemble"]))
            rates = dict(zip(table["finding"], table["sens. / spec. (val)"]))
            k = bundle.labels.index("pneumonia")
            assert rates["pneumonia"] == (f"{entry['sensitivity'][k]:.2f} / "
                                          f"{entry['specificity'][k]:.2f}")
            assert _coherent(table), (point, name, table)
            captions = [c.value for c in at.caption]
            assert any(c.startswith(f"Operating point **{point}**") and "chosen per finding on "
                       "validation" in c and "calibrat" in c for c in captions)
            if review.normal_overruled:  # what the models said for 'normal' is shown
                overruled += 1
                assert any(c.startswith("'normal' is not reported: the models gave it") for c in captions)
                k_normal = bundle.labels.index("normal")
                assert review.probs[k_normal] >= review.thresholds[k_normal]
                assert table.set_index("finding").loc["normal", "call"].startswith("negative")
    # the shipped samples include X-rays where the models call 'normal' with other findings
    assert overruled > 0
    assert np.isfinite(bundle.manifest["reading"]["val_ece"]["raw"])
