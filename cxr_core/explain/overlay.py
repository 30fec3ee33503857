"""Map heatmaps back through the crop onto the X-ray and colour them: the one heatmap look.

The app, the PNG/PDF report and the `explain` output all draw maps with `overlay` and explain
them with `colorbar`: a colormap whose opacity rises with the map value, and a cut-off below
which nothing is drawn, so the X-ray stays readable and the hot region stands out.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Perceptually ordered colormap with no grey or black end (matplotlib's 'turbo'): blue -> green
#: -> yellow -> red reads as cold -> hot and never looks like the grey X-ray beneath it.
DEFAULT_COLORMAP = "turbo"
#: Opacity of the hottest value (map value 1); lower values are more transparent.
DEFAULT_ALPHA = 0.7
#: Map values at or below this are not drawn at all.
DEFAULT_CUTOFF = 0.25
#: Opacity rises as ((heat - cutoff) / (1 - cutoff)) ** OPACITY_GAMMA: quickly above the cut-off,
#: so a region at 0.6 is already clearly coloured, then levelling off towards `alpha`.
OPACITY_GAMMA = 0.6
#: Longest side of the images the app and the report show; maps are blended at this size.
DISPLAY_MAX_SIDE = 1024
#: Lung outline, the area added below the lungs, the crop box and the fallback box (RGB).
LUNG_COLOR = (0, 220, 255)
ADDED_AREA_COLOR = (255, 0, 200)
BOX_COLOR = (255, 220, 0)
FALLBACK_BOX_COLOR = (255, 60, 60)


def to_original(heatmap: np.ndarray, box_original: tuple[int, int, int, int],
                original_size: tuple[int, int]) -> np.ndarray:
    """Place a crop-space heatmap (S x S) into the original image frame (H x W), zero outside."""
    height, width = original_size
    x0, y0, x1, y1 = box_original
    canvas = np.zeros((height, width), np.float32)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = cv2.resize(heatmap.astype(np.float32), (x1 - x0, y1 - y0),
                                          interpolation=cv2.INTER_LINEAR)
    return canvas


def display_scale(original_size: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE) -> float:
    """Factor (<= 1) that brings an image of `original_size` (H, W) to at most `max_side` px."""
    return min(1.0, max_side / max(original_size))


def display_size(original_size: tuple[int, int], max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(H, W) of the displayed image: the original shrunk to at most `max_side` px, never enlarged."""
    scale = display_scale(original_size, max_side)
    return max(1, round(original_size[0] * scale)), max(1, round(original_size[1] * scale))


def scale_box(box: tuple[int, int, int, int], scale: float) -> tuple[int, int, int, int]:
    """A box (x0, y0, x1, y1) in another resolution of the same image."""
    return tuple(int(round(v * scale)) for v in box)  # type: ignore[return-value]


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a [0, 1] image to (H, W) with area averaging (no aliasing when shrinking)."""
    if image.shape[:2] == tuple(size):
        return image.astype(np.float32, copy=False)
    return cv2.resize(image.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def colorize(values: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """[0, 1] values -> RGB float image in [0, 1] with a matplotlib colormap."""
    from matplotlib import colormaps

    return colormaps[colormap](np.clip(values, 0, 1))[..., :3].astype(np.float32)


def heat_opacity(heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA,
                 cutoff: float = DEFAULT_CUTOFF) -> np.ndarray:
    """Opacity of the colour at each pixel: 0 up to the cut-off, then rising with the heat to
    `alpha` at the largest map value, 1."""
    cutoff = float(np.clip(cutoff, 0, 0.99))
    ramp = np.clip((np.asarray(heatmap, np.float32) - cutoff) / (1 - cutoff), 0, 1)
    return float(np.clip(alpha, 0, 1)) * ramp ** OPACITY_GAMMA


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = DEFAULT_ALPHA,
            cutoff: float = DEFAULT_CUTOFF, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Blend a coloured heatmap over a grayscale [0, 1] image of the same size; RGB uint8.

    Pixels with heat at or below `cutoff` are the X-ray unchanged; above it the colour's opacity
    rises with the heat up to `alpha`, so the hot region is coloured and the anatomy shows through.
    """
    gray = np.clip(image, 0, 1).astype(np.float32)[..., None]
    weight = heat_opacity(heatmap, alpha, cutoff)[..., None]
    blended = gray * (1 - weight) + colorize(heatmap, colormap) * weight
    return (blended * 255).round().astype(np.uint8)


