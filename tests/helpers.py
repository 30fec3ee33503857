"""Small shared builders for tests (cached so each architecture is built once per session)."""

from __future__ import annotations

import functools

import numpy as np

LABELS = ["effusion", "nodule", "cardiomegaly", "normal"]


def input_size_for(arch: str) -> int:
    """One input size per architecture for all tests (each model is then built only once):
    large enough for a feature map of at least 3 x 3."""
    return 139 if arch in ("InceptionV3", "InceptionResNetV2", "Xception") else 96


@functools.lru_cache(maxsize=None)
def classifier(arch: str, size: int):
    import keras

    from cxr_core.modeling.model_building import build_classifier

    keras.utils.set_random_seed(0)
    built = build_classifier(arch, LABELS, size, weights=None)
    # random heads give many all-zero CAMs; a wider random head makes the test meaningful
    rng = np.random.default_rng(0)
    for name in ("head_dense", "logits"):
        layer = built.model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([rng.normal(0, 0.05, kernel.shape).astype("float32"),
                           rng.normal(0, 0.05, bias.shape).astype("float32")])
    return built


def xray_batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)
    return np.clip(base[None] + rng.normal(0, 0.05, (n, size, size)), 0, 1).astype("float32")


def dicom_xray_bytes(size: int = 256, seed: int = 0, window: tuple[float, float] | None = None,
                     uids: bool = True) -> bytes:
    """A small synthetic 12-bit DICOM chest X-ray with patient tags that must never leak,
    optionally a VOI window (centre, width) and study/series/instance UIDs."""
    import io

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = (xray_batch(1, size, seed)[0] * 4000).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(seed), "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Secret^Person", "ID-123", "19500101"
    ds.Modality = "DX"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    if uids:
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(seed), "study"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(seed), "series"])
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def png_as_dicom(path, **tags) -> bytes:
    """An 8-bit PNG X-ray as an uncompressed 12-bit MONOCHROME2 DICOM with the given header
    keywords (e.g. BodyPartExamined="HAND"); no patient tags."""
    import io

    import cv2
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def tiny_cache(root, n_train: int = 8, n_val: int = 4, n_test: int = 2, size: int = 32,
               labels=("a", "b"), seed: int = 0):
    """A split.csv and a crop cache of smooth synthetic 16-bit crops (no segmenter needed):
    returns (cache_dir, split_csv)."""
    from pathlib import Path

    import cv2
    import pandas as pd

    root = Path(root)
    cache = root / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    targets = rng.integers(0, 2, (n, len(labels)))
    targets[:2] = [[1] * len(labels), [0] * len(labels)]  # both classes in train for every label
    targets[n_train:n_train + 2] = targets[:2]  # and in val
    rows = []
    for i in range(n):
        image = xray_batch(1, size, seed=seed * 1000 + i)[0]
        image = np.clip(image + 0.2 * targets[i, 0] * (np.arange(size) / size)[None], 0, 1)
        cv2.imwrite(str(cache / f"img{i}.png"), (image * 65535).astype(np.uint16))
        split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
        rows.append({"ImageID": f"img{i}.png", "ImageDir": "", "PatientID": f"p{i}", "split": split,
                     **{lab: int(targets[i, k]) for k, lab in enumerate(labels)}})
    split_csv = root / "split.csv"
    pd.DataFrame(rows).to_csv(split_csv, index=False)
    return cache, split_csv


TINY_ARCH = "TinyNet"


def tiny_backbone(include_top=False, weights=None, input_tensor=None, **kwargs):
    """A stand-in for a `keras.applications` backbone with the parts training touches (strided
    convolutions, batch normalisation, a depthwise convolution, a last feature map), small
    enough that a training step traces in about a second instead of tens of seconds."""
    import keras
    from keras import layers

    if weights is not None:
        raise ValueError("TinyNet has no pretrained weights")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(input_tensor)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="conv_dw")(x)
    x = layers.BatchNormalization(name="conv_dw_bn")(x)
    x = layers.ReLU(name="conv_dw_relu")(x)
    x = layers.Conv2D(16, 1, use_bias=False, name="conv_pw")(x)
    x = layers.BatchNormalization(name="conv_pw_bn")(x)
    x = layers.ReLU(name="conv_pw_relu")(x)
    return keras.Model(keras.utils.get_source_inputs(input_tensor), x, name="tinynet")


def register_tiny_arch(monkeypatch) -> str:
    """Register TinyNet (see `tiny_backbone`) for the calling test; returns its name. For tests
    of training mechanics (resume, fingerprints, precision, determinism) that hold for any
    backbone; the registered architectures are trained by the end-to-end and distributed tests."""
    import keras

    from cxr_core.modeling.registry import ARCHITECTURES, ArchSpec

    monkeypatch.setattr(keras.applications, TINY_ARCH, tiny_backbone, raising=False)
    monkeypatch.setitem(ARCHITECTURES, TINY_ARCH, ArchSpec(
        TINY_ARCH, TINY_ARCH, "tf", 32, 16, "conv_pw_relu", "tinynet_no_top.h5"))
    return TINY_ARCH
