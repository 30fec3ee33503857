import numpy as np

from cxr_core.explain.overlay import colorize, mask_outline, overlay, to_original


def test_to_original_places_the_map_in_the_crop_box_only():
    heat = np.ones((8, 8), np.float32)
    canvas = to_original(heat, (10, 20, 30, 60), (100, 50))
    assert canvas.shape == (100, 50)
    assert canvas[20:60, 10:30].min() == 1.0
    assert canvas.sum() == 40 * 20
    assert to_original(heat, (5, 5, 5, 9), (20, 20)).max() == 0  # empty box: nothing placed


def test_overlay_keeps_cold_areas_unchanged_and_scales_with_alpha():
    image = np.full((4, 4), 0.5, np.float32)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    out = overlay(image, heat, alpha=0.4)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert (out[1:, 1:] == round(0.5 * 255)).all()  # heat 0: the X-ray as it is
    assert not (out[0, 0] == round(0.5 * 255)).all()
    assert (overlay(image, heat, alpha=0.0) == round(0.5 * 255)).all()
    strong = overlay(image, heat, alpha=1.0)[0, 0].astype(int)
    assert np.abs(strong - (colorize(np.ones(1))[0] * 255).round()).max() <= 1


def test_colormap_brightness_rises_with_the_value():
    rgb = colorize(np.linspace(0, 1, 11))
    luminance = rgb @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)


def test_mask_outline_marks_fallback_in_red():
    image = np.zeros((60, 60), np.float32)
    mask = np.zeros((60, 60), bool)
    mask[20:40, 20:40] = True
    normal = mask_outline(image, mask, (5, 5, 55, 55), fallback=False)
    fallback = mask_outline(image, mask, (5, 5, 55, 55), fallback=True)
    assert tuple(normal[5, 30]) == (255, 220, 0) and tuple(fallback[5, 30]) == (255, 60, 60)
    assert tuple(normal[20, 30]) == (0, 220, 255)  # lung outline
