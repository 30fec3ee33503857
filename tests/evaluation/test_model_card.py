"""The model card: what a bundle's manifest says, rendered as Markdown, and written into the
bundle without breaking its checksums."""

from __future__ import annotations

from pathlib import Path

from cxr_core.evaluation.model_card import render_model_card, write_model_card
from cxr_core.modeling.bundle import Bundle
from tests.evaluation.test_evaluation import synthetic_tables
from tests.modeling.bundle_factory import make_split, write_synthetic_bundle


def _manifest(**extra) -> dict:
    manifest = {
        "bundle_id": "chest-20260101-abcd", "demo": False, "label_set": "specific",
        "labels": [{"name": "effusion", "groups": ["pleural", "fluid"]},
                   {"name": "nodule", "groups": ["nodule"]}],
        "members": [{"arch": "DenseNet201", "input_size": 224},
                    {"arch": "Xception", "input_size": 299}],
        "threshold_method": "f1",
        "thresholds": {"f1": {"ensemble": [0.4, 0.5], "members": [[0.4, 0.5]] * 2,
                              "chosen_on": "validation"}},
        "preprocessing": {"work_size": 512, "weights_dtype": "float16"},
    }
    manifest.update(extra)
    return manifest


def _card(**extra) -> str:
    return render_model_card(Bundle(Path("."), _manifest(**extra)))


def test_a_minimal_bundle_renders_its_facts_and_no_empty_sections():
    card = _card()
    lines = card.splitlines()
    assert lines[0] == "# Model card: chest-20260101-abcd"
    assert "- Label set: `specific`; 2 findings" in lines
    assert "- Members: DenseNet201 (224 px), Xception (299 px)" in lines
    assert "- Thresholds: `f1` per label, chosen on validation" in lines
    assert "- Preprocessing: work_size: 512, weights_dtype: float16" in lines
    for absent in ("Demonstration model", "## Data", "## Label counts", "## Test metrics",
                   "## Lineage", "calibration", "Revision", "Test-time"):
        assert absent not in card, absent


def test_the_demo_warning_and_an_unrecorded_threshold_split():
    thresholds = {"f1": {"ensemble": [0.5, 0.5], "members": [[0.5, 0.5]] * 2}}
    card = _card(demo=True, thresholds=thresholds)
    assert "**Demonstration model: not for clinical use.**" in card.splitlines()[2]
    assert "- Thresholds: `f1` per label, chosen on the validation split" in card


def test_members_started_from_imagenet_are_named_with_their_origin():
    runs = [{"arch": "MobileNet", "config": {"weights": "imagenet"}},
            {"arch": "Xception", "config": {"weights": None}}]
    card = _card(demo=True, members=[{"arch": "MobileNet", "input_size": 224},
                                     {"arch": "Xception", "input_size": 299}],
                 training={"members": runs})
    origin = "Keras Applications MobileNet alpha 0.25, Apache-2.0"
    assert f"Fine-tuned from ImageNet weights ({origin}) on CPU" in card.splitlines()[2]
    assert (f"- Members: MobileNet (224 px), Xception (299 px); initialised from ImageNet "
            f"({origin})") in card
    scratch = _card(demo=True, training={"members": [{"arch": "DenseNet201", "config": {"weights": None}}]})
    assert "Trained from scratch on CPU" in scratch and "ImageNet" not in scratch


def test_calibration_revision_and_flips_are_stated():
    card = _card(calibration={"temperature": {}, "isotonic": {}}, threshold_method="f1+temperature",
                 thresholds={"f1+temperature": {"ensemble": [0.5, 0.5], "members": [[0.5, 0.5]] * 2,
                                                "chosen_on": "validation"}},
                 revision={"members_from": "chest-old", "change": "thresholds refitted"},
                 inference={"tta_flip": True, "val_auc_plain": 0.81, "val_auc_flip": 0.83})
    assert "- Thresholds: `f1+temperature` per label, chosen on validation" in card
    assert "- Post-hoc calibration fitted on validation: temperature, isotonic" in card
    assert "- Revision of `chest-old`: thresholds refitted" in card
    assert ("- Test-time left-right flips: on (validation macro AUC 0.81 without, 0.83 with)"
            in card)


