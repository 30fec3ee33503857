"""The Feedback page's readable table, agreement text, thumbnails and filtered CSV export."""

import base64
import io

import cv2
import numpy as np
import pandas as pd

from cxr_core.review.feedback import FeedbackStore
from cxr_core.review.feedback_table import (
    EMPTY,
    agreement_table,
    export_frame,
    mark_latest,
    review_rows,
    thumbnail_data_url,
)
from tests.review.test_feedback import LABELS, make_submission


def filled_store(tmp_path) -> FeedbackStore:
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.sqlite'}", image_dir=tmp_path / "images")
    png = cv2.imencode(".png", (np.random.default_rng(0).random((300, 200)) * 255).astype(np.uint8))[1]
    store.submit(make_submission("A", comment="=HYPERLINK(\"x\")"), image_bytes=png.tobytes())
    store.submit(make_submission("A", decisions={"COVID-19": "agree", "Viral": "agree"}))
    store.submit(make_submission("B", decisions={}, comment=""))
    return store


def test_latest_flag_and_readable_rows_without_empty_cells(tmp_path):
    store = filled_store(tmp_path)
    frame = store.reviews_frame()
    latest = mark_latest(frame)
    assert latest.tolist() == [False, True, True]
    rows = review_rows(frame, latest)
    assert list(rows.columns[:4]) == ["Image id", "Submitted (UTC)", "Reviewer", "Version"]
    assert rows["Reviewer"].tolist() == ["B", "A", "A"]  # newest first
    assert rows["Latest"].tolist() == ["yes", "yes", "no"]
    assert rows.loc[0, "Decisions"] == EMPTY and rows.loc[0, "Comment"] == EMPTY
    assert rows.loc[1, "Decisions"] == "COVID-19: agree; Viral: agree"
    text = rows.astype(str).to_numpy().ravel().tolist()
    assert not any(cell in ("None", "nan", "NaN", "[]", "") for cell in text)
    store.close()


def test_filtered_rows_keep_their_latest_flag_from_all_rows(tmp_path):
    store = filled_store(tmp_path)
    frame = store.reviews_frame()
    latest = mark_latest(frame)
    first_only = frame[frame["version"] == 1]  # a filter that keeps A's first version
    assert review_rows(first_only, latest)["Latest"].tolist() == ["yes", "no"]
    assert mark_latest(first_only).all()  # the filtered rows alone would wrongly say "latest"
    store.close()


def test_export_honours_the_filter_and_carries_everything(tmp_path):
    store = filled_store(tmp_path)
    frame = store.reviews_frame()
    latest = mark_latest(frame)
    view = frame[frame["reviewer"] == "A"]
    csv = export_frame(view, latest).to_csv(index=False)
    back = pd.read_csv(io.StringIO(csv), keep_default_na=False)
    assert len(back) == 2 and set(back["reviewer"]) == {"A"}
    assert back["latest"].tolist() == [False, True]
    assert back["decisions"].tolist() == ["COVID-19=agree|Viral=disagree", "COVID-19=agree|Viral=agree"]
    assert back["probabilities"].iloc[0] == "COVID-19=0.900000|Viral=0.800000|Bacterial=0.100000"
    assert back["expert_labels"].tolist() == ["COVID-19", "COVID-19|Viral"]
    assert back["comment"].iloc[0] == "'=HYPERLINK(\"x\")"  # no formula runs in a spreadsheet
    assert export_frame(frame.iloc[0:0], latest).empty
    store.close()


def test_agreement_is_text_with_counts(tmp_path):
    store = filled_store(tmp_path)
    table = agreement_table(store.reviews_frame(), LABELS).set_index("Finding")
    assert table.loc["COVID-19", "Expert agrees with model"] == "100% (2 of 2 reviews)"
    assert table.loc["Viral", "Experts agree with each other"] == "100% (1 of 1 reviewer pair)"
    empty = agreement_table(store.reviews_frame().iloc[0:0], LABELS)
    assert set(empty["Expert agrees with model"]) == {"no reviews yet"}
    store.close()


def test_thumbnail_of_a_stored_image(tmp_path):
    store = filled_store(tmp_path)
    path = store.image_path(store.reviews_frame()["image_sha256"].iloc[0])
    url = thumbnail_data_url(path)
    assert url.startswith("data:image/png;base64,")
    small = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), 0)
    assert small.shape == (96, 64)  # longest side 96 px, aspect kept
    (tmp_path / "broken.img").write_bytes(b"not an image")
    assert thumbnail_data_url(tmp_path / "broken.img") is None
    store.close()
