"""Ensemble and uncertainty maps: every member's probabilities and all-label Grad-CAM maps,
resized, normalised and combined into the mean and the across-member standard deviation.

Everything after the forward pass (resize, normalisation, mean and standard deviation) runs
inside one compiled TensorFlow graph: mixing NumPy BLAS calls between TensorFlow calls made the
two thread pools fight over the cores and cost ~40% on 2 cores.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..imaging.resize import resize_batch
from .engines import as_engine
from .gradcam import normalise_maps, normalise_tensor


#: where a member's map cells look: (centre of cell 0, stride, input side) in input pixels
#: (`modeling.feature_geometry.FeatureGrid.as_record`); None: the naive equal-strips placement
Grid = tuple[float, float, int] | None


def _linear_matrix(positions: np.ndarray, src: int) -> np.ndarray:
    """(len(positions), src) matrix sampling `src` cells linearly at fractional positions
    (clamped to the first and last cell)."""
    centres = np.clip(positions, 0, src - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, src - 1)
    frac = (centres - low).astype(np.float32)
    matrix = np.zeros((len(positions), src), np.float32)
    np.add.at(matrix, (np.arange(len(positions)), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(len(positions)), high), frac)
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=128)
def interpolation_matrix(src: int, dst: int, grid: Grid = None) -> np.ndarray:
    """(dst, src) matrix of bilinear resizing along one axis (edges clamped): resizing a map is
    R_y @ map @ R_x^T. Without a grid, cell i is taken to sit at the centre of the i-th of `src`
    equal strips (half-pixel centres, as OpenCV's INTER_LINEAR and tf.image.resize); with the
    member's grid, each output pixel reads the cells at the place they really look (strided
    "same" convolutions look below and right of the equal strips: `modeling.feature_geometry`)."""
    if grid is None:
        return _linear_matrix((np.arange(dst) + 0.5) * src / dst - 0.5, src)
    first, stride, pixels = grid
    return _linear_matrix(((np.arange(dst) + 0.5) * pixels / dst - 0.5 - first) / stride, src)


def mirror_back(raw_mirror: np.ndarray, grid: Grid) -> np.ndarray:
    """Maps (N, h, w, K) computed on the left-right mirrored input, put back in the unmirrored
    input's cell grid. Reversing the cells is exact only for a grid centred on the image; a
    grid that looks right of centre, mirrored, looks left of it, so the reversed cells are
    re-sampled by that difference (for MobileNetV2 at 128 px almost a whole cell)."""
    flipped = np.asarray(raw_mirror, np.float32)[:, :, ::-1]
    if grid is None:
        return flipped
    first, stride, pixels = grid
    w = flipped.shape[2]
    mirrored_first = pixels - 1 - first - (w - 1) * stride  # cell 0 of the reversed grid
    shift = (first - mirrored_first) / stride
    if abs(shift) < 1e-6:
        return flipped
    resample = _linear_matrix(np.arange(w) + shift, w)  # (w, w)
    return np.einsum("uw,nhwk->nhuk", resample, flipped)


def resize_maps(raw: np.ndarray, size: int, grid: Grid = None) -> np.ndarray:
    """Raw maps (..., h, w) -> (..., size, size) resized bilinearly (placed by the member's
    grid) and normalised: the same numbers the ensemble graph computes, for one member's map
    on demand."""
    raw = np.asarray(raw, np.float32)
    grid = tuple(grid) if grid is not None else None
    ry = interpolation_matrix(raw.shape[-2], size, grid)
    rx = interpolation_matrix(raw.shape[-1], size, grid)
    resized = ry @ raw @ rx.T
    flat = resized.reshape(-1, size, size)
    return normalise_maps(flat).reshape(resized.shape)


_ENSEMBLE_GRAPHS: dict = {}


def _ensemble_graph(size: int, grids: tuple):
    """Compiled raw member maps -> (mean, std) of the resized, normalised member maps, each
    (N, K, size, size). One XLA-fused graph: the member maps are never written out whole."""
    key = (size, grids)
    if key in _ENSEMBLE_GRAPHS:
        return _ENSEMBLE_GRAPHS[key]
    import tensorflow as tf

    @tf.function(jit_compile=True, reduce_retracing=True)
    def run(raws):
        total = squares = None
        for raw, grid in zip(raws, grids):  # (N, h, w, K) per member
            ry = tf.constant(interpolation_matrix(raw.shape[1], size, grid))
            rx = tf.constant(interpolation_matrix(raw.shape[2], size, grid))
            resized = normalise_tensor(tf.einsum("sh,nhwk,tw->nkst", ry, raw, rx), axes=(2, 3))
            total = resized if total is None else total + resized
            squares = tf.square(resized) if squares is None else squares + tf.square(resized)
        mean = total / len(raws)
        # one-pass variance, clipped at 0 against rounding
        return mean, tf.sqrt(tf.maximum(squares / len(raws) - tf.square(mean), 0.0))

    _ENSEMBLE_GRAPHS[key] = run
    return run


@dataclass
class Explanation:
    """Ensemble output with one heatmap per label, for N images."""

    member_probs: np.ndarray  # (M, N, K)
    member_cams: list[np.ndarray]  # M raw maps (N, h_m, w_m, K); `resize_maps` gives one on demand
    mean_maps: np.ndarray  # (N, K, S, S): mean of the resized, normalised member maps
    std_maps: np.ndarray  # (N, K, S, S): standard deviation across members (uncertainty)
    map_grids: list = field(default_factory=list)  # M member grids (`Grid`) the maps were placed by


#: labels resized and combined together in `ensemble_numpy`: a chunk of maps stays in the CPU's
#: cache through resize, normalisation and the running sums (about twice as fast for 54 labels)
_LABEL_CHUNK = 6


def ensemble_numpy(raws: list[np.ndarray], size: int,
                   grids: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of the compiled ensemble graph, for Lite engines (no TensorFlow in the
    process): (mean, std), each (N, K, size, size), of the resized, normalised member maps."""
    n, k = raws[0].shape[0], raws[0].shape[-1]
    grids = grids or (None,) * len(raws)
    resizers = [(interpolation_matrix(raw.shape[1], size, grid),
                 interpolation_matrix(raw.shape[2], size, grid).T) for raw, grid in zip(raws, grids)]
    maps = [np.ascontiguousarray(np.asarray(raw, np.float32).transpose(0, 3, 1, 2)) for raw in raws]
    mean = np.empty((n, k, size, size), np.float32)
    std = np.empty_like(mean)
    for lo in range(0, k, _LABEL_CHUNK):
        total = squares = None
        for (ry, rx_t), member in zip(resizers, maps):
            resized = ry @ member[:, lo:lo + _LABEL_CHUNK] @ rx_t  # (N, c, S, S)
            resized = normalise_maps(resized.reshape(-1, size, size)).reshape(resized.shape)
            if total is None:
                total, squares = resized, np.square(resized)
            else:
                total += resized
                squares += np.square(resized)
        chunk_mean = total / len(raws)
        mean[:, lo:lo + _LABEL_CHUNK] = chunk_mean
        # one-pass variance, clipped at 0 against rounding
        std[:, lo:lo + _LABEL_CHUNK] = np.sqrt(np.maximum(squares / len(raws) - np.square(chunk_mean), 0.0))
    return mean, std


