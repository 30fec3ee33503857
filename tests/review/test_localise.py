"""`localise` on the shipped bundle and real NIH radiologist boxes: tables, baselines, contact
sheet, unknown findings skipped, the flat-map flag, and the results stored in the bundle."""

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_core.base.config import settings
from cxr_core.base.errors import DataError
from cxr_core.cli import main
from cxr_core.evaluation.localisation import MEASURES, SAMENESS_FLAG, SOURCES, summarise
from cxr_core.modeling.bundle import Bundle
from cxr_core.review.localise import (
    LocalisationResult,
    read_boxes,
    store_in_bundle,
    stored_localisation,
)

from ..conftest import SHARED, require
from ..modeling.bundle_factory import make_split, write_synthetic_bundle

NIH = SHARED / "nih-sample"
LABELS = ["pleural effusion", "pneumonia", "atelectasis", "nodule sign"]


def test_localise_measures_stores_and_flags_on_real_boxes(tmp_path, capsys):
    require(NIH / "boxes.csv")
    boxes = pd.read_csv(NIH / "boxes.csv")
    chosen = pd.concat([boxes[boxes["finding"] == "pneumonia"].head(8),
                        boxes[boxes["finding"] == "cardiomegaly"].head(1)])
    chosen.to_csv(tmp_path / "boxes.csv", index=False)
    bundle = tmp_path / "bundle"
    shutil.copytree(settings().default_bundle_path, bundle)
    out = tmp_path / "out"
    code = main(["localise", "--bundle", str(bundle), "--images", str(NIH), "--boxes",
                 str(tmp_path / "boxes.csv"), "--metadata", str(NIH / "metadata.csv"),
                 "--out", str(out), "--resamples", "100", "--engine", "lite"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "skipped: cardiomegaly" in printed  # not one of the bundle's labels
    summary = pd.read_csv(out / "localisation.csv")
    assert set(summary["finding"]) == {"pneumonia", "overall"}
    assert set(summary["measure"]) == set(MEASURES)
    assert (summary["boxes"] == 8).all()
    for source in SOURCES:
        inside = summary[source].between(summary[f"{source}_low"] - 1e-9, summary[f"{source}_high"] + 1e-9)
        assert inside[summary[f"{source}_low"].notna()].all()
    per_box = pd.read_csv(out / "localisation_boxes.csv")
    assert len(per_box) == 8 * len(SOURCES)
    uniform = per_box[per_box["source"] == "uniform_lungs"]
    assert np.allclose(uniform["lung_share"], 1.0)  # the baseline lies on the lungs by construction
    model = per_box[per_box["source"] == "model"]
    assert model["energy_in_box"].between(0, 1).all() and model["pointing"].between(0, 1).all()
    assert 0.3 < model["lung_share"].mean() < 1.0  # the maps are measured as computed, not masked
    sameness = pd.read_csv(out / "localisation_sameness.csv")
    assert list(sameness["label"]) == Bundle.load(bundle).labels
    # a label is flagged exactly when its maps hardly depend on the X-ray, and the command says
    # so (v3's pneumonia blob was flagged; v4's maps follow the image: see
    # tests/evaluation/test_localisation.py for both cases on constructed maps)
    by_label = sameness.set_index("label")
    assert (by_label["flagged"] == (by_label["sameness"] >= SAMENESS_FLAG)).all()
    for label, row in by_label.iterrows():
        assert (f"flagged: the map of '{label}'" in printed) == bool(row["flagged"])
    assert (out / "localisation_cases.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "localisation.md").read_text()
    assert "| pneumonia | pointing game | 8 |" in text and "cardiomegaly" in text
    stored = Bundle.load(bundle)  # verified: the new files are in its checksums
    entry = stored.metrics["localisation"]
    assert entry["boxes"] == 8 and entry["unknown_findings"] == ["cardiomegaly"]
    assert entry["overall"]["pointing"]["model"] == pytest.approx(
        summary.set_index(["finding", "measure"]).loc[("overall", "pointing"), "model"])
    assert (bundle / entry["tables"]["summary"]).is_file()
    # every lung finding's map over all 8 X-rays (boxed for pneumonia or not), beside a map
    # uniform over the crop box; 'normal' is not a lung finding
    energy = pd.read_csv(out / "localisation_lung_energy.csv").set_index("finding")
    lung_labels = [lab for lab in Bundle.load(bundle).labels if lab != "normal"]
    assert list(energy.index) == lung_labels + ["all lung findings"]
    assert (energy["xrays"] == 8).all()
    assert energy["energy_on_lungs"].between(0, 1).all() and energy["uniform_crop"].between(0.3, 1).all()
    inside = energy["energy_on_lungs"].between(energy["low"] - 1e-9, energy["high"] + 1e-9)
    assert inside.all()
    pooled = energy.loc["all lung findings", "energy_on_lungs"]
    assert min(energy.loc[lung_labels, "energy_on_lungs"]) <= pooled <= max(energy.loc[lung_labels, "energy_on_lungs"])
    assert entry["lung_energy"]["model"] == pytest.approx(pooled, abs=1e-4)
    assert "Energy on the lungs of each lung finding's map" in text


def test_read_boxes_refuses_bad_tables_in_one_sentence(tmp_path):
    (tmp_path / "a.csv").write_text("image,finding,x,y\nimg.png,pneumonia,1,2\n")
    with pytest.raises(DataError, match="lacks the column"):
        read_boxes(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("image,finding,x,y,w,h\nimg.png, Pneumonia ,1,2,0,5\n")
    with pytest.raises(DataError, match="not positive"):
        read_boxes(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("image,finding,x,y,w,h\nimg.png, Pneumonia ,1,2,3,5\n")
    assert read_boxes(tmp_path / "c.csv")["finding"].tolist() == ["pneumonia"]


def test_localise_cli_bad_boxes_file_is_one_sentence(tmp_path, capsys):
    (tmp_path / "boxes.csv").write_text("image,finding\nx.png,pneumonia\n")
    code = main(["localise", "--images", str(tmp_path), "--boxes", str(tmp_path / "boxes.csv"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "lacks the column" in err and "Traceback" not in err


def synthetic_result() -> LocalisationResult:
    """A localisation result with known numbers (no model run): 10 boxes of 5 patients."""
    rows = []
    for i in range(10):
        for source in SOURCES:
            hit = float(source == "model" and i < 7)
            rows.append({"image": f"img{i}.png", "patient": f"p{i // 2}", "finding": "pleural effusion",
                         "source": source, **{m: hit for m in MEASURES}})
    records = pd.DataFrame(rows)
    sameness = pd.DataFrame({"label": LABELS, "sameness": [0.95, 0.4, 0.5, 0.3]})
    sameness["flagged"] = sameness["sameness"] >= 0.9
    sheet = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    lung_energy = pd.DataFrame({"finding": ["pleural effusion", "all lung findings"], "xrays": [10, 10],
                                "energy_on_lungs": [0.82, 0.82], "low": [0.8, 0.8], "high": [0.84, 0.84],
                                "uniform_crop": [0.65, 0.65]})
    return LocalisationResult(summarise(records, 200, 0), records, sameness, ["nodule"], sheet=sheet,
                              lung_energy=lung_energy)


def test_stored_results_reach_the_bundle_and_its_model_card(tmp_path):
    bundle_dir = write_synthetic_bundle(tmp_path / "b", make_split(60, LABELS, [0.3] * 4, seed=1),
                                        LABELS, [1.0] * 4)
    assert stored_localisation(Bundle.load(bundle_dir)) is None
    written = store_in_bundle(Bundle.load(bundle_dir), synthetic_result(), 200, 0)
    assert all(path.is_file() for path in written)
    bundle = Bundle.load(bundle_dir)  # checksums cover the new files
    stored = stored_localisation(bundle)
    assert stored["entry"]["boxes"] == 10 and stored["entry"]["flagged_labels"] == [LABELS[0]]
    overall = stored["summary"].set_index(["finding", "measure"]).loc[("overall", "pointing")]
    assert overall["model"] == pytest.approx(0.7) and overall["uniform_lungs"] == 0
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert "## Localisation against radiologists' boxes" in card
    assert "| pointing game | 0.700 [" in card and "| 0.000 | 0.000 |" in card
    assert f"do not follow the image): {LABELS[0]}." in card and "(skipped): nodule." in card
    assert ("lung findings' maps over these 10 X-rays (every lung finding, boxed or not): 0.820 "
            "[0.800, 0.840], against 0.650 for a map uniform over the crop box") in card
    assert stored["lung_energy"].set_index("finding").loc["all lung findings", "energy_on_lungs"] == 0.82
    (bundle_dir / "metrics" / "localisation.csv").unlink()
    with pytest.raises(DataError, match="does not hold"):
        stored_localisation(Bundle.load(bundle_dir, verify=False))
