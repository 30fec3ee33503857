"""The split table (`split.csv`): reading it, its parts and targets, and the crop-cache paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.base.errors import DataError
from cxr_core.data.split_table import SplitTable, cache_path, cached_paths, read_split


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "ImageID": ["0001.png", "0002.dcm", "0003.png", "0004.png", "0005.png"],
        "ImageDir": ["0", "0", "1", "1", "2"],
        "PatientID": ["007", "007", "010", "011", "012"],
        "split": ["train", "train", "val", "test", "test"],
        "nodule": [1, 0, 0, 1, 0],
        "effusion": [0, 1, 1, 1, 0],
    })


def _written(tmp_path, frame: pd.DataFrame | None = None):
    path = tmp_path / "split.csv"
    (_frame() if frame is None else frame).to_csv(path, index=False)
    return path


def test_reading_keeps_ids_as_text_and_labels_in_file_order(tmp_path):
    table = read_split(_written(tmp_path))
    assert isinstance(table, SplitTable)
    assert table.labels == ["nodule", "effusion"]  # file order, not alphabetical
    assert table.frame["PatientID"].tolist() == ["007", "007", "010", "011", "012"]
    assert table.frame["ImageDir"].tolist() == ["0", "0", "1", "1", "2"]
    assert table.frame["ImageID"].tolist() == _frame()["ImageID"].tolist()


def test_a_split_written_back_reads_the_same(tmp_path):
    table = read_split(_written(tmp_path))
    again = tmp_path / "again.csv"
    table.frame.to_csv(again, index=False)
    other = read_split(again)
    pd.testing.assert_frame_equal(other.frame, table.frame)
    assert other.labels == table.labels


def test_part_and_targets_select_one_split_with_a_fresh_index(tmp_path):
    table = read_split(_written(tmp_path))
    test = table.part("test")
    assert test["ImageID"].tolist() == ["0004.png", "0005.png"]
    assert test.index.tolist() == [0, 1]
    targets = table.targets("test")
    assert targets.dtype == np.float32 and targets.shape == (2, 2)
    assert targets.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert table.targets("train").tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert table.part("nonexistent").empty and table.targets("nonexistent").shape == (0, 2)


def test_image_dir_is_optional_and_never_a_label(tmp_path):
    table = read_split(_written(tmp_path, _frame().drop(columns=["ImageDir"])))
    assert table.labels == ["nodule", "effusion"]


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="Split file not found"):
        read_split(tmp_path / "nowhere.csv")
    with pytest.raises(DataError, match="Split file not found"):
        read_split(tmp_path)  # a folder is not a split file


@pytest.mark.parametrize("dropped", [["PatientID"], ["split"], ["ImageID", "split"]])
def test_missing_id_columns_are_named(tmp_path, dropped):
    with pytest.raises(DataError, match="lacks the column") as caught:
        read_split(_written(tmp_path, _frame().drop(columns=dropped)))
    assert all(column in str(caught.value) for column in dropped)


def test_a_split_without_label_columns_is_refused(tmp_path):
    with pytest.raises(DataError, match="no label columns"):
        read_split(_written(tmp_path, _frame().drop(columns=["nodule", "effusion"])))


def test_cache_path_is_the_stem_as_png(tmp_path):
    assert cache_path(tmp_path, "0002.dcm") == tmp_path / "0002.png"
    assert cache_path(str(tmp_path), "sub/dir/x.y.jpg") == tmp_path / "x.y.png"
    assert cache_path(tmp_path, 123) == tmp_path / "123.png"


def test_cached_paths_in_row_order_or_a_clear_refusal(tmp_path):
    frame = _frame()
    cache = tmp_path / "cache"
    cache.mkdir()
    for image_id in frame["ImageID"]:
        cache_path(cache, image_id).write_bytes(b"png")
    paths = cached_paths(cache, frame)
    assert paths == [str(cache / f"000{i}.png") for i in range(1, 6)]
    assert all(isinstance(p, str) for p in paths)
    (cache / "0003.png").unlink()
    (cache / "0005.png").unlink()
    with pytest.raises(DataError) as caught:
        cached_paths(cache, frame)
    message = str(caught.value)
    assert "2 of 5 images are missing from the cache" in message
    assert "first: 0003.png" in message and "run 'preprocess' first" in message
    assert cached_paths(cache, frame.iloc[:2]) == paths[:2]


def test_missing_lung_masks_are_refused_in_one_sentence_naming_the_fix(tmp_path):
    import pandas as pd
    import pytest

    from cxr_core.base.errors import DataError
    from cxr_core.data.split_table import cached_lung_paths, lungs_cache_path

    frame = pd.DataFrame({"ImageID": ["a.png", "b.png"]})
    lungs_cache_path(tmp_path, "a.png").parent.mkdir()
    lungs_cache_path(tmp_path, "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"1 of 2 crops .* no lung mask \(first: b.png\); run 'preprocess' again"):
        cached_lung_paths(tmp_path, frame)
    lungs_cache_path(tmp_path, "b.png").write_bytes(b"x")
    assert cached_lung_paths(tmp_path, frame) == [str(tmp_path / "lungs" / n) for n in ("a.png", "b.png")]
