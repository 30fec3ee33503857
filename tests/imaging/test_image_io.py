import io

import cv2
import numpy as np
import pytest

from cxr_core.base import errors
from cxr_core.imaging.image_io import load_image


def _xray(h=300, w=260, dtype=np.uint8):
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 17.0) + np.cos(yy / 23.0) + 2) / 4
    top = 255 if dtype == np.uint8 else 4095
    return (base * top).astype(dtype)


def _png(arr):
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def test_png_8bit_scaled_to_unit_range():
    img = load_image(_png(_xray()), filename="a.png")
    assert img.pixels.dtype == np.float32 and img.pixels.min() == 0 and img.pixels.max() == 1
    assert img.original_size == (300, 260) and img.bit_depth == 8 and img.source_format == "png"
    assert len(img.sha256) == 64


def test_png_16bit_keeps_precision():
    arr = _xray(dtype=np.uint16)
    img = load_image(_png(arr), filename="b.png")
    assert img.bit_depth == 16
    assert len(np.unique(img.pixels)) > 256


def test_jpeg_and_rgb_become_grayscale(tmp_path):
    rgb = np.dstack([_xray()] * 3)
    ok, buf = cv2.imencode(".jpg", rgb)
    path = tmp_path / "c.jpg"
    path.write_bytes(buf.tobytes())
    img = load_image(path)
    assert img.pixels.ndim == 2 and img.source_format == "jpeg"
    rgba = np.dstack([_xray()] * 3 + [np.full((300, 260), 255, np.uint8)])
    assert load_image(_png(rgba), filename="d.png").pixels.ndim == 2


def _dicom_bytes(pixels, photometric="MONOCHROME2", slope=1.0, intercept=0.0, with_pixels=True,
                 **tags):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName = "Secret^Person"
    ds.PatientID = "ID-123"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_monochrome2_and_monochrome1_inverted():
    arr = _xray(dtype=np.uint16)
    mono2 = load_image(_dicom_bytes(arr), filename="e.dcm")
    mono1 = load_image(_dicom_bytes(arr, photometric="MONOCHROME1"), filename="f.dcm")
    assert mono2.source_format == "dicom" and mono2.photometric == "MONOCHROME2"
    assert np.allclose(mono1.pixels, 1 - mono2.pixels, atol=1e-5)
    # rescale slope/intercept is applied: a negative slope flips the ordering
    flipped = load_image(_dicom_bytes(arr, slope=-1.0, intercept=5000.0), filename="g.dcm")
    assert np.allclose(flipped.pixels, 1 - mono2.pixels, atol=1e-5)


def test_dicom_never_exposes_patient_tags():
    img = load_image(_dicom_bytes(_xray(dtype=np.uint16)), filename="h.dcm")
    text = repr(img.__dict__.keys()) + repr([v for k, v in img.__dict__.items() if k != "pixels"])
    assert "Secret" not in text and "ID-123" not in text


def test_dicom_acquisition_tags_exposed_and_png_has_none():
    img = load_image(_dicom_bytes(_xray(dtype=np.uint16), BodyPartExamined="CHEST",
                                  ViewPosition="LL", Modality="CR"), filename="t.dcm")
    assert (img.body_part, img.view_position, img.modality) == ("CHEST", "LL", "CR")
    bare = load_image(_dicom_bytes(_xray(dtype=np.uint16)), filename="u.dcm")
    assert (bare.body_part, bare.view_position, bare.modality) == (None, None, "DX")
    png = load_image(_png(_xray()), filename="v.png")
    assert (png.body_part, png.view_position, png.modality) == (None, None, None)


def test_dicom_without_pixel_data():
    with pytest.raises(errors.DicomError, match="no pixel data"):
        load_image(_dicom_bytes(_xray(dtype=np.uint16), with_pixels=False), filename="i.dcm")


@pytest.mark.parametrize(
    "data,filename,exc",
    [
        (b"", "a.png", errors.EmptyImageError),
        (b"hello, not an image at all", "a.png", errors.UnsupportedFormatError),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "a.png", errors.CorruptImageError),
        (b"anything", "notes.txt", errors.UnsupportedFormatError),
    ],
)
def test_bad_bytes_raise_specific_errors(data, filename, exc):
    with pytest.raises(exc):
        load_image(data, filename=filename)


