import math

import pandas as pd
import pytest

from cxr_core.data.padchest import LabelParseError, filter_rows, parse_labels


@pytest.mark.parametrize(
    "cell,expected",
    [
        ("['chronic changes', ' kyphosis']", ["chronic changes", "kyphosis"]),
        ("[' Pleural Effusion', 'pleural effusion ']", ["pleural effusion"]),
        ("[]", []),
        (float("nan"), []),
        (None, []),
        ("", []),
        ("['normal']", ["normal"]),
    ],
)
def test_parse_labels(cell, expected):
    assert parse_labels(cell) == expected


@pytest.mark.parametrize("cell", ["['a', 'b'", "__import__('os')", "['a', 3]", "{'a': 1}", "'text'"])
def test_parse_labels_rejects_malformed(cell):
    with pytest.raises(LabelParseError):
        parse_labels(cell)


def _frame(rows):
    return pd.DataFrame(rows, columns=["ImageID", "ImageDir", "PatientID", "Projection",
                                       "Pediatric", "Labels"])


def test_filter_rows_reports_each_reason_and_never_crashes():
    frame = _frame([
        ["a.png", "0", "p1", "PA", None, "['normal']"],
        ["b.png", "0", "p1", "L", None, "['normal']"],
        ["c.png", "0", "p2", "PA", "PED", "['normal']"],
        ["d.png", "0", "p3", "PA", None, math.nan],
        ["e.png", "0", "p3", "PA", None, "[]"],
        ["f.png", "0", "p3", "PA", None, "['broken'"],
        ["g.png", "0", "p4", "PA", None, "['exclude', 'normal']"],
        ["h.png", "0", "p4", "PA", None, "['suboptimal study']"],
        ["i.png", "0", "p5", "PA", None, "['suboptimal study', ' COPD signs']"],
        ["a.png", "0", "p1", "PA", None, "['normal']"],
    ])
    kept, dropped = filter_rows(frame)
    assert kept["ImageID"].tolist() == ["a.png", "i.png"]
    assert kept["labels"].tolist() == [["normal"], ["copd signs"]]
    assert dropped == {
        "projection not PA": 1, "pediatric": 1, "no labels": 1, "empty label list": 1,
        "unparseable labels": 1, "marked 'exclude'": 1, "only 'suboptimal study'": 1,
        "duplicate ImageID": 1,
    }
    assert sum(dropped.values()) + len(kept) == len(frame)


def test_filter_rows_can_keep_pediatric_and_other_projections():
    frame = _frame([["a", "0", "p", "AP", "PED", "['normal']"]])
    kept, _ = filter_rows(frame, projections=("PA", "AP"), keep_pediatric=True)
    assert len(kept) == 1
