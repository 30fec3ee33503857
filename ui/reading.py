"""The operating point a reader chooses (Review and Worklist pages share the choice) and what
the page says about it: the point's rule, its validation sensitivity and specificity, and
whether the probabilities are calibrated."""

from __future__ import annotations

import numpy as np
import streamlit as st

from cxr_core.evaluation.reading_points import reading_of
from cxr_core.review.pipeline import displayed_review
from ui.common import active_bundle_path, get_bundle
from ui.tab_state import kept_key, remember

POINT = "operating_point"


def chosen_point(bundle) -> str | None:
    """The reading point chosen in the sidebar (the bundle's default until the reader picks
    another); None when the bundle stores no reading points."""
    reading = reading_of(bundle)
    if reading is None:
        return None
    points = reading["points"]
    key = kept_key(POINT, reading["default"])
    if st.session_state[key] not in points:
        st.session_state[key] = reading["default"]
    st.sidebar.selectbox(
        "Operating point", points, key=key,
        help="balanced: sensitivity + specificity as high as possible; high sensitivity: "
             "misses fewer findings, more false alarms; high specificity: fewer false alarms, "
             "more misses. Each was chosen per finding on the validation split.")
    remember(POINT)
    return st.session_state[key]


def at_chosen_point(review):
    """The review read where both pages display it: at the operating point chosen in the
    sidebar (drawn here), `at_point`."""
    path = active_bundle_path()
    return review if path is None else at_point(review, chosen_point(get_bundle(str(path))))


def at_point(review, point: str | None):
    """The review read at reading `point` as both pages display it (`displayed_review`:
    calibrated when the bundle can; nothing is run again)."""
    path = active_bundle_path()
    return review if path is None else displayed_review(get_bundle(str(path)), review, point)


def reading_caption(review) -> None:
    """One caption: the operating point and its rule, and whether (and why) the probabilities
    are calibrated; then what the models said for an overruled 'normal'."""
    path = active_bundle_path()
    reading = reading_of(get_bundle(str(path))) if path is not None else None
    if reading is not None and review.operating_point:
        entry = get_bundle(str(path)).threshold_entry(review.threshold_method)
        ece = reading.get("val_ece", {})
        if review.calibration:
            said = (f"probabilities calibrated ({review.calibration}): it lowers the validation "
                    f"calibration error (ECE, the mean gap between probability and observed "
                    f"frequency) from {ece.get('raw', float('nan')):.3f} to "
                    f"{ece.get(review.calibration, float('nan')):.3f}")
        else:
            said = (f"probabilities not calibrated: no calibration lowered the validation "
                    f"calibration error (ECE {ece.get('raw', float('nan')):.3f})")
        st.caption(f"Operating point **{review.operating_point}**: {entry.get('rule', '')}, chosen "
                   f"per finding on validation; {said}.")
    note = review.normal_note()
    if note:
        st.caption(note)


def validation_rates(review) -> list[str] | None:
    """'sensitivity / specificity' on validation per finding at the review's operating point;
    None when its threshold method does not record them."""
    path = active_bundle_path()
    if path is None:
        return None
    entry = get_bundle(str(path)).threshold_entry(review.threshold_method) \
        if review.threshold_method in get_bundle(str(path)).threshold_methods else {}
    sens, spec = entry.get("sensitivity"), entry.get("specificity")
    if sens is None or spec is None:
        return None

    def fmt(value) -> str:
        return "–" if value is None or not np.isfinite(value) else f"{value:.2f}"

    return [f"{fmt(a)} / {fmt(b)}" for a, b in zip(sens, spec)]
