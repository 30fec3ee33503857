"""Hostile and odd X-ray files, built in memory from a real sample (for the app and CLI tests)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
PATIENT_TAGS = {"PatientName": "Zyxwv^Quirinal", "PatientID": "PID-93817-ZQ",
                "PatientBirthDate": "19510229", "InstitutionName": "Saint Quirinal Infirmary",
                "AccessionNumber": "ACC77120943", "ReferringPhysicianName": "Vlorp^Agathe"}


def sample_gray() -> np.ndarray:
    path = sorted((REPO / "assets" / "samples").glob("*.png"))[0]
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def png_bomb(side: int = 60_000) -> bytes:
    """A tiny PNG whose header promises side x side pixels (decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\x00" * (side + 1) * 64, 9)  # only 64 rows: the rest never arrives
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def dicom(pixels: np.ndarray, frames: int = 1, view: str | None = "PA", tags: dict | None = None) -> bytes:
    """An uncompressed MONOCHROME2 DICOM of 16-bit pixels, optionally multi-frame and tagged."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
    if view:
        ds.ViewPosition = view
    for key, value in (tags or {}).items():
        setattr(ds, key, value)
    data = (pixels.astype(np.uint16) * 16)
    if frames > 1:
        data = np.stack([data] * frames)
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = data.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def hostile_files() -> dict[str, bytes]:
    """name -> bytes; every one must get a review or one clear sentence."""
    gray = sample_gray()
    rgb = cv2.applyColorMap(gray, cv2.COLORMAP_BONE)  # a colour JPEG of an X-ray
    low_range = (30_000 + gray.astype(np.uint16) * 40 // 255).astype(np.uint16)  # 41 grey levels
    large = cv2.resize(gray, (1600, 1600), interpolation=cv2.INTER_CUBIC)  # 10x the pixels
    noise = np.random.default_rng(0).integers(0, 256, (1600, 1600), dtype=np.uint8)
    return {
        "oversize.png": png(noise),  # 2.6 MB of incompressible pixels: over a 2 MB limit
        "empty.png": b"",
        "renamed.png": b"%PDF-1.4\n% not an image at all\n" * 20,
        "bomb.png": png_bomb(),
        "multiframe.dcm": dicom(gray, frames=3),
        "tagged.dcm": dicom(gray, tags=PATIENT_TAGS),
        "colour.jpg": cv2.imencode(".jpg", rgb)[1].tobytes(),
        "low_range16.png": png(low_range),
        "lateral.dcm": dicom(gray, view="LL"),
        "large.png": png(large),
    }


#: the one sentence expected for files that cannot be reviewed (others must be reviewed)
REFUSED = {
    "oversize.png": "the limit is",
    "empty.png": "The file is empty.",
    "renamed.png": "not a PNG, JPEG or DICOM",
    "bomb.png": "more than the limit",
    "lateral.dcm": "lateral or oblique",  # the input check: not a frontal view
}
