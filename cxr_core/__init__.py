"""CXR Review core library: labels, preprocessing, models, explanations and feedback.

No Streamlit import lives here; the app and the CLI both call these functions.
"""

__version__ = "0.1.0"
