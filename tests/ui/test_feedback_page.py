"""The Feedback page (AppTest): readable table with thumbnails, clear stats scope, filtered export."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cxr_core.base.config import settings
from cxr_core.modeling.bundle import Bundle
from cxr_core.review.feedback import FeedbackStore, Submission

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300


@pytest.fixture(autouse=True)
def app_env(app_env, monkeypatch):
    """The shared app environment, and: CXR_STORE_IMAGES."""
    monkeypatch.setenv("CXR_STORE_IMAGES", "1")
    return app_env


def seed_reviews() -> None:
    """Dr A reviews an image twice (agree, then agree again), Dr B once (disagree)."""
    cfg = settings()
    bundle = Bundle.load(cfg.default_bundle_path)
    store = FeedbackStore(cfg.db_url, cfg.data_dir / "images")
    labels = bundle.labels
    png = cv2.imencode(".png", (np.random.default_rng(1).random((120, 100)) * 255).astype(np.uint8))[1]
    sha = hashlib.sha256(png.tobytes()).hexdigest()
    for i, reviewer in enumerate(["Dr A", "Dr A", "Dr B"]):
        store.submit(Submission(
            image_sha256=sha, bundle_id=bundle.bundle_id, label_set="demo",
            reviewer=reviewer, labels=labels, probabilities=[0.7] + [0.1] * (len(labels) - 1),
            thresholds=[0.5] * len(labels), model_positive=[True] + [False] * (len(labels) - 1),
            agreement=[3] + [0] * (len(labels) - 1),
            decisions={labels[0]: "agree" if i != 2 else "disagree"},
            comment="" if i else "first look"), image_bytes=png.tobytes() if i == 0 else None)
    store.close()


def test_feedback_page_is_readable_and_filters_everything():
    seed_reviews()
    at = AppTest.from_file(str(REPO / "app_pages" / "2_Feedback.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert any("not for clinical use" in w.value for w in at.warning)  # as on every page
    table = at.dataframe[0].value
    assert {"Image", "Image id", "Reviewer", "Version", "Latest", "Expert findings", "Decisions",
            "Comment"} <= set(table.columns)
    assert not any(c.islower() or "_" in c for c in table.columns)  # human headers
    assert table["Image"].str.startswith("data:image/png;base64,").sum() == 3  # all stored
    assert not table.astype(str).isin(["None", "nan", ""]).drop(columns="Image").any().any()
    assert sorted(table["Latest"]) == ["no", "yes", "yes"]
    # every column is sized to its longest text (the table scrolls sideways, nothing is cut)
    import json

    config = json.loads(at.dataframe[0].proto.columns)
    for column in ("Decisions", "Comment", "Model findings", "Other findings (not in the model)"):
        longest = max(table[column].astype(str).str.len().max(), len(column))
        assert config[column]["width"] >= 7.5 * longest, (column, config[column])
    assert any("Showing 3 of 3" in c.value for c in at.caption)
    assert at.get("download_button")[0].label == "Download the 3 shown rows (CSV)"
    stats = at.dataframe[1].value
    assert stats["Expert agrees with model"].iloc[0] == "50% (1 of 2 reviews)"

    at.multiselect[0].set_value(["Dr B"])
    at.run()
    assert any("Showing 1 of 3" in c.value for c in at.caption)
    assert at.get("download_button")[0].label == "Download the 1 shown rows (CSV)"
    assert at.dataframe[1].value["Expert agrees with model"].iloc[0] == "50% (1 of 2 reviews)"
    at.radio[0].set_value("the filtered reviews")
    at.run()
    assert at.dataframe[1].value["Expert agrees with model"].iloc[0] == "0% (0 of 1 review)"
    assert any("Agreement on the filtered reviews" in c.value for c in at.caption)
