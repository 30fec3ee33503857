import numpy as np

from cxr_core.imaging.postprocess import (
    add_below_lungs,
    fill_holes,
    keep_largest,
    postprocess_mask,
    remove_small,
    split_merged,
)


def two_lungs(size=256):
    mask = np.zeros((size, size), np.uint8)
    mask[40:200, 40:110] = 1
    mask[40:180, 146:216] = 1
    return mask


def test_fill_holes_fills_enclosed_only():
    mask = two_lungs()
    mask[80:100, 60:80] = 0  # hole inside the left lung
    filled = fill_holes(mask)
    assert filled[90, 70] == 1 and filled[5, 5] == 0
    assert filled.sum() == two_lungs().sum()


def test_small_blobs_removed_and_two_largest_kept():
    mask = two_lungs()
    mask[5:8, 5:8] = 1  # tiny speck
    mask[220:240, 120:140] = 1  # a third, mid-sized blob
    cleaned = keep_largest(remove_small(mask, 0.001), 2)
    assert cleaned[6, 6] == 0 and cleaned[230, 130] == 0
    assert cleaned.sum() == two_lungs().sum()


def test_merged_lungs_are_split_in_two():
    mask = two_lungs()
    mask[100:120, 110:146] = 1  # a bridge joining the lungs
    import cv2

    assert cv2.connectedComponents(mask)[0] - 1 == 1
    split = split_merged(mask)
    assert cv2.connectedComponents(split)[0] - 1 == 2


def test_area_below_lungs_added_down_to_lowest_lung_row():
    full = add_below_lungs(two_lungs())
    assert full[190, 180] == 1  # below the shorter right lung, above the lowest lung row
    assert full[190, 128] == 1  # between the lungs
    assert full[210, 128] == 0  # never below the lung fields


def test_postprocess_gives_box_and_no_fallback_for_good_mask():
    result = postprocess_mask(two_lungs().astype(np.float32))
    assert not result.fallback
    x0, y0, x1, y1 = result.box
    assert x0 < 40 and x1 > 216 and y0 < 40 and y1 > 200
    assert result.full.sum() > result.lungs.sum()


def test_empty_or_implausible_mask_falls_back_flagged():
    empty = postprocess_mask(np.zeros((256, 256), np.float32))
    assert empty.fallback and empty.box == (0, 0, 256, 256) and "no lung" in empty.reason
    corner = np.zeros((256, 256), np.float32)
    corner[0:60, 0:60] = 1
    result = postprocess_mask(corner)
    assert result.fallback and result.reason


def touching_lungs(size=256):
    """Two elliptic lungs whose apices touch and overlap near the top, as on many PA X-rays."""
    rows, cols = np.mgrid[:size, :size]
    left = ((cols - 86) / 40.0) ** 2 + ((rows - 130) / 95.0) ** 2 <= 1
    right = ((cols - 171) / 40.0) ** 2 + ((rows - 125) / 90.0) ** 2 <= 1  # 6 px gap
    bridge = (np.abs(cols - 128) <= 12) & (rows >= 55) & (rows <= 85)  # the apices meet
    return left, right, (left | right | bridge).astype(np.uint8)


def test_touching_lungs_are_separated_along_the_gap_without_losing_area():
    import cv2

    left, right, merged = touching_lungs()
    assert cv2.connectedComponents(merged)[0] - 1 == 1
    split = split_merged(merged)
    count, labels = cv2.connectedComponents(split)
    assert count - 1 == 2
    for lung in (left, right):
        ids, hits = np.unique(labels[lung & (split > 0)], return_counts=True)
        kept = hits.max() / lung.sum()  # the lung's share that stays in one component
        assert kept > 0.97, kept
    # no straight cut: below the contact the cut never removes lung pixels
    removed = (merged > 0) & (split == 0)
    assert removed[100:, :].sum() == 0


def test_split_follows_the_darker_gap_of_the_probability_map():
    import cv2

    left, right, merged = touching_lungs()
    probs = merged.astype(np.float32)
    probs[:, 120:124] *= 0.3  # the segmenter is least sure along columns 120-123
    split = split_merged(merged, probs)
    removed = np.nonzero((merged > 0) & (split == 0))[1]
    assert removed.size and 119 <= np.median(removed) <= 125
    assert cv2.connectedComponents(split)[0] - 1 == 2
