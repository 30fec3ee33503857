"""Localisation measures: pointing game, energy in box, IoBB hits, lung share, baselines,
map sameness and patient-level bootstrap summaries, on maps whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.evaluation.localisation import (
    MEASURES,
    OVERALL,
    SOURCES,
    average_map,
    best_iobb,
    bootstrap_mean,
    box_measures,
    default_tolerance,
    energy_in_box,
    map_correlation,
    map_regions,
    map_sameness,
    markdown_table,
    pointing_hit,
    scale_box,
    summarise,
    uniform_map,
)
from cxr_core.explain.attention import lung_energy_share, mostly_outside_lungs


def blob(shape=(100, 120), centre=(30, 40), sigma=5.0) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_pointing_hits_inside_misses_outside_and_honours_the_tolerance():
    heat = blob(centre=(30, 40))  # peak at row 30, column 40
    assert pointing_hit(heat, (35, 25, 10, 10)) == 1.0  # x 35..45, y 25..35
    assert pointing_hit(heat, (60, 60, 20, 20)) == 0.0
    # box ends 3 px left of the peak: a miss without tolerance, a hit with 4 px
    assert pointing_hit(heat, (20, 20, 17, 20), tolerance=0) == 0.0
    assert pointing_hit(heat, (20, 20, 17, 20), tolerance=4) == 1.0
    assert default_tolerance((1024, 800)) == pytest.approx(15)


def test_a_flat_peak_scores_the_share_of_its_pixels_inside_and_an_empty_map_none():
    lungs = np.zeros((10, 10), bool)
    lungs[:, :4] = True
    assert pointing_hit(uniform_map(lungs), (0, 0, 2, 10), tolerance=0) == pytest.approx(0.5)
    assert np.isnan(pointing_hit(np.zeros((10, 10)), (0, 0, 5, 5)))
    assert np.isnan(energy_in_box(np.zeros((10, 10)), (0, 0, 5, 5)))


def test_energy_in_box_is_the_share_of_the_map_inside():
    heat = np.zeros((10, 10), np.float32)
    heat[2, 2] = 3.0
    heat[8, 8] = 1.0
    assert energy_in_box(heat, (0, 0, 5, 5)) == pytest.approx(0.75)
    assert energy_in_box(np.ones((10, 10)), (0, 0, 5, 2)) == pytest.approx(0.1)


def test_iobb_finds_the_region_boxes_of_the_thresholded_map():
    heat = np.zeros((50, 50), np.float32)
    heat[10:20, 10:20] = 1.0  # a 10 x 10 region
    heat[30:40, 30:34] = 0.9  # a second region, above 0.7 of the peak
    heat[0:5, 40:50] = 0.5  # below the threshold: no region
    regions = sorted(map_regions(heat))
    assert regions == [(10, 10, 20, 20), (30, 30, 34, 40)]
    assert best_iobb(heat, (10, 10, 5, 10)) == pytest.approx(0.5)  # half of the first region
    assert best_iobb(heat, (0, 0, 50, 50)) == pytest.approx(1.0)
    assert best_iobb(heat, (0, 40, 5, 5)) == 0.0
    hits = box_measures(heat, (15, 10, 10, 10))
    assert hits["iobb"] == pytest.approx(0.5)
    assert (hits["iobb_0.1"], hits["iobb_0.25"], hits["iobb_0.5"]) == (1.0, 1.0, 1.0)
    hits = box_measures(heat, (18, 10, 10, 10))
    assert hits["iobb"] == pytest.approx(0.2)
    assert (hits["iobb_0.1"], hits["iobb_0.25"], hits["iobb_0.5"]) == (1.0, 0.0, 0.0)


def test_lung_share_and_the_outside_the_lungs_note():
    lungs = np.zeros((20, 20), bool)
    lungs[5:15, 2:8] = lungs[5:15, 12:18] = True
    on = uniform_map(lungs)
    assert lung_energy_share(on, lungs) == pytest.approx(1.0)
    neck = np.zeros((20, 20), np.float32)
    neck[0:4, 8:12] = 1.0
    neck[6, 3] = 0.2  # a little on the lungs
    assert lung_energy_share(neck, lungs) == pytest.approx(0.2 / 16.2)
    assert mostly_outside_lungs(neck, lungs) and not mostly_outside_lungs(on, lungs)
    assert not mostly_outside_lungs(neck, np.zeros_like(lungs))  # no lungs found: no note
    with pytest.raises(ValueError):
        lung_energy_share(on, lungs[:10])


def test_scale_box_between_image_and_map_frames():
    assert scale_box((100, 50, 20, 10), (512, 400), (1024, 800)) == (200, 100, 40, 20)


def test_average_map_and_sameness_tell_a_fixed_blob_from_maps_that_follow_the_image():
    rng = np.random.default_rng(0)
    fixed = [blob(centre=(20, 60)) + 0.05 * rng.random((100, 120)).astype(np.float32) for _ in range(12)]
    moving = [blob(centre=(int(rng.integers(10, 90)), int(rng.integers(10, 110)))) for _ in range(12)]
    assert map_sameness(fixed) > 0.9
    assert map_sameness(moving) < 0.5
    assert np.isnan(map_sameness(fixed[:2]))
    mean = average_map(fixed + [blob(shape=(50, 60), centre=(10, 30))], (100, 120))
    assert mean.shape == (100, 120) and mean.max() == pytest.approx(1.0)
    assert np.unravel_index(mean.argmax(), mean.shape) == pytest.approx((20, 60), abs=2)
    wide = {"sigma": 20.0}
    assert map_correlation(blob(centre=(40, 50), **wide), blob(centre=(44, 54), **wide)) > 0.8
    assert map_correlation(blob(centre=(20, 20), **wide), blob(centre=(80, 100), **wide)) < 0


def test_bootstrap_mean_keeps_patients_together_and_covers_the_mean():
    values = np.array([1, 1, 1, 0, 0, 0, 1, 0] * 5, float)
    groups = np.repeat(np.arange(20), 2)  # each patient's two boxes
    mean, low, high = bootstrap_mean(values, groups, n_resamples=500, seed=0)
    assert mean == pytest.approx(0.5) and low < 0.5 < high
    # patients with identical boxes give a wider interval than independent images would
    per_image = bootstrap_mean(values, np.arange(40), n_resamples=500, seed=0)
    same = bootstrap_mean(np.repeat(values[::2], 2), groups, n_resamples=500, seed=0)
    assert same[2] - same[1] > per_image[2] - per_image[1] - 0.05
    assert bootstrap_mean([np.nan, 1.0, 0.0], ["a", "b", "c"], 50)[0] == pytest.approx(0.5)
    assert all(np.isnan(bootstrap_mean([np.nan], ["a"], 50)))


def test_summarise_gives_each_source_per_finding_and_overall_and_a_markdown_table():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(30):
        finding = "pneumonia" if i < 20 else "nodule"
        for source in SOURCES:
            good = source == "model"
            rows.append({"image": f"img{i}", "patient": f"p{i // 2}", "finding": finding, "source": source,
                         **{m: float(good or rng.random() < 0.2) for m in MEASURES}})
    summary = summarise(pd.DataFrame(rows), n_resamples=200, seed=1)
    assert list(summary["finding"].unique()) == ["nodule", "pneumonia", OVERALL]
    overall = summary[(summary["finding"] == OVERALL) & (summary["measure"] == "pointing")].iloc[0]
    assert overall["boxes"] == 30 and overall["patients"] == 15
    assert overall["model"] == 1.0 and overall["uniform_lungs"] < 0.5
    assert overall["uniform_lungs_low"] <= overall["uniform_lungs"] <= overall["uniform_lungs_high"]
    text = markdown_table(summary)
    assert "| pneumonia | pointing game | 20 |" in text and "uniform over lungs" in text
    assert text.count("\n") == 2 + len(summary)
