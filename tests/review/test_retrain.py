"""Retraining from feedback, end to end on the shipped default bundle with generated reviews."""

import hashlib
import shutil

import pandas as pd

from cxr_core.base.config import settings
from cxr_core.explain.engines import compile_bundle
from cxr_core.modeling.bundle import Bundle
from cxr_core.review.feedback import FeedbackStore, Submission, latest_reviews
from cxr_core.review.retrain import consensus_labels, retrain

from ..conftest import require


def test_consensus_policy_majority_tie_counts_present():
    frame = pd.DataFrame({
        "image_sha256": ["a", "a", "a", "b", "b"], "bundle_id": "x",
        "reviewer": ["r1", "r1", "r2", "r1", "r2"], "version": [1, 2, 1, 1, 1],
        "expert_labels": [["L1"], ["L2"], ["L1"], ["L1"], []],
    })
    assert len(latest_reviews(frame)) == 4
    out = consensus_labels(frame, ["L1", "L2"]).set_index("image_sha256")
    # image a: r1 latest says L2, r2 says L1 -> 1 vote each of 2 reviewers -> both present
    assert out.loc["a", "L1"] == 1 and out.loc["a", "L2"] == 1
    # image b: r1 says L1, r2 says nothing -> tie on L1 -> present; L2 absent
    assert out.loc["b", "L1"] == 1 and out.loc["b", "L2"] == 0


def test_retrain_end_to_end_on_default_bundle(tmp_path, cxr_public):
    # a compiled copy of the default bundle: the child must keep the Lite members
    data_root = cxr_public.parent  # the bundle's ImageDir is '<collection>/images' below it
    require(data_root / "nih-sample" / "metadata.csv")
    parent_dir = tmp_path / "parent"
    shutil.copytree(settings().default_bundle_path, parent_dir)
    parent = compile_bundle(parent_dir)
    split = pd.read_csv(parent_dir / "split.csv")
    images = tmp_path / "reviewed"
    images.mkdir()
    picks = pd.concat([split[split["split"] == "train"].head(3), split[split["split"] == "test"].head(2)])
    url = f"sqlite:///{tmp_path / 'fb.sqlite'}"
    store = FeedbackStore(url)
    for _, row in picks.iterrows():
        source = data_root / row["ImageDir"] / row["ImageID"]
        shutil.copy(source, images / row["ImageID"])
        k = len(parent.labels)
        store.submit(Submission(
            image_sha256=hashlib.sha256(source.read_bytes()).hexdigest(), bundle_id=parent.bundle_id,
            label_set=parent.manifest["label_set"], reviewer="Dr Gen", labels=parent.labels,
            probabilities=[0.5] * k, thresholds=[0.5] * k, model_positive=[True] * k,
            agreement=[1] * k, decisions={parent.labels[0]: "disagree"}))
    result = retrain(parent_dir, url, images, tmp_path / "child", epochs=1,
                     data_root=data_root, work_dir=tmp_path / "work")
    child = Bundle.load(tmp_path / "child")
    lineage = child.manifest["lineage"]
    assert lineage["parent_bundle_id"] == parent.bundle_id
    assert lineage["reviews_used"] == 5 and lineage["excluded_test_images"] == 2
    assert lineage["images_used"] == 3 and lineage["relabelled_training_images"] == 3
    assert "CTP" in lineage["before"] and "CTP" in lineage["after"]
    assert child.test_predictions()["targets"].shape[0] == (split["split"] == "test").sum()
    relabelled = pd.read_csv(tmp_path / "child" / "split.csv").set_index("ImageID")
    for image_id in picks[picks["split"] == "train"]["ImageID"]:
        assert relabelled.loc[image_id, parent.labels[0]] == 0  # the expert said absent
    assert result["summary"]["test_auc_ctp_after"] is not None
    assert child.has_lite  # verified by Bundle.load above, checksums included