def test_truncated_png_and_jpeg():
    data = _png(_xray())
    with pytest.raises(errors.CorruptImageError):
        load_image(data[: len(data) // 2], filename="t.png")
    ok, buf = cv2.imencode(".jpg", _xray())
    with pytest.raises(errors.CorruptImageError):
        load_image(buf.tobytes()[:200], filename="t.jpg")


def test_pixel_limit_checked_before_decoding():
    big = np.zeros((400, 400), np.uint8)
    big[::2] = 255
    with pytest.raises(errors.ImageTooLargeError, match="limit"):
        load_image(_png(big), filename="big.png", max_pixels=100_000)


def test_degenerate_sizes_and_constant_images():
    with pytest.raises(errors.DegenerateImageError):
        load_image(_png(_xray(10, 10)), filename="tiny.png")
    with pytest.raises(errors.DegenerateImageError):
        load_image(_png(_xray(40, 1000)), filename="strip.png")
    with pytest.raises(errors.DegenerateImageError, match="blank"):
        load_image(_png(np.full((100, 100), 7, np.uint8)), filename="flat.png")


def test_all_image_errors_share_one_base_class():
    for exc in (errors.EmptyImageError, errors.CorruptImageError, errors.DicomError,
                errors.ImageTooLargeError, errors.DegenerateImageError):
        assert issubclass(exc, errors.ImageError) and issubclass(exc, errors.CxrError)


def _sample_8bit():
    from pathlib import Path

    path = sorted((Path(__file__).resolve().parents[2] / "assets" / "samples").glob("*.png"))[0]
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def test_one_hot_pixel_does_not_darken_a_12_bit_image():
    arr = _sample_8bit().astype(np.uint16) * 16  # 12-bit detector values in a 16-bit PNG
    hot = arr.copy()
    hot[10, 10] = 65535
    clean, spoiled = load_image(_png(arr), filename="a.png"), load_image(_png(hot), filename="b.png")
    rest = np.ones(arr.shape, bool)
    rest[10, 10] = False
    assert np.abs(clean.pixels - spoiled.pixels)[rest].max() < 1e-6
    assert spoiled.pixels[10, 10] == 1.0 and np.median(spoiled.pixels) > 0.2
    dark = arr.copy() + 3000  # (the gap below the bulk must exceed half its width)
    dark[10, 10] = 0  # a dead pixel far below the bulk is clipped the same way
    assert np.abs(load_image(_png(dark), filename="c.png").pixels - clean.pixels)[rest].max() < 0.01


def test_ordinary_8_bit_xrays_keep_min_max_scaling():
    from pathlib import Path

    from cxr_core.imaging.image_io import scale_intensity

    for path in sorted((Path(__file__).resolve().parents[2] / "assets" / "samples").glob("*.png")):
        raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        min_max = (raw - raw.min()) / (raw.max() - raw.min())
        assert np.abs(load_image(path).pixels - min_max).max() < 1e-6
        assert np.abs(scale_intensity(raw) - min_max).max() < 1e-6
    gradient = np.tile(np.arange(256, dtype=np.uint8), (64, 1))  # spans 0..255 evenly
    assert np.abs(load_image(_png(gradient), filename="g.png").pixels - gradient / 255.0).max() < 1e-6


def test_dicom_keeps_its_uids_and_voi_window_but_no_patient_tags():
    from tests.helpers import dicom_xray_bytes

    windowed = load_image(dicom_xray_bytes(window=(2000, 4000)), filename="w.dcm")
    assert windowed.dicom_ref is not None and windowed.dicom_ref.modality == "DX"
    assert windowed.dicom_ref.study_instance_uid.startswith("1.2.")
    assert windowed.dicom_ref.sop_instance_uid != windowed.dicom_ref.series_instance_uid
    centre, width = windowed.window
    # the window covers the 12-bit range; the image fills only part of it, so its [0, 1] span
    # is wider than 1 and centred near the middle
    assert width > 1.0 and 0.2 < centre < 0.8
    narrow = load_image(dicom_xray_bytes(window=(2000, 4000)), filename="w.dcm")
    assert narrow.window == windowed.window  # deterministic
    plain = load_image(dicom_xray_bytes(uids=False), filename="p.dcm")
    assert plain.window is None and plain.dicom_ref is None
    assert load_image(_png(_xray()), filename="a.png").window is None
    text = repr(windowed.dicom_ref) + repr(windowed.window)
    assert "Secret" not in text and "ID-123" not in text and "1950" not in text


def test_dicom_patient_study_is_kept_in_memory_with_its_repr_withheld():
    from tests.helpers import dicom_xray_bytes

    img = load_image(dicom_xray_bytes(), filename="p.dcm")
    patient = img.patient_study
    assert (patient.patient_name, patient.patient_id, patient.patient_birth_date) == \
        ("Secret^Person", "ID-123", "19500101")
    assert patient.study_date == "" and patient.pixel_spacing is None  # absent in the source
    for text in (repr(patient), str(patient), repr(img)):
        assert "Secret" not in text and "ID-123" not in text and "1950" not in text
    assert load_image(_png(_xray()), filename="a.png").patient_study is None
