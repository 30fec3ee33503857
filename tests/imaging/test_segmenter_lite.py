"""The lung U-Net's TensorFlow Lite export: same masks, no TensorFlow needed to run it."""

import shutil

import numpy as np

from cxr_core.imaging.segmentation import DEFAULT_SEGMENTER_DIR, LungSegmenter
from cxr_core.imaging.segmenter_lite import (
    LITE_NAME,
    LiteSegmenter,
    export_segmenter_lite,
    load_segmenter,
)
from tests.helpers import xray_batch


def test_shipped_lite_segmenter_matches_the_unet():
    """The shipped segmenter.tflite is the export of the shipped weights (not a stale one)."""
    keras_seg = LungSegmenter.load(DEFAULT_SEGMENTER_DIR)
    lite_seg = load_segmenter(DEFAULT_SEGMENTER_DIR, lite=True)
    assert isinstance(lite_seg, LiteSegmenter)
    images = xray_batch(2, 300, seed=3)
    assert np.abs(lite_seg.predict(images) - keras_seg.predict(images)).max() < 1e-3
    small = lite_seg.predict(images[0], output_size=lite_seg.size)
    assert small.shape == (lite_seg.size, lite_seg.size)


def test_export_writes_a_checked_model_and_load_picks_it(tmp_path):
    folder = tmp_path / "seg"
    shutil.copytree(DEFAULT_SEGMENTER_DIR, folder, ignore=shutil.ignore_patterns(LITE_NAME))
    assert type(load_segmenter(folder, lite=True)) is LungSegmenter  # nothing exported yet
    path = export_segmenter_lite(folder)
    assert path.name == LITE_NAME and path.stat().st_size > 1_000_000
    assert isinstance(load_segmenter(folder, lite=True), LiteSegmenter)
    assert type(load_segmenter(folder, lite=False)) is LungSegmenter
