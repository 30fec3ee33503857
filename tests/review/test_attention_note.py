"""The note beside a finding whose map lies mostly outside the lungs: computed by the library
from the map and the lung fields, shown in the report; the map itself is never masked."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cxr_core.base.config import settings
from cxr_core.explain.attention import OUTSIDE_LUNGS_NOTE, lung_energy_share

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def review():
    from cxr_core.review.pipeline import Reviewer

    return Reviewer.from_paths(settings().default_bundle_path, engine="lite").review_one(SAMPLES[2])


def moved_map(review, k: int, where: str):
    """The review with label k's crop-space map replaced by a blob at the neck or on a lung."""
    size = review.mean_maps.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size] / size
    centre = (0.03, 0.5) if where == "neck" else (0.55, 0.25)
    blob = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 0.05 ** 2)).astype(np.float32)
    maps = review.mean_maps.copy()
    maps[k] = blob / blob.max()
    return dataclasses.replace(review, mean_maps=maps, _display={})


def test_a_map_mostly_outside_the_lungs_gets_the_note_in_the_report(review):
    from cxr_core.explain.report import ReportOptions, panels, report_text

    k = review.order(include_all=True)[0]
    neck, lung = moved_map(review, k, "neck"), moved_map(review, k, "lung")
    assert neck.attention_outside_lungs(k) and not lung.attention_outside_lungs(k)
    share = lung_energy_share(neck.heatmap_display(k), neck.lungs_display())
    assert share < 0.5
    title = panels(neck, ReportOptions())[0][0]
    assert title == f"{neck.title(k)} ({OUTSIDE_LUNGS_NOTE})"
    assert OUTSIDE_LUNGS_NOTE in " ".join(report_text(neck).split())
    assert OUTSIDE_LUNGS_NOTE not in " ".join(report_text(lung).split())
    # the map is shown as computed: its energy outside the lungs is still there
    heat = neck.heatmap_display(k)
    assert heat[~neck.lungs_display()].sum() > heat[neck.lungs_display()].sum()


def test_no_note_when_the_segmentation_fell_back(review):
    k = review.order(include_all=True)[0]
    neck = moved_map(review, k, "neck")
    fallback = dataclasses.replace(neck, pre=dataclasses.replace(
        neck.pre, mask=dataclasses.replace(neck.pre.mask, fallback=True)))
    assert not fallback.attention_outside_lungs(k)  # the lungs are not known then
