"""Retraining from feedback, end to end on the shipped default bundle with generated reviews."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.base.config import settings
from cxr_core.explain.engines import compile_bundle
from cxr_core.modeling.bundle import Bundle
from cxr_core.review.feedback import FeedbackStore, Submission, latest_reviews
from cxr_core.review.retrain import consensus_labels, retrain

from ..conftest import require


REPO = Path(__file__).resolve().parents[2]


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


def _cut(part: pd.DataFrame, labels: list[str], size: int) -> pd.DataFrame:
    """`size` rows of one split: two positives of every label first (whatever the split holds),
    the rest a seeded sample of the others."""
    keep = []
    for label in labels:
        keep += [i for i in part.index[part[label].eq(1)] if i not in keep][:2]
    rest = part.drop(index=keep)
    return pd.concat([part.loc[keep], rest.sample(max(0, size - len(keep)), random_state=0)])


def test_retrain_end_to_end_on_default_bundle(tmp_path, cxr_public):
    # a compiled copy of the default bundle: the child must keep the Lite members
    data_root = cxr_public.parent  # the bundle's ImageDir is '<collection>/images' below it
    require(data_root / "nih-sample" / "metadata.csv")
    parent_dir = tmp_path / "parent"
    shutil.copytree(settings().default_bundle_path, parent_dir)
    # the parent's training data cut to 32 images per split (seeded; every label has positives
    # in each), then re-checksummed: retrain preprocesses, fine-tunes on and evaluates what
    # split.csv lists, and at 224 px the whole 1,238-image split cost over two minutes on 2 cores
    shipped = Bundle.load(parent_dir)
    labels = shipped.labels
    split = pd.read_csv(parent_dir / "split.csv")
    split = pd.concat([_cut(part, labels, 32) for _, part in split.groupby("split")])
    for part in ("train", "val", "test"):
        assert split.loc[split["split"] == part, labels].eq(1).sum().min() > 0, part
    split.to_csv(parent_dir / "split.csv", index=False)
    shipped.save()
    parent = compile_bundle(parent_dir)
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
    # at least as safe as the parent: flips, thresholds and input check refitted or carried
    assert parent.tta_flip and parent.input_check
    assert child.tta_flip is True and child.inference["tta_flip"] is True
    assert child.input_check and child.input_check["threshold"] == parent.input_check["threshold"]
    kept = lineage["kept_from_parent"]
    assert kept["test_time_flips"] == {"decision": "carried", "tta_flip": True}
    assert kept["thresholds"]["decision"] == "refitted on validation"
    assert {child.threshold_split(m) for m in child.threshold_methods} == {"validation"}
    assert kept["input_check"]["decision"] == "carried"
    assert (tmp_path / "child" / "input_check.npz").read_bytes() == (parent_dir / "input_check.npz").read_bytes()
    # the before/after comparison is made under one flips policy and one threshold method
    assert lineage["comparison"] == {"tta_flip": True, "threshold_method": parent.threshold_method}
    assert child.metrics["thresholds"]["method"] == parent.threshold_method
    import cv2

    from cxr_core.imaging.input_negatives import document_image, noise_image
    from cxr_core.review.pipeline import Reviewer

    rng = np.random.default_rng(0)
    others = []
    for name, pixels in (("noise.png", noise_image(rng)), ("page.png", document_image(rng))):
        cv2.imwrite(str(tmp_path / name), np.round(pixels * 255).astype(np.uint8))
        others.append(tmp_path / name)
    for bundle_dir in (parent_dir, tmp_path / "child"):  # the child refuses what the parent refuses
        reviewer = Reviewer.from_paths(bundle_dir)
        assert reviewer.input_model is not None
        reviews = reviewer.review([reviewer.load(path.read_bytes(), path.name) for path in others])
        assert all(r.refused for r in reviews), [r.input_check.record() for r in reviews]


def test_a_reviewer_counts_once_per_image_across_bundles(tmp_path):
    """A revision under the retrained child replaces the reviewer's vote under the parent."""
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.sqlite'}")
    labels = ["L1", "L2"]

    def review(reviewer, bundle, present):
        store.submit(Submission(
            image_sha256="f" * 64, bundle_id=bundle, label_set="s", reviewer=reviewer, labels=labels,
            probabilities=[0.5, 0.5], thresholds=[0.5, 0.5], model_positive=[False, False],
            agreement=[0, 0], decisions={}, added_labels=present))

    review("r1", "parent", ["L1"])
    review("r2", "parent", [])
    review("r3", "parent", ["L1"])
    review("r1", "parent-ft3", [])  # r1 changes their mind under the child bundle
    frame = store.reviews_frame()
    latest = latest_reviews(frame)
    assert len(latest) == 3 and sorted(latest["reviewer"]) == ["r1", "r2", "r3"]
    assert latest.set_index("reviewer").loc["r1", "bundle_id"] == "parent-ft3"
    out = consensus_labels(frame, labels).set_index("image_sha256").iloc[0]
    assert out["reviewers"] == 3 and out["L1"] == 0  # 1 of 3 (r3), not a 2-of-4 tie


def test_test_images_are_held_out_by_patient_and_by_pixels(tmp_path):
    """A re-encoded copy of a test image, or another file of a test patient, is never trained on."""
    import cv2

    from cxr_core.review.retrain import held_out_part

    samples = sorted((REPO / "assets" / "samples").glob("*.png"))
    root = tmp_path / "original"
    root.mkdir()
    for i, path in enumerate(samples):
        shutil.copy(path, root / f"s{i}.png")
    frame = pd.DataFrame({"ImageID": [f"s{i}.png" for i in range(3)], "ImageDir": "",
                          "PatientID": ["p-test", "p-val", "p-train"],
                          "split": ["test", "val", "train"]})
    frame["sha256"] = [hashlib.sha256((root / i).read_bytes()).hexdigest() for i in frame["ImageID"]]
    from cxr_core.imaging.image_io import load_image, perceptual_hash

    hashes = {part: [perceptual_hash(load_image(root / i).pixels)
                     for i in frame.loc[frame["split"] == part, "ImageID"]] for part in ("val", "test")}

    def part_of(path):
        return held_out_part(path, hashlib.sha256(path.read_bytes()).hexdigest(), frame, hashes)

    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    raw = cv2.imread(str(root / "s0.png"), cv2.IMREAD_GRAYSCALE)
    small = cv2.resize(raw, (raw.shape[1] * 3 // 4, raw.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    copy = reviewed / "upload.jpg"  # the test image, re-encoded: other bytes, other name
    copy.write_bytes(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes())
    assert part_of(copy) == "test"
    shutil.copy(samples[3], reviewed / "s0.png")  # another file under a test image's name
    assert part_of(reviewed / "s0.png") == "test"
    assert part_of(root / "s1.png") == "val"
    assert part_of(root / "s2.png") is None  # a training image may be re-labelled
    shutil.copy(samples[3], reviewed / "new.png")
    assert part_of(reviewed / "new.png") is None  # an unknown image may be trained on
