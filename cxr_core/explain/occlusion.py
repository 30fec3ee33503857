"""Occlusion sensitivity: where covering the X-ray lowers a finding's logit (Zeiler & Fergus 2014).

A square patch of the crop is set to the crop's mean grey, position after position on a regular
grid; each pixel's value for label k is the mean drop of k's logit over the patches that cover
it, kept where positive (evidence for the finding) and left unnormalised (the ensemble scales
each map to its own peak, as for Grad-CAM). It needs only the members' probabilities, so it runs
on every engine, and its place is exact (no feature-map cells to place). It costs one forward
pass per patch position: 144 at 224 px with the defaults, against one for all-label Grad-CAM.

Why it is offered beside the method's Grad-CAM: Grad-CAM is read off a 7 x 7 feature map whose
middle cells see both lungs, so a finding in one lung lights the mediastinum (docs/explanations.md
measures both on radiologists' boxes).
"""

from __future__ import annotations

import numpy as np

#: Map methods: "gradcam" (the method's) and "occlusion" (this module).
MAP_METHODS = ("gradcam", "occlusion")
#: How the app, the report and the tables name them, and what a reader is told about each.
MAP_METHOD_NAMES = {"gradcam": "Grad-CAM (the published method)", "occlusion": "occlusion sensitivity"}
MAP_METHOD_DESCRIPTIONS = {
    "occlusion": "Occlusion sensitivity: each region is as hot as covering it lowers the finding's "
                 "probability.",
    "gradcam": "Grad-CAM, as the published method computes it: the last feature map's channels "
               "weighted by the finding's mean gradient.",
}
#: Side of the occluding patch as a share of the model input (48 px at 224 px, about one and a
#: half of the last feature map's 32 px cells) and the step between patches as a share of it.
def check_map_method(method: str) -> str:
    """`method` when it is one of `MAP_METHODS`; a ValueError in one sentence otherwise."""
    if method not in MAP_METHODS:
        raise ValueError(f"Unknown map method '{method}'; choose one of: {', '.join(MAP_METHODS)}.")
    return method


PATCH_SHARE = 48 / 224
STRIDE_SHARE = 1 / 3
_EPS = 1e-6


def patch_layout(size: int, patch_share: float = PATCH_SHARE,
                 stride_share: float = STRIDE_SHARE) -> tuple[int, list[int]]:
    """(patch side, patch starts along one axis) for a size x size input: a regular grid whose
    last patch ends on the edge, so every pixel is covered."""
    patch = max(1, int(round(size * patch_share)))
    stride = max(1, int(round(patch * stride_share)))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return patch, starts


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def occlusion_maps(predict, x: np.ndarray, patch_share: float = PATCH_SHARE,
                   stride_share: float = STRIDE_SHARE, batch: int = 64) -> np.ndarray:
    """All-label occlusion maps (N, S, S, K) float32 >= 0 for inputs `x` (N, S, S, 1) in [0, 1];
    `predict` maps (B, S, S, 1) to probabilities (B, K)."""
    x = np.asarray(x, np.float32)
    size = x.shape[1]
    patch, starts = patch_layout(size, patch_share, stride_share)
    places = [(y0, x0) for y0 in starts for x0 in starts]
    cover = np.zeros((size, size), np.float32)
    for y0, x0 in places:
        cover[y0:y0 + patch, x0:x0 + patch] += 1
    out = []
    for image in x:
        base = _logit(predict(image[None]))[0]
        fill = float(image.mean())
        heat = np.zeros((size, size, base.shape[0]), np.float64)
        for lo in range(0, len(places), batch):
            chunk = places[lo:lo + batch]
            covered = np.repeat(image[None], len(chunk), axis=0)
            for j, (y0, x0) in enumerate(chunk):
                covered[j, y0:y0 + patch, x0:x0 + patch] = fill
            drops = base[None] - _logit(predict(covered))  # (B, K)
            for (y0, x0), drop in zip(chunk, drops):
                heat[y0:y0 + patch, x0:x0 + patch] += drop
        out.append(np.maximum(heat / cover[..., None], 0.0).astype(np.float32))
    return np.stack(out) if out else np.zeros((0, size, size, 0), np.float32)


def engine_occlusion(engine, x: np.ndarray, flip: bool = False) -> np.ndarray:
    """One member's occlusion maps (N, S, S, K) on inputs at its size; with `flip`, the mean of
    the maps of the input and of its mirror (mirrored back: pixel-exact, no cell grid)."""

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(engine.explain(batch)[0])

    maps = occlusion_maps(predict, x)
    if flip:
        mirrored = occlusion_maps(predict, np.ascontiguousarray(np.asarray(x)[:, :, ::-1]))
        maps = 0.5 * (maps + mirrored[:, :, ::-1])
    return maps.astype(np.float32)
