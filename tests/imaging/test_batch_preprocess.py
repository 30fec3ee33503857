import shutil

import cv2
import pandas as pd

from cxr_core.cli import main
from cxr_core.data.split_table import cache_path


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
    main(args)
    assert "0 crops written, 4 already done" in capsys.readouterr().out
