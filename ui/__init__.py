"""Streamlit building blocks shared by the pages: bundle and store access, the viewer, the input-check panel."""
