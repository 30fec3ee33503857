import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_core.cli import main
from cxr_core.data.split_table import cache_path, lungs_cache_path


def _real_images(cxr_public, n):
    meta = pd.read_csv(cxr_public / "metadata.csv")
    return [cxr_public / p for p in meta["image"].head(n)]


def test_segment_cli_writes_masks_at_input_size_and_reports_bad_files(cxr_public, tmp_path, capsys):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    for path in _real_images(cxr_public, 2):
        shutil.copy(path, in_dir / path.name)
    (in_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    code = main(["segment", str(in_dir), str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and "broken.png" in captured.err
    for path in _real_images(cxr_public, 2):
        mask = cv2.imread(str(tmp_path / "out" / f"{path.stem}.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert mask.shape[:2] == image.shape[:2]
        assert set(mask.ravel().tolist()) <= {0, 255} and mask.mean() > 10
    main(["segment", str(in_dir), str(tmp_path / "lungs"), "--lungs-only"])
    name = _real_images(cxr_public, 1)[0].stem + ".png"
    lungs = cv2.imread(str(tmp_path / "lungs" / name), 0)
    full = cv2.imread(str(tmp_path / "out" / name), 0)
    assert (lungs > 0).sum() <= (full > 0).sum()


def test_preprocess_cli_is_resumable_and_summarises(cxr_public, tmp_path, capsys):
    meta = pd.read_csv(cxr_public / "metadata.csv").head(4)
    split = pd.DataFrame({"ImageID": meta["image"].str.split("/").str[-1],
                          "ImageDir": "images", "PatientID": meta["patient_id"].astype(str),
                          "split": "train", "COVID-19": meta["COVID-19"].fillna(0).astype(int)})
    split.loc[len(split)] = ["missing.png", "images", "p-x", "train", 0]
    split_csv = tmp_path / "split.csv"
    split.to_csv(split_csv, index=False)
    args = ["preprocess", "--images", str(cxr_public), "--split", str(split_csv),
            "--out", str(tmp_path / "cache"), "--workers", "1"]
    assert main(args) == 1  # one row has no image
    out = capsys.readouterr().out
    assert "4 crops written" in out and "1 failed" in out
    crop = cv2.imread(str(cache_path(tmp_path / "cache", split["ImageID"][0])), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (512, 512) and crop.dtype.name == "uint16"
    # each crop's lung fields, in the crop's frame: most of a lung crop, never all of it
    lungs = cv2.imread(str(lungs_cache_path(tmp_path / "cache", split["ImageID"][0])), 0)
    assert lungs.shape == (512, 512) and set(np.unique(lungs)) <= {0, 255}
    assert 0.3 < (lungs > 0).mean() < 0.95
    main(args)
    assert "0 crops written, 4 already done" in capsys.readouterr().out
    # a crop from before masks were kept is done again, so training can swap outside its lungs
    lungs_cache_path(tmp_path / "cache", split["ImageID"][1]).unlink()
    main(args)
    assert "1 crops written, 3 already done" in capsys.readouterr().out
    assert lungs_cache_path(tmp_path / "cache", split["ImageID"][1]).is_file()


def _synthetic_tree(root, n):
    """`n` 16-bit X-ray-like PNGs in PadChest-style ImageDir folders, and a split over them."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 256
    rows = []
    for i in range(n):
        folder = str(i % 2)
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        image = 0.4 + 0.3 * np.sin(5 * xx + i) * np.cos(3 * yy) + rng.normal(0, 0.03, xx.shape)
        name = f"img{i:03d}.png"
        cv2.imwrite(str(root / "images" / folder / name),
                    (np.clip(image, 0, 1) * 65535).astype(np.uint16))
        rows.append({"ImageID": name, "ImageDir": folder, "PatientID": f"p{i}", "split": "train",
                     "label": i % 2})
    pd.DataFrame(rows).to_csv(root / "split.csv", index=False)
    return root / "images", root / "split.csv"


def test_shards_partition_the_split_deterministically():
    from cxr_core.imaging.batch_preprocess import Shard, shard_of

    ids = [f"{i:06d}_{i * 7919}.png" for i in range(3000)]
    owners = [[Shard(k, 4).owns(i) for k in range(4)] for i in ids]
    assert all(sum(row) == 1 for row in owners)  # every image in exactly one shard
    sizes = np.bincount([shard_of(i, 4) for i in ids], minlength=4)
    assert sizes.min() > 0.9 * 3000 / 4  # about 1/N each
    assert [shard_of(i, 4) for i in reversed(ids)][::-1] == [shard_of(i, 4) for i in ids]
    assert Shard.parse("3/16") == Shard(3, 16) and Shard.parse(None) == Shard(0, 1)


@pytest.mark.parametrize("value", ["0", "2/2", "-1/3", "a/b", "1/0"])
def test_bad_shard_texts_are_refused(value):
    from cxr_core.base.errors import DataError
    from cxr_core.imaging.batch_preprocess import Shard

    with pytest.raises(DataError, match="--shard must be I/N"):
        Shard.parse(value)


def test_sharded_preprocess_resumes_and_merge_reports_missing_and_failed(tmp_path, capsys):
    from cxr_core.imaging.batch_preprocess import shard_of

    images, split_csv = _synthetic_tree(tmp_path, 8)
    (images / "1" / "img007.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")  # one unreadable image
    cache = tmp_path / "cache"
    base = ["preprocess", "--images", str(images), "--split", str(split_csv), "--out", str(cache),
            "--workers", "1"]
    ids = pd.read_csv(split_csv)["ImageID"].tolist()
    owner = {i: shard_of(i, 3) for i in ids}
    assert owner["img007.png"] == 1 and sum(v == 2 for v in owner.values()) >= 1
    for k in (0, 1):  # shard 2 never runs (a lost array task)
        main(base + ["--shard", f"{k}/3"])
    out = capsys.readouterr().out
    assert f"shard 0/3 ({sum(v == 0 for v in owner.values())} of 8 rows)" in out
    written = {p.name for p in cache.glob("*.png")}
    assert written == {i for i in ids if owner[i] in (0, 1) and i != "img007.png"}

    assert main(["preprocess-merge", "--split", str(split_csv), "--out", str(cache)]) == 1
    captured = capsys.readouterr()
    missing = [i for i in ids if owner[i] == 2 and i != "img007.png"]
    assert f"{len(written)} of 8 crops present, 1 failed, {len(missing)} missing" in captured.out
    assert "rerun shard(s) 2" in captured.out
    report = pd.read_csv(cache / "preprocess_missing.csv")
    expected = {(i, "missing", 2) for i in missing} | {("img007.png", "failed", 1)}
    assert set(zip(report["ImageID"], report["problem"], report["shard"])) == expected

    main(base + ["--shard", "2/3"])  # the rerun completes the cache; a finished shard is skipped
    main(base + ["--shard", "0/3"])
    assert "0 crops written" in capsys.readouterr().out
    assert main(["preprocess-merge", "--split", str(split_csv), "--out", str(cache)]) == 1
    captured = capsys.readouterr()
    assert "7 of 8 crops present, 1 failed, 0 missing across 3 shard(s)" in captured.out
    assert "failed img007.png" in captured.err
    report = json.loads((cache / "preprocess_report.json").read_text())
    assert report["failed"] == 1 and report["missing"] == 0 and not report["complete"]


def test_a_cache_records_its_segmenter_and_refuses_crops_of_another(tmp_path):
    """The cache says which segmenter and preprocessing version cut its crops (training's run
    fingerprint includes it); adding crops of another segmenter to it is refused."""
    from cxr_core.base.errors import DataError
    from cxr_core.imaging.batch_preprocess import cache_identity, crop_identity, preprocess_split
    from cxr_core.imaging.preprocessing import CROP_VERSION
    from cxr_core.imaging.segmentation import LungSegmenter

    images, split_csv = _synthetic_tree(tmp_path, 2)
    shipped = LungSegmenter.load()
    preprocess_split(images, split_csv, tmp_path / "cache", shipped, workers=1)
    identity = cache_identity(tmp_path / "cache")
    assert identity == crop_identity(shipped) and identity["crop_version"] == CROP_VERSION
    other = LungSegmenter.load()
    other.model.set_weights([w * 1.01 for w in other.model.get_weights()])  # e.g. retrained
    assert crop_identity(other)["segmenter_sha256"] != identity["segmenter_sha256"]
    with pytest.raises(DataError, match="another lung segmenter"):
        preprocess_split(images, split_csv, tmp_path / "cache", other, workers=1)
    preprocess_split(images, split_csv, tmp_path / "new", other, workers=1)
    assert cache_identity(tmp_path / "new") == crop_identity(other)
