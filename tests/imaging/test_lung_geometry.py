"""Lung-mask geometry and the gross refusals (the input descriptor: test_input_descriptor)."""

import cv2
import numpy as np

from cxr_core.imaging.lung_geometry import geometry_problem, measure_lungs
from cxr_core.imaging.postprocess import MaskResult


def _lungs(size=256, centres=((0.3, 0.45), (0.7, 0.45)), axes=(0.12, 0.25)) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    for cx, cy in centres:
        cv2.ellipse(mask, (int(cx * size), int(cy * size)), (int(axes[0] * size), int(axes[1] * size)),
                    0, 0, 360, 1, -1)
    return mask


def _result(mask, fallback=False, reason=""):
    return MaskResult(mask, mask.copy(), (0, 0, mask.shape[1], mask.shape[0]), fallback, reason)


def test_two_lungs_side_by_side_measure_as_such_and_pass():
    g = measure_lungs(_lungs())
    assert g.fields_found == 2 and g.area_ratio > 0.95
    assert abs(g.centre_x - 0.5) < 0.02 and abs(g.separation_x - 0.4) < 0.02
    assert g.offset_y < 0.01 and g.vertical_overlap > 0.95 and g.elongation > 1.5
    assert g.border_left == g.border_right == g.border_top == g.border_bottom == 0.0
    assert 0.19 < g.top < 0.22 and 0.69 < g.bottom < 0.72
    assert geometry_problem(_result(_lungs()), g) == ""


def test_stacked_lungs_and_failed_segmentation_are_refused():
    stacked = _lungs(centres=((0.5, 0.25), (0.5, 0.75)), axes=(0.25, 0.12))
    g = measure_lungs(stacked)
    assert g.vertical_overlap < 0 and g.offset_y > g.separation_x
    assert "one above the other" in geometry_problem(_result(stacked), g)
    empty = np.zeros((64, 64), np.uint8)
    problem = geometry_problem(_result(empty, True, "no lung found"), measure_lungs(empty))
    assert problem == "The lung segmentation failed (no lung found)."


def test_a_lung_cut_by_the_border_shows_in_the_border_shares():
    cut = _lungs(centres=((0.05, 0.45), (0.6, 0.45)))
    g = measure_lungs(cut)
    assert g.border_left > 0.01 and g.border_right == 0.0 and g.left == 0.0


def test_taper_tells_upright_lungs_from_upside_down_ones():
    """Lungs are wider at the bases than at the apices; a 180-degree rotation reverses that."""
    upright = np.zeros((256, 256), np.uint8)
    for x in (70, 186):  # two triangles with the apex at the top
        cv2.fillPoly(upright, [np.array([[x, 50], [x - 45, 210], [x + 45, 210]], np.int32)], 1)
    up = measure_lungs(upright)
    down = measure_lungs(upright[::-1].copy())
    assert up.taper > 2.0 and down.taper < 0.5
    assert 0.9 < measure_lungs(_lungs()).taper < 1.1  # symmetric ellipses: no direction
    assert measure_lungs(np.zeros((32, 32), np.uint8)).taper == 0.0
