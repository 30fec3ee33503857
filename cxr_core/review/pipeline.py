"""The review pipeline: one X-ray (or many) in, findings with heatmaps out.

decode -> preprocess (segment, post-process, crop) -> input check (is it a frontal chest X-ray?)
-> every member's probabilities and all-label Grad-CAM maps -> ensemble findings, agreement,
mean and uncertainty maps.
Used by the app, the `explain` CLI and the benchmarks alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.reading_points import displayed_method
from ..explain.attention import mostly_outside_lungs
from ..explain.engines import bundle_engines, resolve_engine
from ..explain.ensemble_maps import explain_arrays, resize_maps
from ..explain.overlay import DISPLAY_MAX_SIDE, display_size, mask_outline, shrink, to_original
from ..imaging.image_io import DEFAULT_MAX_PIXELS, LoadedImage, load_image
from ..imaging.laterality import laterality
from ..imaging.preprocessing import Preprocessed, preprocess_batch
from ..imaging.segmentation import LungSegmenter
from ..imaging.segmenter_lite import load_segmenter
from ..modeling.bundle import Bundle
from ..modeling.ensemble import combine
from ..modeling.input_model import load_input_model
from .input_check import InputCheck, check_input

log = logging.getLogger(__name__)

#: Decimals of every probability and threshold shown (table, titles, form, report).
PRECISION = 3
#: A finding is borderline when its probability is this close to its threshold.
BORDERLINE_MARGIN = 0.05
#: spellings of the label that means "no finding" (exclusive of every other finding)
NORMAL_LABELS = ("normal", "no finding", "no findings", "no_finding")


def coherent_findings(findings: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(findings, overruled) for (N, K) or (K,) calls: 'normal' is reported only when no other
    finding is positive (it means "no finding"); `overruled` marks the images whose 'normal'
    was above its threshold together with another finding, and is then reported negative."""
    calls = np.array(findings, dtype=bool, copy=True)
    single = calls.ndim == 1
    calls = calls[None] if single else calls
    k_normal = normal_index(labels)
    overruled = np.zeros(calls.shape[0], dtype=bool)
    if k_normal is not None:
        others = np.delete(calls, k_normal, axis=1).any(axis=1)
        overruled = calls[:, k_normal] & others
        calls[overruled, k_normal] = False
    return (calls[0], overruled[0]) if single else (calls, overruled)


def normal_index(labels: list[str]) -> int | None:
    """Index of the bundle's 'normal' label, or None when it has none."""
    for k, label in enumerate(labels):
        if label.strip().lower() in NORMAL_LABELS:
            return k
    return None


