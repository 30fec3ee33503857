import numpy as np

from cxr_core.imaging.image_io import load_image
from cxr_core.imaging.preprocessing import WORK_SIZE, preprocess_batch, preprocess_image


class FakeSegmenter:
    """Returns a fixed two-lung probability map (or nothing), whatever the image."""

    def __init__(self, empty=False):
        self.empty = empty

    size = 256

    def predict(self, images, output_size=None):
        import cv2

        images = np.asarray(images)
        single = images.ndim == 2
        batch = images[None] if single else images
        probs = np.zeros(batch.shape, np.float32)
        if not self.empty:
            probs[:, 100:400, 80:230] = 0.9
            probs[:, 100:380, 282:432] = 0.9
        if output_size:
            probs = np.stack([cv2.resize(p, (output_size, output_size)) for p in probs])
        return probs[0] if single else probs


def test_preprocess_crops_to_lungs_and_maps_box_to_original():
    rng = np.random.default_rng(0)
    image = rng.random((1024, 800)).astype("float32")
    result = preprocess_image(image, FakeSegmenter())
    assert result.crop.shape == (WORK_SIZE, WORK_SIZE) and not result.fallback
    x0, y0, x1, y1 = result.mask.box
    assert x0 < 80 and x1 > 432 and y0 < 100 and y1 > 400
    ox0, oy0, ox1, oy1 = result.box_original
    assert abs(ox0 - x0 * 800 / 512) <= 1 and abs(oy1 - y1 * 1024 / 512) <= 1
    assert result.original_size == (1024, 800)


def test_empty_mask_falls_back_to_whole_image_and_is_flagged():
    image = np.random.default_rng(1).random((600, 600)).astype("float32")
    result = preprocess_image(image, FakeSegmenter(empty=True))
    assert result.fallback and result.mask.reason
    assert result.box_original == (0, 0, 600, 600)
    np.testing.assert_allclose(result.crop, result.image, atol=1e-6)


def test_batch_and_single_paths_agree(tmp_path):
    import cv2

    arr = (np.random.default_rng(2).random((700, 650)) * 255).astype(np.uint8)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), arr)
    loaded = load_image(path)
    one = preprocess_image(loaded, FakeSegmenter())
    many = preprocess_batch([loaded, loaded], FakeSegmenter())
    assert len(many) == 2
    np.testing.assert_array_equal(one.crop, many[1].crop)
    assert one.mask.box == many[0].mask.box