def colorbar(width: int = 256, height: int = 24, alpha: float = DEFAULT_ALPHA,
             cutoff: float = DEFAULT_CUTOFF, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """The colour scale as drawn (RGB uint8, map value 0 left to 1 right), made by `overlay`
    itself over dark grey (top half) and light grey (bottom half), as on lung and on bone."""
    heat = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    background = np.full((height, width), 0.25, np.float32)
    background[height // 2:] = 0.75
    return overlay(background, heat, alpha, cutoff, colormap)


def draw_colorbar(ax, alpha: float = DEFAULT_ALPHA, cutoff: float = DEFAULT_CUTOFF,
                  colormap: str = DEFAULT_COLORMAP) -> None:
    """Draw `colorbar` on matplotlib axes with its scale and the cut-off marked."""
    ax.imshow(colorbar(512, 24, alpha, cutoff, colormap), extent=(0, 1, 0, 1), aspect="auto")
    ax.set_yticks([])
    ticks = sorted({0.0, round(cutoff, 2), 0.5, 1.0} if abs(cutoff - 0.5) > 0.08 else {0.0, round(cutoff, 2), 1.0})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=7)
    ax.axvline(cutoff, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel(f"heatmap value (1 = every model's peak); not drawn below {cutoff:g}",
                  fontsize=7, labelpad=2)
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)


def colorbar_png(alpha: float = DEFAULT_ALPHA, cutoff: float = DEFAULT_CUTOFF,
                 width_in: float = 4.5) -> bytes:
    """The labelled colour scale as a small PNG (what the app shows beside the maps)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, 0.62))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.58, 0.96, 0.34))
    draw_colorbar(ax, alpha, cutoff)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    return buf.getvalue()


#: what the magenta outline shows, and the legend of the outline view (Review page, report)
ADDED_AREA_NAME = "area added below and between the lungs"
OUTLINE_LEGEND = "lungs (cyan), area added below and between them (magenta), crop box (yellow)"


def outline_contours(mask: np.ndarray, lungs: np.ndarray | None = None) -> dict[str, list]:
    """The outlines every view draws, as OpenCV contours in the masks' frame: "lungs" (cyan)
    and "added" (the area added below them, `mask` minus `lungs`, magenta; empty without
    `lungs`, when `mask` itself is outlined as the lungs)."""
    added: list = []
    if lungs is not None:
        extra = (mask.astype(bool) & ~lungs.astype(bool)).astype(np.uint8)
        added = list(cv2.findContours(extra, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0])
        mask = lungs
    outer = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
    return {"lungs": list(outer), "added": added}


def mask_outline(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
                 fallback: bool, lungs: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 view of an image with the lungs outlined in cyan, the area added below them
    (`mask` minus `lungs`) outlined in magenta, and the crop box in yellow (red when segmentation
    fell back to the whole image). Masks and box are in the image's frame."""
    rgb = (np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2) * 255).astype(np.uint8).copy()
    thickness = max(1, round(max(image.shape) / 300))
    contours = outline_contours(mask, lungs)
    cv2.drawContours(rgb, contours["added"], -1, ADDED_AREA_COLOR, thickness)
    cv2.drawContours(rgb, contours["lungs"], -1, LUNG_COLOR, thickness)
    x0, y0, x1, y1 = box
    cv2.rectangle(rgb, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)),
                  FALLBACK_BOX_COLOR if fallback else BOX_COLOR, thickness)
    return rgb
