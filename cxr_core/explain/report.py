"""One-X-ray report: a PNG grid and a PDF, positive findings first, no patient identifiers."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np

from .overlay import DEFAULT_ALPHA, mask_outline, overlay


def _figure(review, include_all: bool = False, extra: int = 3, uncertainty: bool = False,
            alpha: float = DEFAULT_ALPHA, max_panels: int = 24):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = review.order(include_all=include_all, extra=extra)[:max_panels]
    panels = [("overview", None)] + [("map", k) for k in order]
    if uncertainty:
        panels += [("std", k) for k in order]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    height, width = review.image.original_size
    panel_h = 4.0 * min(max(height / width, 0.4), 2.0) + 0.6  # image + two title lines
    header_h = 0.9
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, panel_h * rows + header_h), squeeze=False)
    image = review.image.pixels
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (kind, k) in zip(axes.ravel(), panels):
        if kind == "overview":
            mask = _mask_in_original(review)
            ax.imshow(mask_outline(image, mask, review.pre.box_original, review.pre.fallback))
            note = "segmentation FELL BACK to whole image" if review.pre.fallback else "lungs and crop box"
            ax.set_title(note, fontsize=9, color="red" if review.pre.fallback else "black")
        else:
            heat = review.heatmap_original(k, "std" if kind == "std" else "mean")
            ax.imshow(overlay(image, heat, alpha))
            title = review.title(k) if kind == "map" else f"{review.labels[k]}: uncertainty (std over models)"
            ax.set_title(_wrap(title), fontsize=8.5, color="darkred" if review.findings[k] else "black")
    header = (f"CXR Review report | bundle {review.bundle_id} | label set {review.label_set} | "
              f"thresholds: {review.threshold_method} (validation) | "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
              f"{int(review.findings.sum())} positive finding(s) of {len(review.labels)}; "
              f"heatmaps: Grad-CAM averaged over {review.n_members} models. Not for clinical use "
              f"without expert review.")
    refusal = refusal_line(review)
    if refusal:
        header = f"{refusal}\n{header}"
    fig.suptitle(header, fontsize=9.5, x=0.01, ha="left", color="darkred" if refusal else "black")
    fig.tight_layout(rect=(0, 0, 1, 1 - header_h / (panel_h * rows + header_h)))
    return fig


def refusal_line(review) -> str:
    """The input check's refusal, for a report made although it refused the image; '' otherwise.
    (Reports of refused images are only made on request: 'show anyway' or `explain --force`.)"""
    check = getattr(review, "input_check", None)
    if check is None or check.passed:
        return ""
    return (f"INPUT CHECK REFUSED THIS IMAGE: {check.reason} The findings below were shown anyway "
            f"at the reader's request.")


def _wrap(text: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _mask_in_original(review) -> np.ndarray:
    import cv2

    height, width = review.image.original_size
    return cv2.resize(review.pre.mask.full.astype(np.uint8), (width, height),
                      interpolation=cv2.INTER_NEAREST)


def report_png(review, **kwargs) -> bytes:
    import matplotlib.pyplot as plt

    fig = _figure(review, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def report_pdf(review, **kwargs) -> bytes:
    import matplotlib.pyplot as plt

    fig = _figure(review, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", metadata={"Title": "CXR Review report", "Author": "CXR Review"})
    plt.close(fig)
    return buf.getvalue()


def write_report(review, out_dir: Path, stem: str, **kwargs) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{stem}_report.png", out_dir / f"{stem}_report.pdf"
    png.write_bytes(report_png(review, **kwargs))
    pdf.write_bytes(report_pdf(review, **kwargs))
    return png, pdf
