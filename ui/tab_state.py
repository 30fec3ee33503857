"""State kept for one browser tab (the image, widget values, draft feedback): across pages and
across a reload, found again by a random token in the URL."""

from __future__ import annotations

import uuid
from collections import OrderedDict

import streamlit as st

KEPT_TABS = 16  # browser tabs whose state survives a reload (each holds one image)


@st.cache_resource
def _tab_states() -> OrderedDict:
    """Per-tab state by a random token in the URL, so that a reload finds it again (LRU)."""
    return OrderedDict()


def tab_state() -> dict:
    """This tab's kept state: the image, widget values and draft feedback."""
    if "kept" not in st.session_state:
        token = st.query_params.get("tab")
        states = _tab_states()
        if token and token in states:
            st.session_state["kept"] = states[token]
        else:
            token = uuid.uuid4().hex
            st.session_state["kept"] = {"token": token, "source": None, "widgets": {}}
    kept = st.session_state["kept"]
    states = _tab_states()
    states[kept["token"]] = kept
    states.move_to_end(kept["token"])
    while len(states) > KEPT_TABS:
        states.popitem(last=False)
    if st.query_params.get("tab") != kept["token"]:
        st.query_params["tab"] = kept["token"]
    return kept


def kept_key(name: str, default):
    """Widget key whose value outlives the page: restored from the tab's state when the widget
    comes back (Streamlit forgets a widget's value once a run does not draw it)."""
    key = f"w_{name}"
    widgets = tab_state()["widgets"]
    if key not in st.session_state:
        st.session_state[key] = widgets.get(name, default)
    return key


def remember(name: str) -> None:
    """Store a kept widget's current value in the tab's state."""
    tab_state()["widgets"][name] = st.session_state[f"w_{name}"]
