"""`explain` CLI on the shipped default bundle and real X-rays."""

import json
import shutil
from pathlib import Path

import pandas as pd

from cxr_core.cli import main
from cxr_core.config import settings

REPO = Path(__file__).resolve().parents[1]
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
