"""Post-hoc calibration of a bundle on its stored (or freshly computed) validation predictions,
with threshold methods chosen again on the calibrated probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr_core.base.errors import BundleError
from cxr_core.evaluation.recalibration import (
    VAL_PREDICTIONS,
    calibrate_bundle,
    store_val_predictions,
    val_predictions,
)
from cxr_core.modeling.bundle import Bundle, write_manifest
from cxr_core.modeling.calibration import apply_calibration
from cxr_core.modeling.thresholds import THRESHOLD_METHODS, threshold_table
from tests.modeling.bundle_factory import (
    binormal,
    make_split,
    split_with_empty_cache,
    write_synthetic_bundle,
)

LABELS = ["effusion", "nodule"]


@pytest.fixture
def distorted(tmp_path):
    """A bundle whose members are over-confident (probabilities cubed) on validation and test."""
    split = make_split(500, LABELS, [0.3, 0.25], seed=5)
    return write_synthetic_bundle(tmp_path / "b", split, LABELS, [1.5, 1.0], seed=1, distort=3.0)


def test_validation_predictions_round_trip_and_stay_covered_by_the_checksums(tmp_path):
    split = make_split(40, LABELS, [0.3, 0.3], seed=2)
    path = write_synthetic_bundle(tmp_path / "b", split, LABELS, [1, 1], val=False)
    bundle = Bundle.load(path)
    assert val_predictions(bundle) is None
    ids = [f"v{i}.png" for i in range(6)]
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 0]], float)
    probs = np.random.default_rng(0).random((2, 6, 2))
    store_val_predictions(bundle, ids, targets, probs)
    stored = val_predictions(Bundle.load(path))  # verifies every checksum, the new file's too
    assert set(stored) == {"image_ids", "targets", "member_probs"}
    assert stored["image_ids"].tolist() == ids and stored["image_ids"].dtype.kind == "U"
    assert stored["targets"].dtype == np.uint8
    np.testing.assert_array_equal(stored["targets"], targets)
    assert stored["member_probs"].dtype == np.float32
    np.testing.assert_allclose(stored["member_probs"], probs, rtol=1e-6)
    assert VAL_PREDICTIONS in Bundle.load(path).manifest["files"]


def test_isotonic_calibration_is_stored_with_its_own_threshold_methods(distorted):
    before = Bundle.load(distorted)
    summary = calibrate_bundle(distorted, "isotonic")
    val = val_predictions(before)
    assert summary["method"] == "isotonic"
    assert summary["validation_images"] == len(val["image_ids"])
    assert summary["threshold_methods_added"] == [f"{m}+isotonic" for m in THRESHOLD_METHODS]
    assert summary["default_threshold_method"] == "f1"  # not made the default unless asked
    assert summary["val_ece_ctp_after"] < 0.5 * summary["val_ece_ctp_before"]
    bundle = Bundle.load(distorted)
    assert set(bundle.calibrations) == {"isotonic"}
    assert bundle.threshold_method == "f1"
    calibrated = apply_calibration(bundle.calibrations["isotonic"], val["member_probs"])
    expected = threshold_table(calibrated, val["targets"].astype(np.float64))
    for method in THRESHOLD_METHODS:
        name = f"{method}+isotonic"
        assert bundle.calibration_name(name) == "isotonic"
        ens, members = bundle.thresholds(name)
        np.testing.assert_allclose(ens, expected[method]["ensemble"])
        np.testing.assert_allclose(members, expected[method]["members"])
        np.testing.assert_allclose(bundle.thresholds(method)[0], before.thresholds(method)[0])
    # the raw methods and the stored predictions are untouched
    np.testing.assert_array_equal(val_predictions(bundle)["member_probs"], val["member_probs"])


def test_make_default_keeps_the_base_method_of_the_current_default(distorted):
    bundle = Bundle.load(distorted)
    bundle.replace(threshold_method="youden").save()
    summary = calibrate_bundle(distorted, "temperature", make_default=True)
    assert summary["default_threshold_method"] == "youden+temperature"
    summary = calibrate_bundle(distorted, "isotonic", make_default=True)
    assert summary["default_threshold_method"] == "youden+isotonic"  # not youden+temperature+...
    bundle = Bundle.load(distorted)
    assert bundle.threshold_method == "youden+isotonic"
    assert set(bundle.calibrations) == {"temperature", "isotonic"}
    raw = bundle.test_predictions()["member_probs"]
    np.testing.assert_allclose(bundle.calibrate(raw),
                               apply_calibration(bundle.calibrations["isotonic"], raw))


def test_without_stored_predictions_the_cache_and_split_are_asked_for(tmp_path):
    split = make_split(60, LABELS, [0.3, 0.3], seed=3)
    path = write_synthetic_bundle(tmp_path / "b", split, LABELS, [1, 1], val=False)
    with pytest.raises(BundleError, match=r"--data, --split"):
        calibrate_bundle(path, "temperature")
    with pytest.raises(BundleError, match="stores no validation predictions"):
        calibrate_bundle(path, "temperature", cache_dir=tmp_path)


def test_missing_predictions_are_computed_from_the_cache_first(tmp_path, monkeypatch):
    split, split_csv, cache = split_with_empty_cache(tmp_path, 300, LABELS, [0.3, 0.3], seed=4)
    targets = split[LABELS].to_numpy(float)
    probs = binormal(np.random.default_rng(6), np.stack([targets, targets]), 1.5) ** 3
    rows = {image_id: i for i, image_id in enumerate(split["ImageID"])}

    def members(classifiers, paths, input_size, **kwargs):
        return probs[:, [rows[Path(p).name] for p in paths]]

    monkeypatch.setattr("cxr_core.modeling.inference.predict_members", members)
    monkeypatch.setattr(Bundle, "classifiers", property(lambda self: []))
    path = write_synthetic_bundle(tmp_path / "b", split, LABELS, [1, 1], val=False)
    other = split.rename(columns={"nodule": "mass"})
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(BundleError, match="label columns differ"):
        calibrate_bundle(path, "isotonic", cache, tmp_path / "other.csv")
    summary = calibrate_bundle(path, "isotonic", cache, split_csv)
    val = split[split["split"] == "val"]
    assert summary["validation_images"] == len(val)
    stored = val_predictions(Bundle.load(path))
    assert stored["image_ids"].tolist() == val["ImageID"].tolist()
    np.testing.assert_allclose(stored["member_probs"], probs[:, [rows[i] for i in val["ImageID"]]],
                               rtol=1e-6)
    assert summary["val_ece_ctp_after"] < summary["val_ece_ctp_before"]


def test_bundle_calibration_is_stored_used_and_thresholds_follow(tmp_path):
    labels = ["effusion", "nodule"]
    split = make_split(600, labels, [0.3, 0.2], seed=1)
    path = write_synthetic_bundle(tmp_path / "b", split, labels, [1.5, 1.0], distort=3.0)
    summary = calibrate_bundle(path, "temperature", make_default=True)
    assert summary["val_ece_ctp_after"] < summary["val_ece_ctp_before"]
    bundle = Bundle.load(path)
    assert bundle.manifest["threshold_method"] == "f1+temperature"
    assert {"f1+temperature", "youden+temperature", "fixed+temperature"} <= set(bundle.manifest["thresholds"])
    raw = bundle.test_predictions()["member_probs"]
    calibrated = bundle.calibrate(raw)
    assert not np.allclose(calibrated, raw)
    assert np.allclose(bundle.calibrate(raw, "f1"), raw)  # the raw method leaves them alone
    raw_t, _ = bundle.thresholds("f1")
    cal_t, _ = bundle.thresholds("f1+temperature")
    assert not np.allclose(raw_t, cal_t)  # chosen again on the calibrated probabilities
    # a threshold method pointing at a calibration the bundle lacks is refused on load
    del bundle.manifest["calibration"]
    write_manifest(path, bundle.manifest)
    with pytest.raises(BundleError, match="temperature"):
        Bundle.load(path)


def test_calibration_without_validation_predictions_says_what_is_needed(tmp_path):
    split = make_split(100, ["a"], [0.3])
    path = write_synthetic_bundle(tmp_path / "b", split, ["a"], [1.0], val=False)
    with pytest.raises(BundleError, match="validation predictions"):
        calibrate_bundle(path, "isotonic")
