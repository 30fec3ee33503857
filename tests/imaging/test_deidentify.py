"""De-identification of DICOM uploads before anything is stored."""

import io

import numpy as np
import pydicom

from cxr_core.imaging.deidentify import deidentified_bytes
from cxr_core.imaging.image_io import load_image
from tests.helpers import dicom_xray_bytes

IDENTITY = {"PatientName": "Qwrt^Ulmo", "PatientID": "PID-55120-QU", "PatientBirthDate": "19480312",
            "PatientAddress": "12 Yarrow Lane", "InstitutionName": "Ulmo Harbour Clinic",
            "AccessionNumber": "ACC-88410", "ReferringPhysicianName": "Brisk^Odile",
            "StudyDate": "20240517"}


def tagged_dicom() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom_xray_bytes(size=96, seed=3, window=(2000, 4000))))
    for keyword, value in IDENTITY.items():
        setattr(ds, keyword, value)
    ds.add_new(0x00991010, "LO", "private note about Qwrt")
    ds.private_block(0x0099, "ACME", create=True).add_new(0x10, "LO", "Qwrt")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_dicom_loses_every_identifying_value_and_keeps_pixels_window_and_uids():
    data = tagged_dicom()
    clean = deidentified_bytes(data)
    assert clean is not None
    for value in [*IDENTITY.values(), "Qwrt"]:
        assert value.encode() not in clean, value
    before, after = load_image(data, filename="a.dcm"), load_image(clean, filename="a.dcm")
    assert np.array_equal(before.pixels, after.pixels)
    assert before.window == after.window
    assert before.dicom_ref == after.dicom_ref  # results still file into the same study
    ds = pydicom.dcmread(io.BytesIO(clean))
    assert ds.PatientIdentityRemoved == "YES"
    assert not [e for e in ds if e.tag.group == 0x0010 and e.keyword != "PatientIdentityRemoved"]


def test_png_and_jpeg_pass_unchanged_and_an_unreadable_dicom_is_not_kept():
    import cv2

    picture = np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)
    for ext in (".png", ".jpg"):
        data = cv2.imencode(ext, picture)[1].tobytes()
        assert deidentified_bytes(data) is data
    assert deidentified_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40) is None
