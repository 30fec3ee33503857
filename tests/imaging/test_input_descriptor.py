"""The input check's descriptor of a whole X-ray (layout thumbnail, mirror similarity,
histogram, lung thumbnail, lung geometry) and the edge-strength measure."""

from __future__ import annotations

import cv2
import numpy as np

from cxr_core.imaging.input_descriptor import (
    BINS,
    THUMB,
    describe_input,
    descriptor_size,
    edge_strength,
)
from cxr_core.imaging.lung_geometry import LungGeometry, measure_lungs

LAYOUT = slice(0, THUMB * THUMB)
MIRROR = THUMB * THUMB  # right after the 16 x 16 layout thumbnail
HIST = slice(MIRROR + 1, MIRROR + 1 + BINS)
LUNGS = slice(MIRROR + 1 + BINS, MIRROR + 1 + BINS + THUMB * THUMB)


from tests.imaging.test_lung_geometry import _lungs, _result  # noqa: E402  (the same synthetic masks)


def _xray_like(size: int = 512) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / float(size)
    return (0.5 + 0.4 * np.cos(6 * (xx - 0.5)) * np.sin(3 * yy)).astype(np.float32)


def test_descriptor_has_the_declared_size_and_sees_mirror_symmetry():
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    symmetric = (0.5 + 0.4 * np.cos(6 * (xx - 0.5)) * np.sin(3 * yy)).astype(np.float32)
    lopsided = (0.5 + 0.4 * np.sin(7 * xx) * np.sin(3 * yy)).astype(np.float32)
    mask = _result(_lungs(512))
    a, b = describe_input(symmetric, mask), describe_input(lopsided, mask)
    assert a.shape == b.shape == (descriptor_size(),) and a.dtype == np.float32
    mirror = 256  # right after the 16 x 16 layout thumbnail
    assert a[mirror] > 0.95 and b[mirror] < 0.5
    assert np.allclose(a[-len(LungGeometry.names()):], measure_lungs(mask.lungs).vector())


def test_descriptor_size_counts_every_part():
    assert descriptor_size() == 2 * 16 * 16 + 1 + 16 + len(LungGeometry.names())
    assert LUNGS.stop + len(LungGeometry.names()) == descriptor_size()


def test_the_layout_part_ignores_brightness_and_contrast_the_histogram_does_not():
    image, mask = _xray_like(), _result(_lungs(512))
    base = describe_input(image, mask)
    dimmer = describe_input(0.1 + 0.5 * image, mask)  # same picture, other window
    np.testing.assert_allclose(dimmer[LAYOUT], base[LAYOUT], atol=1e-4)
    assert abs(dimmer[MIRROR] - base[MIRROR]) < 1e-4
    assert abs(base[LAYOUT].mean()) < 1e-4 and abs(base[LAYOUT].std() - 1) < 1e-3  # standardised
    assert not np.allclose(dimmer[HIST], base[HIST])
    np.testing.assert_array_equal(dimmer[LUNGS], base[LUNGS])


def test_the_layout_part_does_not_depend_on_the_working_size():
    mask_big, mask_small = _result(_lungs(512)), _result(_lungs(256))
    big = describe_input(_xray_like(512), mask_big)
    small = describe_input(_xray_like(256), mask_small)
    np.testing.assert_allclose(big[LAYOUT], small[LAYOUT], atol=0.05)
    np.testing.assert_allclose(big[LUNGS], small[LUNGS], atol=0.05)


def test_the_histogram_is_the_share_of_pixels_per_sixteenth_of_the_range():
    image = np.zeros((64, 64), np.float32)
    image[:, 16:] = 0.3  # bin 4
    image[:, 48:] = 1.0  # the last bin includes 1.0
    d = describe_input(image, _result(_lungs(64)))
    expected = np.zeros(BINS, np.float32)
    expected[[0, 4, 15]] = [0.25, 0.5, 0.25]
    np.testing.assert_allclose(d[HIST], expected, atol=1e-6)
    assert d[HIST].sum() == np.float32(1.0)


def test_the_lung_part_is_the_mask_thumbnail_and_a_constant_image_stays_finite():
    mask = _result(_lungs(256))
    d = describe_input(np.full((256, 256), 0.5, np.float32), mask)
    assert np.isfinite(d).all()
    np.testing.assert_array_equal(d[LAYOUT], 0.0)  # nothing to standardise: no division blow-up
    lungs = d[LUNGS].reshape(THUMB, THUMB)
    assert lungs.max() == 1.0 and lungs.min() == 0.0
    assert lungs[:, :THUMB // 2].sum() > 0 and lungs[:, THUMB // 2:].sum() > 0  # two fields
    np.testing.assert_allclose(lungs, lungs[:, ::-1], atol=0.15)  # placed symmetrically


def test_a_given_geometry_is_used_instead_of_measuring_again():
    mask = _result(_lungs(256))
    geometry = LungGeometry(*np.arange(len(LungGeometry.names()), dtype=float))
    d = describe_input(_xray_like(256), mask, geometry)
    np.testing.assert_array_equal(d[LUNGS.stop:], geometry.vector())


def test_edge_strength_is_scale_free_and_tells_edges_from_smooth_fields():
    rng = np.random.default_rng(0)
    smooth = cv2.resize(rng.random((4, 4)).astype(np.float32), (512, 512),
                        interpolation=cv2.INTER_CUBIC)
    edged = smooth.copy()
    edged[:, 250:] += 0.5  # one sharp vertical edge
    edged[100:300, 100:140] -= 0.4  # and a dark box
    assert edge_strength(edged) > 2 * edge_strength(smooth)
    assert abs(edge_strength(3.0 * edged + 7.0) - edge_strength(edged)) < 1e-3 * edge_strength(edged)
    assert abs(edge_strength(cv2.resize(edged, (1024, 1024), interpolation=cv2.INTER_NEAREST))
               - edge_strength(edged)) < 0.1 * edge_strength(edged)
    # a constant field has no edges (resampled from another size, only round-off is left)
    assert edge_strength(np.full((256, 256), 0.4, np.float32)) == 0.0
    assert edge_strength(np.full((300, 300), 0.4, np.float32)) < 0.1 < edge_strength(edged) / 5
