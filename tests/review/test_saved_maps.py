"""`explain --save-maps`: the npz holds exactly the maps the Review page shows, in the whole
original image's frame at display size, with the lung fields, on the shipped bundle."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from cxr_core.base.config import settings
from cxr_core.base.errors import DataError
from cxr_core.cli import main
from cxr_core.explain.overlay import DISPLAY_MAX_SIDE
from cxr_core.review.saved_maps import KEYS, read_maps

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def large_xray(tmp_path_factory) -> Path:
    """A real X-ray enlarged past the display size and made non-square (1300 x 1400 px)."""
    pixels = cv2.imread(str(SAMPLES[1]), cv2.IMREAD_GRAYSCALE)
    path = tmp_path_factory.mktemp("big") / "big_xray.png"
    cv2.imwrite(str(path), cv2.resize(pixels, (1300, 1400), interpolation=cv2.INTER_CUBIC))
    return path


def test_save_maps_writes_what_the_review_page_shows(tmp_path, large_xray):
    from cxr_core.review.pipeline import Reviewer

    out = tmp_path / "out"
    assert main(["explain", str(large_xray), str(SAMPLES[0]), "--out", str(out), "--save-maps",
                 "--engine", "tensorflow"]) == 0
    saved = read_maps(out / "big_xray_maps.npz")
    assert (out / f"{SAMPLES[0].stem}_maps.npz").is_file()
    with np.load(out / "big_xray_maps.npz", allow_pickle=False) as raw:
        assert sorted(raw.files) == sorted(KEYS)  # exactly these keys

    review = Reviewer.from_paths(settings().default_bundle_path, engine="tensorflow").review_one(large_xray)
    k = len(review.labels)
    assert saved["labels"].tolist() == review.labels and saved["labels"].dtype.kind == "U"
    assert np.allclose(saved["probabilities"], review.probs, atol=1e-5)
    assert tuple(saved["original_size"]) == (1400, 1300)
    h, w = review.display_size()
    assert max(h, w) == DISPLAY_MAX_SIDE and saved["maps"].shape == (k, h, w)
    assert saved["maps"].dtype == np.float32
    assert saved["maps"].min() >= 0 and saved["maps"].max() <= 1
    for label in range(k):  # the page's map, placed the page's way
        assert np.abs(saved["maps"][label] - review.heatmap_display(label)).max() < 1e-4
    x0, y0, x1, y1 = review.box_display()
    outside = saved["maps"].copy()
    outside[:, y0:y1, x0:x1] = 0
    assert outside.max() == 0 and saved["maps"][:, y0:y1, x0:x1].max() > 0  # zero outside the crop
    lungs = saved["lungs"]
    assert lungs.dtype == bool and lungs.shape == (h, w)
    assert np.array_equal(lungs, review.lungs_display())
    assert 0.1 < lungs.mean() < 0.7  # two lung fields, not the whole image nor nothing
    # the lung fields lie inside the crop box
    assert lungs[y0:y1, x0:x1].sum() == lungs.sum()


def test_read_maps_refuses_other_files_in_one_sentence(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, maps=np.zeros((1, 2, 2)))
    with pytest.raises(DataError, match="lacks labels"):
        read_maps(other)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="could not be read"):
        read_maps(tmp_path / "broken.npz")
