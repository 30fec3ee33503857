"""The non-X-ray images the input check is fitted against: seeded, in [0, 1], of each kind."""

import numpy as np

from cxr_core.imaging.input_negatives import (
    OTHER_IMAGES,
    XRAY_TRANSFORMS,
    document_image,
    field_image,
    transform_xray,
)


def test_other_images_are_seeded_unit_range_and_differ_by_kind():
    for make in OTHER_IMAGES:
        a, b = make(np.random.default_rng(5)), make(np.random.default_rng(5))
        assert a.shape == (512, 512) and a.dtype == np.float32
        assert np.array_equal(a, b) and 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0.01
    page = document_image(np.random.default_rng(1))
    _, counts = np.unique(page, return_counts=True)
    assert counts.max() > 0.5 * page.size  # mostly plain paper around the lines of ink
    field = field_image(np.random.default_rng(1))
    assert np.abs(np.diff(field, axis=1)).mean() < 0.05  # smooth


def test_xray_transforms_rotate_or_cut():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    shapes = {kind: transform_xray(image, kind).shape for kind in XRAY_TRANSFORMS}
    assert shapes["rotate90"] == (4, 3) and shapes["rotate180"] == (3, 4)
    assert shapes["left_half"] == (3, 2) and shapes["top_half"] == (1, 4)
