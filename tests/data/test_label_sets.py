import pandas as pd

from cxr_core.data.label_sets import build_label_set, to_general
from cxr_core.data.term_tree import parse_term_tree

from .test_term_tree import TREE


def _rows(label_lists):
    return pd.DataFrame({
        "ImageID": [f"i{k}" for k in range(len(label_lists))],
        "ImageDir": "0",
        "PatientID": [f"p{k}" for k in range(len(label_lists))],
        "labels": label_lists,
    })


def test_selection_keeps_label_exactly_at_threshold_and_drops_below():
    rows = _rows([["pleural effusion"]] * 3 + [["pneumonia"]] * 2 + [["normal"]] * 4)
    tree = parse_term_tree(TREE)
    ls = build_label_set("specific", rows, tree, min_count=3)
    assert ls.labels == ["normal", "pleural effusion"]  # most frequent first
    assert len(ls.rows) == 7 and ls.dropped_no_selected_label == 2
    assert ls.matrix.sum(axis=0).tolist() == [4, 3]


def test_general_set_groups_and_counts_union_once():
    tree = parse_term_tree(TREE)
    assert to_general(["atypical pneumonia", "pneumonia", "upper lobe"], tree) == ["pneumonia"]
    rows = _rows([["atypical pneumonia"], ["pneumonia"], ["calcified granuloma"], ["lipomatosis"]])
    ls = build_label_set("general", rows, tree, min_count=1)
    assert dict(zip(ls.labels, ls.matrix.sum(axis=0))) == {
        "pneumonia": 2, "calcified densities": 1, "granuloma": 1, "lipomatosis": 1}
    assert ls.missing_from_tree == ["lipomatosis"]


def test_findings_on_the_lung_fields_are_known_by_name_in_any_spelling():
    from cxr_core.data.label_sets import in_lungs

    assert in_lungs("pneumonia") and in_lungs("Pleural Effusion") and in_lungs("pulmonary_edema")
    assert not in_lungs("normal") and not in_lungs("cardiomegaly")
    assert not in_lungs("aortic elongation") and not in_lungs("NSG tube")
