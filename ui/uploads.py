"""One set of upload rules for every page: accepted file types, the size limit and its unit.

Sizes are in MB of 2**20 bytes, the unit Streamlit's `server.maxUploadSize` uses, so the limit a
page states is the limit the server enforces.
"""

from __future__ import annotations

import streamlit as st

from cxr_core.base.config import settings

#: single images a page reviews
IMAGE_TYPES = ["png", "jpg", "jpeg", "dcm", "dicom"]
#: archives of images (the Worklist unpacks them)
ARCHIVE_TYPES = ["zip"]
MB = 2**20


def upload_limit_mb() -> int:
    """The one upload limit: the server's `server.maxUploadSize`, lowered to CXR_MAX_UPLOAD_MB
    when that is smaller."""
    return min(int(st.get_option("server.maxUploadSize")), settings().max_upload_mb)


def too_large(size: int, limit_mb: int) -> str | None:
    """The sentence refusing a file of `size` bytes, or None when it is within the limit."""
    if size <= limit_mb * MB:
        return None
    return f"The file is {size / MB:.1f} MB; the limit is {limit_mb} MB."