@dataclass
class Review:
    """Everything the app and the report show for one X-ray."""

    image: LoadedImage
    pre: Preprocessed
    labels: list[str]
    groups: dict[str, list[str]]
    archs: list[str]
    probs: np.ndarray  # (K,) ensemble (CTP) probability
    member_probs: np.ndarray  # (M, K)
    thresholds: np.ndarray  # (K,)
    findings: np.ndarray  # (K,) bool
    agreement: np.ndarray  # (K,) members voting positive (each with its own threshold)
    mean_maps: np.ndarray  # (K, S, S) crop-space ensemble maps in [0, 1]
    std_maps: np.ndarray  # (K, S, S) crop-space uncertainty maps
    member_cams: list[np.ndarray]  # M raw member maps (h_m, w_m, K), resized on demand
    bundle_id: str
    label_set: str
    threshold_method: str
    is_demo: bool = False
    timings: dict = field(default_factory=dict)
    input_check: InputCheck | None = None  # None only for reviews built without the pipeline
    #: (M, K) member probabilities before calibration: a re-read at another operating point
    raw_member_probs: np.ndarray | None = None
    #: the models called 'normal' above its threshold, but other findings are positive, so
    #: 'normal' is not reported (`coherent_findings`)
    normal_overruled: bool = False
    calibration: str | None = None  # the calibration the probabilities went through, if any
    operating_point: str | None = None  # the reading point ('balanced', ...) when one is used
    #: M member grids: where each member's map cells look (`explain.ensemble_maps.Grid`)
    map_grids: list = field(default_factory=list)
    #: how the maps were computed: "gradcam" (the method's) or "occlusion" (`explain.occlusion`)
    map_method: str = "gradcam"
    _display: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def refused(self) -> bool:
        """Whether the input check refused the image (findings hidden unless shown anyway)."""
        return self.input_check is not None and not self.input_check.passed

    @property
    def n_members(self) -> int:
        return len(self.archs)

    def table(self) -> pd.DataFrame:
        """Findings table: positives first, then by probability."""
        frame = pd.DataFrame({
            "finding": self.labels,
            "group": [", ".join(self.groups.get(lab, [lab])) for lab in self.labels],
            "probability": self.probs.round(PRECISION),
            "threshold": self.thresholds.round(PRECISION),
            "models positive": [f"{a}/{self.n_members}" for a in self.agreement],
            "positive": self.findings.astype(bool),
            "borderline": [self.borderline(k) for k in range(len(self.labels))],
        })
        return frame.sort_values(["positive", "probability"], ascending=[False, False]).reset_index(drop=True)

    def borderline(self, k: int) -> bool:
        """Close to the threshold, or the models split on it."""
        split = 0 < int(self.agreement[k]) < self.n_members
        return bool(abs(float(self.probs[k]) - float(self.thresholds[k])) < BORDERLINE_MARGIN or split)

    def call(self, k: int) -> str:
        """'positive' or 'negative', with ', borderline' when it is; an overruled 'normal'
        says why it is negative."""
        if self.normal_overruled and k == normal_index(self.labels):
            return "negative: above its threshold, but other findings are positive"
        return ("positive" if self.findings[k] else "negative") + (", borderline" if self.borderline(k) else "")

    @staticmethod
    def fmt(value: float) -> str:
        """A probability or threshold as shown everywhere."""
        return f"{float(value):.{PRECISION}f}"

    def normal_with_findings(self) -> list[str]:
        """The positive findings when the models also called 'normal' above its threshold (it
        excludes them all; 'normal' is then not reported): a contradiction the reader should
        see, empty when there is none."""
        k_normal = normal_index(self.labels)
        if k_normal is None or not (self.normal_overruled or self.findings[k_normal]):
            return []
        return [self.labels[k] for k in self.order() if k != k_normal]

    def normal_note(self) -> str:
        """What the models said for 'normal' when it is not reported although above its
        threshold; '' otherwise."""
        k_normal = normal_index(self.labels)
        if k_normal is None or not self.normal_overruled:
            return ""
        return (f"'normal' is not reported: the models gave it {self.fmt(self.probs[k_normal])} "
                f"(threshold {self.fmt(self.thresholds[k_normal])}), but "
                f"{', '.join(self.normal_with_findings())} {'is' if len(self.normal_with_findings()) == 1 else 'are'} "
                "positive, and 'normal' means no other finding.")

    def order(self, include_all: bool = False, extra: int = 0) -> list[int]:
        """Label indices to show: positives by probability, then `extra` next likely (or all)."""
        ranked = list(np.argsort(-self.probs))
        positives = [k for k in ranked if self.findings[k]]
        rest = [k for k in ranked if not self.findings[k]]
        return positives + (rest if include_all else rest[:extra])

    def heatmap_original(self, k: int, kind: str = "mean", member: int | None = None) -> np.ndarray:
        """Heatmap of label k ('mean', 'std' or a member's) in the original image frame."""
        return to_original(self.crop_map(k, kind, member), self.pre.box_original,
                           self.image.original_size)

    def crop_map(self, k: int, kind: str = "mean", member: int | None = None) -> np.ndarray:
        """Heatmap of label k in crop space (S x S): the ensemble mean, its std or a member's."""
        if member is not None:
            grid = self.map_grids[member] if member < len(self.map_grids) else None
            return resize_maps(self.member_cams[member][:, :, k], self.mean_maps.shape[-1], grid)
        return self.std_maps[k] if kind == "std" else self.mean_maps[k]

    def display_size(self, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
        """(H, W) at which the app and the report show this X-ray."""
        return display_size(self.image.original_size, max_side)

    def display_pixels(self, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
        """The X-ray shrunk once to display size (a 6500 px image is never blended at full size)."""
        if max_side not in self._display:
            self._display[max_side] = shrink(self.image.pixels, self.display_size(max_side))
        return self._display[max_side]

    def heatmap_display(self, k: int, kind: str = "mean", member: int | None = None,
                        max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
        """Heatmap of label k ('mean', 'std' or a member's) in the display frame of the X-ray."""
        return to_original(self.crop_map(k, kind, member), self.box_display(max_side),
                           self.display_size(max_side))

    def maps_display(self, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
        """(K, h, w) float32: every label's ensemble map in the display frame, as the page shows it."""
        return np.stack([self.heatmap_display(k, max_side=max_side) for k in range(len(self.labels))])

    def lungs_display(self, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
        """(h, w) bool: the lung fields (lungs plus the area added below them) in the display frame."""
        import cv2

        dh, dw = self.display_size(max_side)
        return cv2.resize(self.pre.mask.full.astype(np.uint8), (dw, dh), interpolation=cv2.INTER_NEAREST) > 0

    def attention_outside_lungs(self, k: int, max_side: int = DISPLAY_MAX_SIDE) -> bool:
        """Whether most of label k's ensemble map lies outside the lung fields (never when the
        segmentation fell back: the lungs are not known then)."""
        if self.pre.fallback:
            return False
        return mostly_outside_lungs(self.heatmap_display(k, max_side=max_side), self.lungs_display(max_side))

    def likely_mirrored(self) -> bool:
        """Whether the lung masks' shapes say the X-ray is likely mirrored left-right
        (`imaging.laterality`; never when the segmentation fell back)."""
        if self.pre.fallback:
            return False
        found = laterality(self.pre.mask.lungs, self.pre.image)
        return bool(found is not None and found.likely_mirrored)

    def box_display(self, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int, int, int]:
        """Crop box (x0, y0, x1, y1) in display pixels (per-axis scale, as the crop was taken)."""
        (height, width), (dh, dw) = self.image.original_size, self.display_size(max_side)
        x0, y0, x1, y1 = self.pre.box_original
        sx, sy = dw / width, dh / height
        return (int(round(x0 * sx)), int(round(y0 * sy)), int(round(x1 * sx)), int(round(y1 * sy)))

    def outline_display(self, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
        """RGB view at display size: lungs, the area added below them and the crop box."""
        import cv2

        dh, dw = self.display_size(max_side)
        full, lungs = (cv2.resize(m.astype(np.uint8), (dw, dh), interpolation=cv2.INTER_NEAREST)
                       for m in (self.pre.mask.full, self.pre.mask.lungs))
        return mask_outline(self.display_pixels(max_side), full, self.box_display(max_side),
                            self.pre.fallback, lungs=lungs)

    def title(self, k: int) -> str:
        verdict = "above" if self.findings[k] else "below"
        return (f"{self.labels[k]}: p={self.fmt(self.probs[k])}, {self.agreement[k]}/{self.n_members} "
                f"models positive, {verdict} threshold {self.fmt(self.thresholds[k])}")

    def record(self, name: str) -> list[dict]:
        """One row per label for CSV/JSON export."""
        return [{
            "image": name, "sha256": self.image.sha256, "label": lab,
            "probability": float(self.probs[k]), "threshold": float(self.thresholds[k]),
            "positive": bool(self.findings[k]), "agreement": int(self.agreement[k]),
            "members": int(self.n_members), "segmentation_fallback": bool(self.pre.fallback),
            **_check_columns(self.input_check),
            **{f"p_{arch}": float(self.member_probs[m, k]) for m, arch in enumerate(self.archs)},
        } for k, lab in enumerate(self.labels)]


def _check_columns(check: InputCheck | None) -> dict:
    """Input-check columns of an exported row."""
    if check is None:
        return {}
    return {"input_check_passed": check.passed, "input_check_score": check.score,
            "input_check_threshold": check.threshold, "input_check_reason": check.reason}


def reread(bundle: Bundle, review: Review, method: str | None = None) -> Review:
    """The same review read at another threshold method (a reading point): calibration,
    thresholds and calls change, the maps stay (nothing is run again)."""
    if review.raw_member_probs is None:
        raise ValueError("this review keeps no raw member probabilities to re-read")
    from dataclasses import replace

    ens_t, mem_t = bundle.thresholds(method)
    ensemble = combine(bundle.calibrate(review.raw_member_probs[:, None], method), ens_t, mem_t)
    findings, overruled = coherent_findings(ensemble.findings[0], review.labels)
    entry = bundle.threshold_entry(method)
    return replace(review, probs=ensemble.probs[0], member_probs=ensemble.member_probs[:, 0],
                   thresholds=ens_t, findings=findings, agreement=ensemble.agreement[0],
                   threshold_method=method or bundle.threshold_method,
                   normal_overruled=bool(overruled), calibration=entry.get("calibration"),
                   operating_point=entry.get("reading_point"), _display=review._display)


def displayed_review(bundle: Bundle, review: Review, chosen: str | None = None) -> Review:
    """The review as the Review and Worklist pages display it: read at `displayed_method`
    (the reader's chosen reading point, else the bundle's default one; calibrated when the
    bundle has a calibration for it). Unchanged when it is already read there, when it keeps
    no raw probabilities, or when it comes from another bundle."""
    if review.raw_member_probs is None or review.bundle_id != bundle.bundle_id:
        return review
    method = displayed_method(bundle, chosen)
    return review if review.threshold_method == method else reread(bundle, review, method)


#: `Reviewer(input_model=...)` default: load the bundle's input check.
_LOAD = object()


class Reviewer:
    """Holds the bundle and segmenter once per process and reviews images with them."""

    def __init__(self, bundle: Bundle, segmenter: LungSegmenter, max_pixels: int = DEFAULT_MAX_PIXELS,
                 map_size: int | None = None, engine: str | None = None, map_method: str | None = None,
                 input_model=_LOAD):
        from ..explain.occlusion import check_map_method

        self.bundle = bundle
        #: how the maps are computed: as asked, else the bundle's choice (`Bundle.map_method`)
        self.map_method = check_map_method(map_method or bundle.map_method)
        self.engines = bundle_engines(bundle, engine)  # opened now: the first review pays no set-up
        self.segmenter = segmenter
        # None (warned) when the bundle has none; a caller may pass it already loaded
        self.input_model = load_input_model(bundle) if input_model is _LOAD else input_model
        self.max_pixels = max_pixels
        self.map_size = map_size or bundle.input_size

    @classmethod
    def from_paths(cls, bundle_dir: str | Path | Bundle, segmenter_dir: str | Path | None = None,
                   **kwargs) -> "Reviewer":
        """Open a bundle (a folder, or a Bundle already loaded) and its segmenter; with the Lite
        engine the segmenter's Lite export too when it has one, so that the process never
        imports TensorFlow."""
        from ..base.config import settings

        bundle = bundle_dir if isinstance(bundle_dir, Bundle) else Bundle.load(bundle_dir)
        seg_dir = segmenter_dir or resolve_segmenter(bundle)
        kind = resolve_engine(kwargs.get("engine") or settings().engine, bundle.has_lite)
        return cls(bundle, load_segmenter(seg_dir, lite=kind == "lite"), **kwargs)

    def load(self, source, filename: str | None = None) -> LoadedImage:
        return load_image(source, filename=filename, max_pixels=self.max_pixels)

    def review(self, images: list[LoadedImage], method: str | None = None,
               map_method: str | None = None) -> list[Review]:
        """Review decoded images in one batch; `map_method` overrides the reviewer's for this call."""
        from ..explain.occlusion import check_map_method

        map_method = check_map_method(map_method or self.map_method)
        timings = {}
        t0 = time.perf_counter()
        pres = preprocess_batch(images, self.segmenter)
        timings["preprocess_s"] = time.perf_counter() - t0
        t_check = time.perf_counter()
        checks = [check_input(image, pre, self.input_model) for image, pre in zip(images, pres)]
        timings["input_check_s"] = time.perf_counter() - t_check
        t1 = time.perf_counter()
        crops = np.stack([p.crop for p in pres])
        expl = explain_arrays(self.engines, crops, self.map_size, flip=self.bundle.tta_flip,
                              method=map_method)
        timings["ensemble_and_maps_s"] = time.perf_counter() - t1
        ens_t, mem_t = self.bundle.thresholds(method)
        ensemble = combine(self.bundle.calibrate(expl.member_probs, method), ens_t, mem_t)
        findings, overruled = coherent_findings(ensemble.findings, self.bundle.labels)
        entry = self.bundle.threshold_entry(method)
        reviews = []
        for i, (image, pre) in enumerate(zip(images, pres)):
            reviews.append(Review(
                image=image, pre=pre, labels=self.bundle.labels, groups=self.bundle.groups,
                archs=self.bundle.archs, probs=ensemble.probs[i], member_probs=ensemble.member_probs[:, i],
                thresholds=ens_t, findings=findings[i], agreement=ensemble.agreement[i],
                mean_maps=expl.mean_maps[i], std_maps=expl.std_maps[i],
                member_cams=[cams[i] for cams in expl.member_cams], map_grids=list(expl.map_grids),
                map_method=map_method,
                bundle_id=self.bundle.bundle_id,
                label_set=self.bundle.label_set,
                threshold_method=method or self.bundle.threshold_method,
                is_demo=self.bundle.is_demo,
                timings={k: v / len(images) for k, v in timings.items()},
                input_check=checks[i],
                raw_member_probs=np.asarray(expl.member_probs)[:, i],
                normal_overruled=bool(overruled[i]), calibration=entry.get("calibration"),
                operating_point=entry.get("reading_point"),
            ))
        return reviews

    def reread(self, review: Review, method: str | None = None) -> Review:
        """The same review read at another threshold method (`reread`)."""
        return reread(self.bundle, review, method)

    def displayed(self, review: Review, chosen: str | None = None) -> Review:
        """The review as the pages display it (`displayed_review`)."""
        return displayed_review(self.bundle, review, chosen)

    def warm_up(self) -> float:
        """Run one synthetic image through the whole pipeline so that graph compilation is done
        before the first real X-ray; returns the seconds it took."""
        start = time.perf_counter()
        yy, xx = np.mgrid[0:256, 0:256] / 256.0
        pixels = (0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)).astype(np.float32)
        self.review([LoadedImage(pixels, pixels.shape, "png", 8, "MONOCHROME2", "warm-up")])
        seconds = time.perf_counter() - start
        log.info("pipeline warmed up in %.1f s", seconds)
        return seconds

    def review_one(self, source, filename: str | None = None, map_method: str | None = None) -> Review:
        return self.review([self.load(source, filename)], map_method=map_method)[0]


def resolve_segmenter(bundle: Bundle) -> Path:
    """The segmenter folder a bundle refers to (`Bundle.segmenter_dir`)."""
    return bundle.segmenter_dir()
