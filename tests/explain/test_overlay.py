import numpy as np

from cxr_core.explain.overlay import (
    ADDED_AREA_COLOR,
    DEFAULT_ALPHA,
    DEFAULT_CUTOFF,
    FALLBACK_BOX_COLOR,
    LUNG_COLOR,
    colorbar,
    colorize,
    display_size,
    heat_opacity,
    mask_outline,
    overlay,
    shrink,
    to_original,
)


def xray_like(size: int = 200, seed: int = 0) -> np.ndarray:
    """A seeded grey image with structure at every scale (ribs, noise), values in [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 0.5 + 0.25 * np.sin(25 * yy) * np.cos(3 * xx) + 0.1 * rng.standard_normal((size, size))
    return np.clip(image, 0.1, 0.9).astype(np.float32)


def test_to_original_places_the_map_in_the_crop_box_only():
    heat = np.ones((8, 8), np.float32)
    canvas = to_original(heat, (10, 20, 30, 60), (100, 50))
    assert canvas.shape == (100, 50)
    assert canvas[20:60, 10:30].min() == 1.0
    assert canvas.sum() == 40 * 20
    assert to_original(heat, (5, 5, 5, 9), (20, 20)).max() == 0  # empty box: nothing placed


def test_a_hot_square_is_clearly_coloured_and_the_rest_is_the_xray_unchanged():
    image = xray_like()
    heat = np.zeros_like(image)
    heat[60:120, 80:140] = 1.0
    heat[150:, :] = DEFAULT_CUTOFF * 0.9  # lukewarm but below the cut-off: not drawn
    out = overlay(image, heat).astype(int)
    gray = np.repeat((image * 255).round()[..., None], 3, axis=2).astype(int)
    distance = np.linalg.norm(out - gray, axis=2)  # RGB distance from the X-ray, 0..441
    chroma = out.max(axis=2) - out.min(axis=2)  # 0 for any grey
    outside = np.ones_like(distance, bool)
    outside[60:120, 80:140] = False
    # every pixel of the square is visibly coloured: far from its grey and clearly not grey
    assert distance[60:120, 80:140].min() >= 60, distance[60:120, 80:140].min()
    assert chroma[60:120, 80:140].min() >= 60, chroma[60:120, 80:140].min()
    assert distance[outside].max() == 0  # every pixel outside is the X-ray, to the grey level
    # the X-ray stays readable under the colour: its contrast survives (scaled by 1 - alpha)
    under = (image[60:120, 80:140] * 255).ravel()
    shown = out[60:120, 80:140].mean(axis=2).ravel()
    assert np.corrcoef(under, shown)[0, 1] > 0.95
    assert np.ptp(shown) >= 0.9 * (1 - DEFAULT_ALPHA) * np.ptp(under)


def test_opacity_is_zero_to_the_cutoff_then_rises_to_alpha():
    values = np.linspace(0, 1, 101, dtype=np.float32)
    opacity = heat_opacity(values, alpha=0.7, cutoff=0.3)
    assert (opacity[values <= 0.3] == 0).all()
    above = opacity[values > 0.3]
    assert (np.diff(above) > 0).all() and above[0] > 0
    assert np.isclose(opacity[-1], 0.7)
    image = np.full((4, 4), 0.5, np.float32)
    heat = np.ones((4, 4), np.float32)
    assert (overlay(image, heat, alpha=0.0) == round(0.5 * 255)).all()
    strong = overlay(image, heat, alpha=1.0)[0, 0].astype(int)
    assert np.abs(strong - (colorize(np.ones(1))[0] * 255).round()).max() <= 1


def test_drawn_colours_are_never_grey():
    """Above the cut-off every colour is saturated, so it cannot be mistaken for the X-ray."""
    rgb = colorize(np.linspace(DEFAULT_CUTOFF, 1, 50))
    saturation = (rgb.max(axis=1) - rgb.min(axis=1)) / rgb.max(axis=1)
    assert saturation.min() > 0.4


def test_colorbar_is_drawn_by_overlay_itself():
    bar = colorbar(width=101, height=10)
    assert bar.shape == (10, 101, 3) and bar.dtype == np.uint8
    cut = int(DEFAULT_CUTOFF * 100)
    assert (bar[:5, :cut] == round(0.25 * 255)).all() and (bar[5:, :cut] == round(0.75 * 255)).all()
    hot = overlay(np.full((1, 1), 0.25, np.float32), np.ones((1, 1), np.float32))[0, 0]
    assert (bar[0, -1] == hot).all()


def test_display_size_and_shrink_never_enlarge():
    assert display_size((6500, 6500), 1024) == (1024, 1024)
    assert display_size((3000, 2000), 1024) == (1024, 683)
    assert display_size((400, 300), 1024) == (400, 300)
    image = xray_like(300)
    small = shrink(image, (100, 100))
    assert small.shape == (100, 100) and abs(small.mean() - image.mean()) < 0.01


def test_mask_outline_draws_lungs_added_area_and_box_in_their_colours():
    image = np.zeros((60, 60), np.float32)
    lungs = np.zeros((60, 60), bool)
    lungs[10:30, 20:40] = True
    full = lungs.copy()
    full[30:45, 20:40] = True  # the area below the lungs
    normal = mask_outline(image, full, (5, 5, 55, 55), fallback=False, lungs=lungs)
    fallback = mask_outline(image, full, (5, 5, 55, 55), fallback=True)
    assert tuple(normal[5, 30]) == (255, 220, 0) and tuple(fallback[5, 30]) == FALLBACK_BOX_COLOR
    assert tuple(normal[10, 30]) == LUNG_COLOR  # top edge of the lungs
    assert tuple(normal[44, 30]) == ADDED_AREA_COLOR  # bottom edge of the added area
    assert tuple(fallback[10, 30]) == LUNG_COLOR  # without lungs: the whole mask in cyan


def test_outline_contours_are_the_lungs_and_the_area_added_below_them():
    """The one outline of every view (Review picture, report, zoomable viewer)."""
    from cxr_core.explain.overlay import outline_contours

    lungs = np.zeros((60, 60), bool)
    lungs[10:30, 20:40] = True
    full = lungs.copy()
    full[30:45, 20:40] = True
    parts = outline_contours(full, lungs)
    lung_points = np.concatenate(parts["lungs"])[:, 0]
    added_points = np.concatenate(parts["added"])[:, 0]
    assert lung_points[:, 1].min() == 10 and lung_points[:, 1].max() == 29  # rows, lungs only
    assert added_points[:, 1].min() == 30 and added_points[:, 1].max() == 44
    alone = outline_contours(full)  # no lungs given: the whole mask is the outline
    assert alone["added"] == [] and np.concatenate(alone["lungs"])[:, 0][:, 1].max() == 44
