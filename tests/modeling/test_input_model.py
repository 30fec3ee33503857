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
    fit_network,
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


def test_fit_threshold_refuses_at_most_the_allowed_validation_share_plus_margin():
    pos, neg, val = _clusters()
    val[0] += 3.0  # one odd validation film far from the rest
    model, summary = fit_network(pos, neg, val, margin=0.5, val_refused=0.05)
    scores = model.scores(val)
    assert np.isclose(model.threshold, np.sort(scores)[-2] + 0.5)  # 5 % of 30: the odd one may go
    assert (scores > model.threshold).mean() <= 0.05
    assert (model.scores(neg) > model.threshold).all()  # separable clusters: every negative refused
    assert summary["val_scores"]["n"] == 30 and summary["train_negatives_passed"] == 0.0
    strict, _ = fit_network(pos, neg, val, margin=0.0, val_refused=0.0)
    assert np.isclose(strict.threshold, strict.scores(val).max())  # 0: every validation X-ray passes


def test_network_scores_are_finite_log_odds_and_the_logistic_form_still_loads(tmp_path):
    pos, neg, val = _clusters()
    model, _ = fit_network(pos, neg, val)
    assert model.w1.shape == (3, descriptor_size(), 64) and model.coef.shape == (3, 64)
    far = np.full((1, descriptor_size()), 1e6)
    assert np.isfinite(model.scores(far)).all() and abs(model.scores(far)[0]) <= 20.0 + 1e-9
    model.save(tmp_path / "net.npz")
    again = InputModel.load(tmp_path / "net.npz")
    assert np.allclose(again.scores(val), model.scores(val))
    d = descriptor_size()
    InputModel(np.zeros(d), np.ones(d), np.full(d, 0.1), -1.0, 2.0).save(tmp_path / "lin.npz")
    linear = InputModel.load(tmp_path / "lin.npz")
    assert np.allclose(linear.scores(np.ones((2, d))), -(0.1 * d - 1.0))


def test_stored_in_a_bundle_checksummed_and_loaded_back(tmp_path, caplog):
    bundle_dir = tmp_path / "b"
    shutil.copytree(settings().default_bundle_path, bundle_dir)
    bundle = Bundle.load(bundle_dir)
    bundle.manifest.pop("input_check", None)
    with caplog.at_level(logging.WARNING):
        assert load_input_model(bundle) is None
    assert "fit-input-check" in caplog.text
    model, summary = fit_network(*_clusters())
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
