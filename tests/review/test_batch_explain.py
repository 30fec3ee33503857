"""`explain` CLI on the shipped default bundle and real X-rays."""

import json
import shutil
from pathlib import Path

import pandas as pd

from cxr_core.base.config import settings
from cxr_core.cli import main
from ..helpers import png_as_dicom

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


def test_explain_cli_default_bundle_batch_and_bad_files(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for sample in SAMPLES[:2]:
        shutil.copy(sample, inputs / sample.name)
    (inputs / "empty.png").write_bytes(b"")
    code = main(["explain", str(inputs), str(SAMPLES[2]), "--out", str(tmp_path / "out"),
                 "--all-labels", "--uncertainty", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1 and "empty.png" in captured.err
    out = tmp_path / "out"
    for sample in SAMPLES[:3]:
        assert (out / f"{sample.stem}_report.png").is_file()
        assert (out / f"{sample.stem}_report.pdf").is_file()
    frame = pd.read_csv(out / "predictions.csv")
    labels = json.loads((settings().default_bundle_path / "manifest.json").read_text())["labels"]
    assert len(frame) == 3 * len(labels)
    assert {"probability", "threshold", "agreement", "positive"} <= set(frame.columns)
    assert any(c.startswith("p_") for c in frame.columns)
    payload = json.loads((out / "predictions.json").read_text())
    assert payload["failures"][0]["file"] == "empty.png"


def test_explain_cli_bad_bundle_is_one_sentence(tmp_path, capsys):
    code = main(["explain", str(SAMPLES[0]), "--bundle", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "manifest.json is missing" in err and "Traceback" not in err


def _without_lite_members(bundle: Path) -> None:
    """Turn a compiled bundle copy back into a TensorFlow-only one (as `export-bundle` writes it)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for member in manifest["members"]:
        lite = member.pop("lite", None)
        if lite:
            (bundle / lite).unlink()
            manifest["files"].pop(lite, None)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def test_compile_bundle_then_explain_with_lite_gives_the_same_predictions(tmp_path, capsys):
    """A bundle without Lite members refuses `--engine lite` in one sentence; after
    `compile-bundle`, `explain --engine lite` and `--engine tensorflow` agree."""
    bundle = tmp_path / "compiled"
    shutil.copytree(settings().default_bundle_path, bundle)
    _without_lite_members(bundle)
    assert main(["explain", str(SAMPLES[0]), "--bundle", str(bundle), "--out", str(tmp_path / "x"),
                 "--engine", "lite"]) == 2
    err = capsys.readouterr().err
    assert "no TensorFlow Lite members" in err and "Traceback" not in err
    assert main(["compile-bundle", str(bundle)]) == 0
    assert "TensorFlow Lite members added" in capsys.readouterr().out
    frames = {}
    for engine in ("lite", "tensorflow"):
        out = tmp_path / engine
        assert main(["explain", *map(str, SAMPLES[:2]), "--bundle", str(bundle), "--out", str(out),
                     "--engine", engine]) == 0
        frames[engine] = pd.read_csv(out / "predictions.csv")
    lite, tf_frame = frames["lite"], frames["tensorflow"]
    assert len(lite) == len(tf_frame) > 0
    assert (lite["probability"] - tf_frame["probability"]).abs().max() < 1e-4
    assert (lite["positive"] == tf_frame["positive"]).mean() > 0.99


def test_explain_skips_what_the_input_check_refuses_unless_forced(tmp_path, caplog):
    hand = tmp_path / "hand.dcm"
    hand.write_bytes(png_as_dicom(SAMPLES[0], Modality="DX", BodyPartExamined="HAND"))
    assert main(["explain", str(hand), str(SAMPLES[1]), "--out", str(tmp_path / "skip")]) == 0
    assert "skipped hand.dcm: The DICOM header says the body part is HAND" in caplog.text
    assert not (tmp_path / "skip" / "hand_report.png").exists()
    assert (tmp_path / "skip" / f"{SAMPLES[1].stem}_report.png").is_file()
    payload = json.loads((tmp_path / "skip" / "predictions.json").read_text())
    assert [r["file"] for r in payload["refused"]] == ["hand.dcm"] and payload["forced"] is False
    assert {r["image"] for r in payload["predictions"]} == {SAMPLES[1].name}
    assert all(r["input_check_passed"] for r in payload["predictions"])
    assert main(["explain", str(hand), "--out", str(tmp_path / "forced"), "--force"]) == 0
    frame = pd.read_csv(tmp_path / "forced" / "predictions.csv")
    assert set(frame["image"]) == {"hand.dcm"} and not frame["input_check_passed"].any()
    assert (tmp_path / "forced" / "hand_report.pdf").is_file()