def _member_explain(engine, crops: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """One member's probabilities (N, K) and raw maps (N, h, w, K); with `flip`, the mean over
    the crop and its left-right mirror (the mirror's maps flipped back first)."""
    x = resize_batch(crops, engine.input_size)
    p, raw = engine.explain(x)
    p, raw = np.asarray(p), np.asarray(raw, np.float32)
    if flip:
        p_mirror, raw_mirror = engine.explain(np.ascontiguousarray(x[:, :, ::-1]))
        p = 0.5 * (p + np.asarray(p_mirror))
        raw = 0.5 * (raw + mirror_back(raw_mirror, engine_grid(engine)))
    return p, raw


def engine_grid(engine) -> Grid:
    """The member's grid as a hashable tuple (None when the engine does not know it)."""
    grid = getattr(engine, "map_grid", None)
    return tuple(grid) if grid is not None else None


def explain_arrays(members: list, crops: np.ndarray, size: int, flip: bool = False,
                   method: str = "gradcam") -> Explanation:
    """Probabilities and all-label maps of every member (Keras classifiers or engines from
    `cxr_core.engines`), resized to `size`, normalised and combined into the ensemble mean and
    the across-member standard deviation; `flip` averages each member over the crop and its
    mirror (the bundle's test-time flips). `method`: "gradcam" (the method's) or "occlusion"
    (`explain.occlusion`: maps at the input's pixels, placed exactly). Lite engines only: all in
    NumPy, TensorFlow unused."""
    from .occlusion import check_map_method

    check_map_method(method)
    engines = [as_engine(member) for member in members]
    if method == "occlusion":
        return _occlusion_explanation(engines, crops, size, flip)
    if all(getattr(engine, "kind", None) == "lite" for engine in engines):
        probs, cams = [], []
        for engine in engines:
            p, raw = _member_explain(engine, crops, flip)
            probs.append(np.asarray(p))
            cams.append(np.asarray(raw, np.float32))
        grids = tuple(engine_grid(engine) for engine in engines)
        mean, std = ensemble_numpy(cams, int(size), grids)
        return Explanation(np.stack(probs), cams, mean.astype(np.float32), std.astype(np.float32),
                           list(grids))
    import tensorflow as tf

    probs, cams = [], []
    for engine in engines:
        p, raw = _member_explain(engine, crops, flip)
        probs.append(np.asarray(p))
        cams.append(tf.convert_to_tensor(raw, tf.float32))
    grids = tuple(engine_grid(engine) for engine in engines)
    mean, std = _ensemble_graph(int(size), grids)(tuple(cams))
    return Explanation(np.stack(probs), [np.asarray(c) for c in cams], np.asarray(mean), np.asarray(std),
                       list(grids))


def _occlusion_explanation(engines: list, crops: np.ndarray, size: int, flip: bool) -> Explanation:
    """`explain_arrays` with occlusion maps: the probabilities as for Grad-CAM (same engines,
    same flips), each member's maps at its input's pixels (no cell grid), combined in NumPy."""
    from .occlusion import engine_occlusion

    probs, maps = [], []
    for engine in engines:
        x = resize_batch(crops, engine.input_size)
        p, _ = _member_explain(engine, crops, flip)
        probs.append(np.asarray(p))
        maps.append(engine_occlusion(engine, x, flip))
    grids = (None,) * len(engines)
    mean, std = ensemble_numpy(maps, int(size), grids)
    return Explanation(np.stack(probs), maps, mean.astype(np.float32), std.astype(np.float32), list(grids))
