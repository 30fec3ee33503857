"""CXR Review: the app's entry point. It only routes: the Review page first, then every page in
app_pages/ (not "pages/", whose automatic listing would name this file "app" in the sidebar when a
page's URL is opened directly). Each page lays out the UI and calls `cxr_core`."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"
REVIEW_PAGE = "app_pages/review.py"

st.set_page_config(page_title="CXR Review", page_icon="🩻", layout="wide")


def page_list() -> list:
    """The Review page first, then every numbered page file in app_pages/ (a new file appears
    by itself)."""
    pages = [st.Page(REVIEW_PAGE, title="Review", default=True)]
    pages += [st.Page(f"app_pages/{path.name}") for path in sorted(PAGES_DIR.glob("[0-9]*_*.py"))]
    return pages


st.navigation(page_list()).run()
