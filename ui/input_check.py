"""Review page: the input check's verdict ("is this a frontal chest X-ray?"), UI only.

A refused image shows the one sentence why and the image itself, and no findings, until a
reader explicitly asks to see them anyway (an expert's decision, remembered per image)."""

from __future__ import annotations

import streamlit as st

SHOW_ANYWAY_HELP = ("The models were trained on frontal chest X-rays only; on anything else their "
                    "findings are meaningless. Show them only if you are sure this is a frontal "
                    "chest X-ray the check got wrong.")


def render_input_check(review) -> bool:
    """Show the input check's verdict; returns whether the page may show the findings."""
    check = review.input_check
    if check is None:
        return True
    if check.passed:
        if check.score is not None:
            st.caption(f"Input check: frontal chest X-ray, like those the models were trained on "
                       f"(distance score {check.score:.2f}; images scoring above "
                       f"{check.threshold:.2f} are refused).")
        else:
            st.caption("Input check: frontal chest X-ray (DICOM and lung-shape checks; this model "
                       "has no stored statistics for the score).")
        return True
    st.error(f"**Not reviewed: the input check refused this image.** {check.reason}",
             icon="🚫")
    anyway = st.checkbox("Show the findings anyway (expert)", key=f"show_anyway_{review.image.sha256}",
                         help=SHOW_ANYWAY_HELP)
    if anyway:
        st.warning("Findings shown although the input check refused this image; the report "
                   "says so too.", icon="⚠️")
        return True
    st.image(review.image.pixels, caption="the uploaded image", width=360, clamp=True)
    return False


def input_check_record(review) -> dict | None:
    """The verdict as stored with the feedback (inside the model-output JSON)."""
    return review.input_check.record() if review.input_check is not None else None
