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
        st.caption("Input check: frontal chest X-ray, like those the models were trained on.")
        _details(check)
        return True
    st.error(f"**Not reviewed: the input check refused this image.** {check.reason}",
             icon="🚫")
    _details(check)
    anyway = st.checkbox("Show the findings anyway (expert)", key=f"show_anyway_{review.image.sha256}",
                         help=SHOW_ANYWAY_HELP)
    if anyway:
        st.warning("Findings shown although the input check refused this image; the report "
                   "says so too.", icon="⚠️")
        return True
    st.image(review.image.pixels, caption="the uploaded image", width=360, clamp=True)
    return False


def _details(check) -> None:
    """The check's numbers (the distance score), out of the normal view."""
    with st.expander("Input check details"):
        st.caption(check.details())


def input_check_record(review) -> dict | None:
    """The verdict as stored with the feedback (inside the model-output JSON)."""
    return review.input_check.record() if review.input_check is not None else None
