"""The input check's decision: DICOM header, lung geometry, the stored score, and real data."""

from pathlib import Path

import numpy as np
import pytest

from cxr_core.imaging.image_io import LoadedImage, load_image
from cxr_core.imaging.input_descriptor import descriptor_size
from cxr_core.imaging.preprocessing import preprocess_image
from cxr_core.imaging.segmentation import LungSegmenter
from cxr_core.modeling.input_model import InputModel
from cxr_core.review.input_check import check_input, dicom_problem

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


def _tagged(pixels=None, **tags) -> LoadedImage:
    pixels = np.zeros((64, 64), np.float32) if pixels is None else pixels
    return LoadedImage(pixels, pixels.shape, "dicom", 12, "MONOCHROME2", "0" * 64, **tags)


@pytest.fixture(scope="module")
def segmenter():
    return LungSegmenter.load()


@pytest.fixture(scope="module")
def sample(segmenter):
    image = load_image(SAMPLES[0])
    return image, preprocess_image(image, segmenter)


def _constant_model(score: float, threshold: float) -> InputModel:
    d = descriptor_size()
    return InputModel(np.zeros(d), np.ones(d), np.zeros(d), -score, threshold)


def test_dicom_header_refuses_other_body_parts_lateral_views_and_other_modalities():
    assert dicom_problem(_tagged(body_part="CHEST", view_position="PA", modality="DX")) == ""
    assert dicom_problem(_tagged(body_part="TORAX", view_position="AP", modality="CR")) == ""
    assert dicom_problem(_tagged()) == ""  # no tags: nothing to say
    assert dicom_problem(_tagged(body_part="UNKNOWN")) == ""
    assert "body part is HAND" in dicom_problem(_tagged(body_part="HAND"))
    assert "view is LL" in dicom_problem(_tagged(body_part="CHEST", view_position="LL"))
    assert "computed tomography (CT)" in dicom_problem(_tagged(body_part="CHEST", modality="CT"))


def test_a_real_xray_passes_and_a_header_or_score_refuses_it(sample):
    image, pre = sample
    plain = check_input(image, pre, None)
    assert plain.passed and plain.reason == "" and plain.score is None and plain.checks == ("lungs",)
    hand = LoadedImage(image.pixels, image.original_size, "dicom", 8, "MONOCHROME2", image.sha256,
                       body_part="HAND")
    refused = check_input(hand, pre, None)
    assert not refused.passed and refused.checks == ("dicom", "lungs")
    assert refused.reason == "The DICOM header says the body part is HAND, not the chest."
    ok = check_input(image, pre, _constant_model(1.0, 2.0))
    assert ok.passed and ok.score == pytest.approx(1.0) and ok.checks == ("lungs", "score")
    high = check_input(image, pre, _constant_model(3.0, 2.0))
    assert not high.passed and "out-of-distribution score 3.00 > 2.00" in high.reason
    record = high.record()
    assert record["passed"] is False and record["score"] == 3.0 and record["threshold"] == 2.0
