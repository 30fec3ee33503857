"""`explain` CLI and the review pipeline on the shipped default bundle and real X-rays."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_core.cli import main
from cxr_core.config import settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def reviewer():
    from cxr_core.pipeline import Reviewer

    return Reviewer.from_paths(settings().default_bundle_path)


def test_review_maps_heatmaps_back_onto_the_original(reviewer):
    review = reviewer.review_one(SAMPLES[0])
    k = len(review.labels)
    assert review.probs.shape == (k,) and review.member_probs.shape == (review.n_members, k)
    assert np.allclose(review.probs, review.member_probs.mean(axis=0))
    assert (review.findings == (review.probs >= review.thresholds)).all()
    heat = review.heatmap_original(0)
    assert heat.shape == review.image.original_size
    x0, y0, x1, y1 = review.pre.box_original
    outside = heat.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0  # nothing outside the crop box
    assert 0 <= heat.min() and heat.max() <= 1
    assert review.std_maps.shape == review.mean_maps.shape
    assert "models" in review.title(0) and "threshold" in review.title(0)
    table = review.table()
    assert table["positive"].tolist() == sorted(table["positive"], reverse=True)


def test_report_png_and_pdf_are_written(reviewer, tmp_path):
    from cxr_core.report import report_pdf, report_png

    review = reviewer.review_one(SAMPLES[1])
    png = report_png(review, include_all=True, uncertainty=True)
    pdf = report_pdf(review)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and pdf[:5] == b"%PDF-"


def test_explain_cli_default_bundle_batch_and_bad_files(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for sample in SAMPLES[:2]:
        shutil.copy(sample, inputs / sample.name)
    (inputs / "empty.png").write_bytes(b"")
    code = main(["explain", str(inputs), str(SAMPLES[2]), "--out", str(tmp_path / "out"),
                 "--all-labels", "--uncertainty", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1 and "empty.png" in captured.err
    out = tmp_path / "out"
    for sample in SAMPLES[:3]:
        assert (out / f"{sample.stem}_report.png").is_file()
        assert (out / f"{sample.stem}_report.pdf").is_file()
    frame = pd.read_csv(out / "predictions.csv")
    labels = json.loads((settings().default_bundle_path / "manifest.json").read_text())["labels"]
    assert len(frame) == 3 * len(labels)
    assert {"probability", "threshold", "agreement", "positive"} <= set(frame.columns)
    assert any(c.startswith("p_") for c in frame.columns)
    payload = json.loads((out / "predictions.json").read_text())
    assert payload["failures"][0]["file"] == "empty.png"


def test_explain_cli_bad_bundle_is_one_sentence(tmp_path, capsys):
    code = main(["explain", str(SAMPLES[0]), "--bundle", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "manifest.json is missing" in err and "Traceback" not in err