def test_the_data_section_lists_sources_licences_and_label_counts():
    data = {"source": "public sample", "images": 120, "images_per_split": {"train": 80, "val": 20,
                                                                           "test": 20},
            "worst_share_deviation": 0.01234,
            "per_source": {"nih": {"images": 70, "patients": 40,
                                   "images_per_split": {"train": 50, "val": 10, "test": 10}}},
            "labels_not_kept": {"hernia": 2},
            "licences": {"CC BY 4.0": 100, " ": 20},
            "labels": {"effusion": {"train": 12, "val": 3, "test": 4},
                       "nodule": {"train": 7, "val": 2, "test": 1}}}
    lines = _card(data=data).splitlines()
    assert "## Data" in lines and "- source: public sample" in lines
    assert "- images per split: train 80, val 20, test 20" in lines
    assert "- worst share deviation: 0.012" in lines  # floats with three decimals
    assert "- nih: 70 images of 40 patients; per split: train 50, val 10, test 10" in lines
    assert "- labels not kept (positives): hernia: 2" in lines
    assert "| CC BY 4.0 | 100 |" in lines and "| empty | 20 |" in lines
    assert "| effusion | pleural, fluid | 12 | 3 | 4 |" in lines
    assert "| nodule | nodule | 7 | 2 | 1 |" in lines


def test_test_metrics_with_intervals_and_per_label_notes():
    metrics = {
        "images": 42,
        "overall": {"CTP": {"auc_macro": 0.8123, "auc_macro_low": 0.75, "auc_macro_high": 0.86,
                            "f1_macro": 0.7, "f1_positive_macro": None, "hamming_loss": 0.1},
                    "Xception": {"auc_macro": 0.79, "f1_macro": 0.65, "f1_positive_macro": 0.5,
                                 "hamming_loss": 0.12}},
        "intervals": {"resamples": 200, "units": 30, "unit": "patient", "seed": 7,
                      "min_class_count": 5},
        "per_label": {"CTP": [{"label": "effusion", "positives": 9, "auc": 0.9, "auc_low": 0.8,
                               "auc_high": 0.95, "f1_macro": 0.7, "f1_positive": 0.6},
                              {"label": "nodule", "positives": 1, "auc": None, "f1_macro": 0.5,
                               "f1_positive": 0.0, "note": "one positive",
                               "ci_note": "too few positives"}]},
    }
    lines = _card(metrics=metrics).splitlines()
    assert "## Test metrics (42 images)" in lines
    assert "| CTP | 0.812 [0.750, 0.860] | 0.700 | n/a | 0.100 |" in lines
    assert "| Xception | 0.790 | 0.650 | 0.500 | 0.120 |" in lines
    assert any(line.startswith("In brackets: 95% patient-level bootstrap intervals (200 resamples "
                               "of 30 patients, seed 7)") for line in lines)
    assert "| effusion | 9 | 0.900 [0.800, 0.950] | 0.700 | 0.600 |  |" in lines
    assert "| nodule | 1 | n/a | 0.500 | 0.000 | one positive; too few positives |" in lines


def test_lineage_is_a_chain_from_the_parent():
    lineage = {"parent_bundle_id": "chest-old", "reviews_used": 12, "refitted": "thresholds",
               "before": {"auc": 0.8}, "after": {"auc": 0.82}}
    card = _card(lineage=lineage)
    section = card.split("## Lineage")[1]
    assert "`chest-old` → `chest-20260101-abcd`" in section
    assert "- reviews used: 12" in section and "- refitted: thresholds" in section
    assert "before" not in section and "after" not in section
    assert "`chest-20260101-abcd`" in _card(lineage={"reviews_used": 3}).split("## Lineage")[1]


