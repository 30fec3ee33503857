from cxr_core.data.term_tree import finding_terms, normalise_label, parse_term_tree

TREE = """\
label: normal
single_label: Y
---
label: exclude
---
label: radiological finding
children:
- label: Calcified Densities
  children:
  - label: calcified granuloma
- label: granuloma
  children:
  - label: calcified granuloma
- label: pleural effusion
---
label: differential diagnosis
children:
- label: pneumonia
  children:
  - label: atypical pneumonia
---
label: localization
children:
- label: lobar
  children:
  - label: upper lobe
"""


def test_normalise_label_strips_folds_and_lowercases():
    assert normalise_label("  Pleural   Effusion ") == "pleural effusion"


def test_general_label_is_ancestor_below_category():
    tree = parse_term_tree(TREE)
    assert tree.general_labels("atypical pneumonia") == ["pneumonia"]
    assert tree.general_labels("pleural effusion") == ["pleural effusion"]


def test_multi_parent_label_maps_to_all_parents():
    tree = parse_term_tree(TREE)
    assert sorted(tree.general_labels("calcified granuloma")) == ["calcified densities", "granuloma"]


def test_top_level_and_missing_labels_map_to_themselves():
    tree = parse_term_tree(TREE)
    assert tree.general_labels("normal") == ["normal"]
    assert tree.general_labels("lipomatosis") == ["lipomatosis"]
    assert "lipomatosis" not in tree


def test_localization_branch_is_location_not_finding():
    tree = parse_term_tree(TREE)
    assert tree.is_location("upper lobe")
    assert not tree.is_location("pneumonia")


def test_display_keeps_tree_spelling():
    tree = parse_term_tree(TREE)
    assert tree.display["calcified densities"] == "Calcified Densities"


def test_real_term_tree_parses(term_tree_path):
    from cxr_core.data.term_tree import load_term_tree

    tree = load_term_tree(term_tree_path)
    assert tree.roots[:3] == ["normal", "exclude", "suboptimal study"]
    assert sorted(tree.general_labels("calcified granuloma")) == ["calcified densities", "granuloma"]
    assert "hypoexpansion basal" not in tree and "lipomatosis" not in tree


def test_finding_terms_are_the_findings_and_diagnoses_without_roots_or_locations():
    """What an expert may add to a review: no 'normal'/'exclude' roots, no locations."""
    assert finding_terms(parse_term_tree(TREE)) == [
        "atypical pneumonia", "Calcified Densities", "calcified granuloma", "granuloma",
        "pleural effusion", "pneumonia"]
