"""The input check's stored statistics: fit, threshold on validation, storage in a bundle."""

import json
import logging
import shutil

import numpy as np
import pytest

from cxr_core.base.config import settings
from cxr_core.base.errors import BundleError
from cxr_core.imaging.input_descriptor import descriptor_size
from cxr_core.modeling.bundle import Bundle
from cxr_core.modeling.input_model import (
    INPUT_CHECK_FILE,
    InputModel,
    fit_logistic,
    load_input_model,
    store_input_model,
)


def _clusters(seed=0):
    rng = np.random.default_rng(seed)
    d = descriptor_size()
    pos = rng.normal(1.0, 1.0, (120, d))
    neg = rng.normal(-1.0, 1.0, (200, d))
    val = rng.normal(1.0, 1.0, (30, d))
    return pos, neg, val


def test_fit_threshold_is_the_highest_validation_score_plus_margin():
    pos, neg, val = _clusters()
    model, summary = fit_logistic(pos, neg, val, margin=0.5)
    scores = model.scores(val)
    assert np.isclose(model.threshold, scores.max() + 0.5)
    assert (scores <= model.threshold).all()  # every validation X-ray passes
    assert (model.scores(neg) > model.threshold).all()  # separable clusters: every negative refused
    assert summary["val_scores"]["n"] == 30 and summary["train_negatives_passed"] == 0.0


def test_stored_in_a_bundle_checksummed_and_loaded_back(tmp_path, caplog):
    bundle_dir = tmp_path / "b"
    shutil.copytree(settings().default_bundle_path, bundle_dir)
    bundle = Bundle.load(bundle_dir)
    bundle.manifest.pop("input_check", None)
    with caplog.at_level(logging.WARNING):
        assert load_input_model(bundle) is None
    assert "fit-input-check" in caplog.text
    model, summary = fit_logistic(*_clusters())
    store_input_model(bundle, model, summary)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert INPUT_CHECK_FILE in manifest["files"] and manifest["input_check"]["file"] == INPUT_CHECK_FILE
    loaded = load_input_model(Bundle.load(bundle_dir))  # verifies every checksum
    x = _clusters(1)[0][:5]
    assert np.allclose(loaded.scores(x), model.scores(x)) and loaded.threshold == model.threshold
    (bundle_dir / INPUT_CHECK_FILE).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="input_check.npz does not match its checksum"):
        Bundle.load(bundle_dir)


def test_statistics_for_another_descriptor_are_refused(tmp_path):
    d = descriptor_size() + 3
    InputModel(np.zeros(d), np.ones(d), np.zeros(d), 0.0, 1.0).save(tmp_path / "x.npz")
    with pytest.raises(BundleError, match="fit-input-check"):
        InputModel.load(tmp_path / "x.npz")