def test_no_raw_python_dict_or_list_reaches_the_card():
    """Per-source split sizes, nested lineage entries and lists read as text, never as
    {'train': 600, ...} or ['isotonic']."""
    data = {"images": 840, "patients_per_split": {"test": 100, "train": 400, "val": 60},
            "per_source": {"nih": {"images": 840, "patients": 560,
                                   "images_per_split": {"train": 600, "val": 90, "test": 150},
                                   "positives": {"effusion": 3}}}}
    lineage = {"parent_bundle_id": "chest-old", "reviews_used": 2,
               "kept_from_parent": {"test_time_flips": {"decision": "carried", "tta_flip": True}},
               "refitted": {"calibrations": {"decision": "refitted on validation",
                                             "names": ["isotonic", "temperature"]}},
               "excluded": []}
    card = _card(data=data, lineage=lineage,
                 inference={"tta_flip": False, "val_auc_plain": 0.8, "val_auc_flip": 0.79,
                            "dropped_calibrations": ["temperature"]})
    lines = card.splitlines()
    assert "- nih: 840 images of 560 patients; per split: train 600, val 90, test 150" in lines
    assert "- patients per split: train 400, val 60, test 100" in lines  # in split order
    assert ("- kept from parent: test_time_flips: (decision: carried, tta_flip: yes)" in lines)
    assert ("- refitted: calibrations: (decision: refitted on validation, names: isotonic, "
            "temperature)") in lines
    assert "- excluded: none" in lines
    for raw in ("{", "}", "[", "]", "'"):
        assert raw not in card.replace("`", ""), raw


def test_writing_the_card_into_a_bundle_keeps_it_verifiable(tmp_path):
    labels = ["effusion", "nodule"]
    path = write_synthetic_bundle(tmp_path / "b", make_split(60, labels, [0.3, 0.3]), labels, [1, 1])
    written = write_model_card(path)
    assert written == path / "MODEL_CARD.md"
    bundle = Bundle.load(path)  # the checksums include the new card
    assert "MODEL_CARD.md" in bundle.manifest["files"]
    assert written.read_text() == render_model_card(bundle)
    assert write_model_card(bundle) == written  # a Bundle works as well as a folder


def test_model_card_counts_the_unknown_labels_per_split():
    """A label a source does not annotate: the card's label counts say how many are unknown."""
    manifest = {"bundle_id": "b", "demo": True, "label_set": "x", "members": [],
                "labels": [{"name": "pneumonia", "groups": ["pneumonia"]},
                           {"name": "pleural effusion", "groups": ["pleural effusion"]}],
                "threshold_method": "f1", "preprocessing": {},
                "data": {"labels": {"pneumonia": {"train": 568, "val": 80, "test": 164},
                                    "pleural effusion": {"train": 54, "val": 8, "test": 15}},
                         "unknown_labels": {"pneumonia": {"train": 0, "val": 0, "test": 0},
                                            "pleural effusion": {"train": 295, "val": 42, "test": 83}}}}
    card = render_model_card(Bundle(Path("."), manifest))
    assert "| label | group | train | val | test | unknown (train / val / test) |" in card
    assert "| pleural effusion | pleural effusion | 54 | 8 | 15 | 295 / 42 / 83 |" in card
    assert "| pneumonia | pneumonia | 568 | 80 | 164 | 0 / 0 / 0 |" in card


def test_model_card_shows_intervals_and_lineage_as_a_chain(tmp_path):
    from cxr_core.evaluation.model_card import render_model_card

    bundle, _, tables = synthetic_tables(tmp_path)
    overall = tables["overall"].set_index("model").to_dict(orient="index")
    manifest = {**bundle.manifest, "lineage": {"parent_bundle_id": "parent-1", "reviews_used": 3},
                "metrics": {"images": 10, "overall": overall, "intervals": tables["overall"].attrs["resampling"],
                            "per_label": {"CTP": tables["CTP"].to_dict(orient="records")}}}
    card = render_model_card(Bundle(tmp_path, manifest))
    ctp = overall["CTP"]
    assert f"{ctp['auc_macro']:.3f} [{ctp['auc_macro_low']:.3f}, {ctp['auc_macro_high']:.3f}]" in card
    assert "too few positives" in card and "patient-level bootstrap" in card
    assert "`parent-1` → `synthetic`" in card and "{" not in card.split("## Lineage")[1]


def test_the_map_method_and_what_it_was_chosen_on_are_stated():
    assert "- Heatmaps: Grad-CAM (the published method)\n" in _card()
    card = _card(inference={"tta_flip": False, "map_method": "occlusion",
                            "map_method_chosen_on": "35 radiologists' boxes"})
    assert "- Heatmaps: occlusion sensitivity, chosen on 35 radiologists' boxes" in card
