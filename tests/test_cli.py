import pytest

from cxr_core.cli import build_parser, main


@pytest.mark.parametrize("argv", [
    ["train", "--arch", "ResNet9000", "--data", "d", "--split", "s", "--out", "o"],
    ["prepare", "--csv", "a", "--term-tree", "b", "--out", "c", "--min-count", "0"],
    ["nonsense"],
    [],
])
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_every_documented_command_exists():
    text = build_parser().format_help()
    for command in ("prepare", "segmenter", "segment", "preprocess", "train", "train-ensemble",
                    "evaluate", "explain", "compile-bundle", "retrain", "build-demo", "fit-input-check"):
        assert command in text


def test_missing_inputs_are_one_sentence_exit_2(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert main(["evaluate", "--bundle", str(tmp_path), "--data", str(tmp_path),
                 "--split", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    assert "Input folder not found" in err and "manifest.json is missing" in err
    assert "Traceback" not in err


def test_fit_input_check_missing_images_is_one_sentence(tmp_path, capsys):
    import shutil

    from cxr_core.base.config import settings

    bundle = tmp_path / "b"
    shutil.copytree(settings().default_bundle_path, bundle)
    assert main(["fit-input-check", "--bundle", str(bundle), "--images", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "'train' images are not under" in err and "Traceback" not in err


def test_missing_imagenet_weights_file_is_one_sentence_before_training(tmp_path, capsys):
    missing = tmp_path / "mobilenet_2_5_224_tf_no_top.h5"
    common = ["--data", str(tmp_path), "--split", str(tmp_path / "s.csv"), "--out", str(tmp_path / "o"),
              "--imagenet-weights", str(missing)]
    assert main(["train", "--arch", "MobileNet", *common]) == 2
    assert main(["train-ensemble", "--arch", "MobileNet", "--arch", "MobileNetV2", *common]) == 2
    # two architectures and a file not named as Keras names it: which one is it for?
    assert main(["train-ensemble", "--arch", "MobileNet", "--arch", "MobileNetV2", *common[:-1],
                 str(tmp_path / "weights.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count(f"No ImageNet weights file at {missing}") == 2
    assert "give the file its Keras name" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before anything was trained
