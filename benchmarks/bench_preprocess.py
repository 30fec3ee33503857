"""Decode + resize alone vs the full preprocessing of a 2048 x 2048 16-bit PNG; segmenter speed."""

from __future__ import annotations

import sys

import cv2
import numpy as np

from benchmarks.common import timed, write_result


def synthetic_xray(size: int = 2048) -> bytes:
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.exp(-((xx - 0.5) ** 2) / 0.08 - ((yy - 0.55) ** 2) / 0.12)
    lungs = np.exp(-((xx - 0.32) ** 2) / 0.01 - ((yy - 0.45) ** 2) / 0.04) + \
        np.exp(-((xx - 0.68) ** 2) / 0.01 - ((yy - 0.45) ** 2) / 0.04)
    image = np.clip(0.2 + 0.6 * body - 0.4 * lungs, 0, 1)
    image += np.random.default_rng(0).normal(0, 0.01, image.shape)
    ok, buf = cv2.imencode(".png", (np.clip(image, 0, 1) * 4095).astype(np.uint16))
    return buf.tobytes()


def main() -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cxr_core.imaging.image_io import load_image
    from cxr_core.imaging.preprocessing import WORK_SIZE, preprocess_image
    from cxr_core.imaging.resize import resize_to
    from cxr_core.imaging.segmentation import LungSegmenter

    data = synthetic_xray()
    segmenter = LungSegmenter.load()

    def decode_resize():
        return resize_to(load_image(data, filename="x.png").pixels, WORK_SIZE)

    def full():
        return preprocess_image(load_image(data, filename="x.png"), segmenter)

    base = timed(decode_resize, repeat=7)
    whole = timed(full, repeat=7)
    x = np.random.default_rng(0).random((1, 256, 256)).astype("float32")
    seg = timed(lambda: segmenter.predict(x), repeat=20)
    result = {
        "image": "2048x2048 16-bit PNG (synthetic)",
        "decode_resize": base, "full_preprocessing": whole,
        "decode_resize_images_per_s": round(1 / base["median_s"], 2),
        "full_images_per_s": round(1 / whole["median_s"], 2),
        "ratio_full_over_decode": round(whole["median_s"] / base["median_s"], 3),
        "target_ratio": 1.5,
        "segmenter_256_ms": round(seg["median_s"] * 1000, 1), "segmenter_target_ms": 50,
    }
    write_result("preprocess", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
