"""One entry point for every image the tool reads: PNG (8/16-bit), JPEG and DICOM.

Returns float32 pixels in [0, 1] plus the metadata the pipeline needs: for DICOM also the
body part, view position and modality (for the input check), and in memory only the patient and
study module (`PatientStudy`, so that DICOM results file under the same patient and study).
Every bad input raises a specific `ImageError` subclass with one clear sentence.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..base.errors import (
    CorruptImageError,
    DegenerateImageError,
    DicomError,
    EmptyImageError,
    ImageTooLargeError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

#: Default decompression-bomb guard: 50 megapixels (a 7000 x 7000 detector image fits).
DEFAULT_MAX_PIXELS = 50_000_000
MIN_SIDE = 32
MAX_ASPECT = 10.0
SUPPORTED_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".dcm": "dicom",
                        ".dicom": "dicom", "": None}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded grayscale image and the non-identifying facts the pipeline needs."""

    pixels: np.ndarray  # float32, H x W, in [0, 1]
    original_size: tuple[int, int]  # (height, width)
    source_format: str  # "png", "jpeg" or "dicom"
    bit_depth: int
    photometric: str  # "MONOCHROME2" for ordinary grayscale; DICOM's own value otherwise
    sha256: str  # of the raw bytes; used to key feedback, never the file name
    #: display window (centre, width) in the units of `pixels`: where a DICOM's own VOI window
    #: (Window Center/Width) lands; None means the whole range (centre 0.5, width 1)
    window: tuple[float, float] | None = None
    #: DICOM input only: the study/series/instance UIDs that results must reference (no patient tags)
    dicom_ref: DicomReference | None = None
    # DICOM acquisition facts for the input check (None when absent or not DICOM); no patient tags
    body_part: str | None = None  # BodyPartExamined, e.g. "CHEST"
    view_position: str | None = None  # ViewPosition, e.g. "PA", "AP", "LL"
    modality: str | None = None  # Modality, e.g. "CR", "DX"
    #: DICOM input only: the source's patient and study module, IN MEMORY ONLY, so that DICOM
    #: results file under the same patient and study; never stored, logged or used in a name
    patient_study: PatientStudy | None = field(default=None, repr=False, compare=False)
    #: how much the source's colour varies at one brightness (`colour_spread`): 0 for a grayscale
    #: file, small for a tinted X-ray, large for a colour photograph (the input check reads it)
    colour_spread: float = 0.0


#: source attribute keyword of each `PatientStudy` field
PATIENT_STUDY_TAGS = {
    "patient_name": "PatientName", "patient_id": "PatientID", "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex", "accession_number": "AccessionNumber", "study_date": "StudyDate",
    "study_time": "StudyTime", "study_id": "StudyID", "referring_physician_name": "ReferringPhysicianName",
    "study_description": "StudyDescription", "view_position": "ViewPosition",
    "body_part": "BodyPartExamined", "laterality": "Laterality",
}


@dataclass(frozen=True)
class PatientStudy:
    """The patient and study module of a DICOM source (and its view, body part and pixel
    spacing): identifying, so held in memory only and never shown by repr, logs or stores.
    Empty strings where the source has no value (DICOM type 2 attributes stay present)."""

    patient_name: str = field(default="", repr=False)
    patient_id: str = field(default="", repr=False)
    patient_birth_date: str = field(default="", repr=False)  # DA, YYYYMMDD
    patient_sex: str = field(default="", repr=False)  # M, F, O or ""
    accession_number: str = field(default="", repr=False)
    study_date: str = field(default="", repr=False)  # DA
    study_time: str = field(default="", repr=False)  # TM
    study_id: str = field(default="", repr=False)
    referring_physician_name: str = field(default="", repr=False)
    study_description: str = field(default="", repr=False)
    view_position: str = field(default="", repr=False)
    body_part: str = field(default="", repr=False)
    laterality: str = field(default="", repr=False)
    #: (row, column) spacing in mm: PixelSpacing, else ImagerPixelSpacing; None when absent
    pixel_spacing: tuple[float, float] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "PatientStudy(<withheld>)"

    __str__ = __repr__


def patient_study(ds) -> PatientStudy:
    """The patient/study module of a pydicom Dataset as a `PatientStudy` (module docstring)."""
    values = {key: str(ds.get(keyword, "") or "").strip() for key, keyword in PATIENT_STUDY_TAGS.items()}
    spacing = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        raw = ds.get(keyword)
        try:
            if raw is not None and len(raw) == 2 and all(float(v) > 0 for v in raw):
                spacing = (float(raw[0]), float(raw[1]))
                break
        except (TypeError, ValueError):
            continue
    return PatientStudy(**values, pixel_spacing=spacing)


@dataclass(frozen=True)
class DicomReference:
    """The UIDs of a DICOM source image: what a DICOM result must reference, nothing personal."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str = "CR"


def sniff_format(data: bytes) -> str | None:
    """Detect the format from magic bytes (not from the file name)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise CorruptImageError("The PNG file is truncated before its header ends.")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Read the frame size from the first SOF marker without decoding."""
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return height, width
        pos += 2 + length
    raise CorruptImageError("The JPEG file is truncated before its frame header.")


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width} x {height} pixels, more than the limit of {max_pixels:,}."
        )
    if min(height, width) < MIN_SIDE or max(height, width) / max(min(height, width), 1) > MAX_ASPECT:
        raise DegenerateImageError(
            f"The image is {width} x {height} pixels: too small or too elongated for a chest X-ray."
        )


#: Percentiles that bound the bulk of the pixel values (the X-ray itself).
BULK_PERCENTILES = (0.5, 99.5)
#: An empty gap in the histogram wider than this fraction of the bulk's width separates outliers.
OUTLIER_GAP = 0.5
#: The bulk percentiles are estimated on at most this many pixels (a strided subsample).
_PERCENTILE_SAMPLE = 1_000_000


def _outer_edge(tail: np.ndarray, start: float, gap: float) -> float:
    """Walk upward from `start` through the tail values (all above it); stop before the first
    empty gap wider than `gap`. The low edge is found by passing negated values."""
    values = np.unique(np.append(tail, np.float32(start)))
    jumps = np.nonzero(np.diff(values) > gap)[0]
    return float(values[jumps[0]] if jumps.size else values[-1])


def intensity_range(pixels: np.ndarray) -> tuple[float, float]:
    """The (low, high) raw values that `scale_intensity` maps to 0 and 1, robust to hot pixels
    and burned-in markers.

    The range runs from the lowest to the highest value still connected to the bulk of the
    histogram (0.5th..99.5th percentile): values beyond an empty gap wider than half the bulk's
    width (a single 65535 pixel in 12-bit data) are clipped to 0 or 1 instead of setting the
    range. An ordinary 8-bit X-ray has no such gap, so it is scaled exactly min-max as before.
    A constant image is refused (it holds no X-ray).
    """
    floating = np.issubdtype(pixels.dtype, np.floating)
    pixels = pixels.astype(np.float32)
    if floating and not np.isfinite(pixels).all():
        raise DegenerateImageError("The image holds invalid (infinite or NaN) pixel values.")
    step = max(1, int(np.sqrt(pixels.size / _PERCENTILE_SAMPLE)))
    bulk_low, bulk_high = (float(v) for v in np.percentile(pixels[::step, ::step], BULK_PERCENTILES))
    width = bulk_high - bulk_low
    if width < 1e-6:  # at least 99% of the pixels share one value: no bulk to measure against
        low, high = float(pixels.min()), float(pixels.max())
    else:
        gap = OUTLIER_GAP * width
        high = _outer_edge(pixels[pixels > bulk_high], bulk_high, gap)
        low = -_outer_edge(-pixels[pixels < bulk_low], -bulk_low, gap)
    if high - low < 1e-6:
        raise DegenerateImageError("The image is blank: every pixel has the same value.")
    return low, high


def scale_intensity(pixels: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Raw pixel values -> float32 [0, 1] over `value_range` (default: `intensity_range`)."""
    low, high = value_range or intensity_range(pixels)
    return np.clip((pixels.astype(np.float32) - low) / (high - low), 0.0, 1.0)


#: Bits of `perceptual_hash` that may differ between two encodings of one X-ray: re-encoding
#: (JPEG quality 70, resized to 2/3) changed at most 6 of 255 bits on 150 cxr-public images,
#: while any two different images of them differed in at least 56.
PERCEPTUAL_MATCH_BITS = 24


def perceptual_hash(pixels: np.ndarray) -> np.ndarray:
    """255-bit DCT hash of an image's pixels: the same for re-encoded, resized or re-scaled
    copies of an image (compare with `same_pixels`), unlike the sha256 of the file."""
    small = cv2.resize(np.asarray(pixels, np.float32), (64, 64), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:16, :16].ravel()[1:]  # lowest frequencies, without the mean
    return low > np.median(low)


def same_pixels(hash_a: np.ndarray, hash_b: np.ndarray) -> bool:
    """Whether two `perceptual_hash` values belong to the same X-ray."""
    return int(np.count_nonzero(hash_a != hash_b)) <= PERCEPTUAL_MATCH_BITS


def _to_gray(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    raise UnsupportedFormatError(f"Images with shape {pixels.shape} are not supported.")


#: brightness bins in which `colour_spread` measures the colour's variation
SPREAD_BINS = 32


def colour_spread(pixels: np.ndarray) -> float:
    """The colour's spread at a given brightness, in CIELAB a*/b* units (0-255 scale): the mean,
    over brightness bins, of the standard deviation of a* and b*. A grayscale image gives 0; an
    X-ray tinted by a colour map (its colour a function of brightness) stays near 0 whatever the
    tint; a colour photograph, whose colours vary at every brightness, gives tens."""
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        return 0.0
    bgr = pixels[:, :, :3]
    if bgr.dtype != np.uint8:
        bgr = (bgr.astype(np.float32) / 257.0).astype(np.uint8)
    step = max(1, int(np.sqrt(bgr.shape[0] * bgr.shape[1] / 250_000)))  # about 500 x 500 samples
    lab = cv2.cvtColor(np.ascontiguousarray(bgr[::step, ::step]), cv2.COLOR_BGR2LAB).reshape(-1, 3)
    lab = lab.astype(np.float32)
    bins = np.minimum((lab[:, 0] * SPREAD_BINS / 256).astype(int), SPREAD_BINS - 1)
    spreads, weights = [], []
    for b in np.unique(bins):
        chroma = lab[bins == b, 1:]
        if len(chroma) >= 20:
            spreads.append(float(np.sqrt(chroma.var(axis=0).sum())))
            weights.append(len(chroma))
    return float(np.average(spreads, weights=weights)) if spreads else 0.0


def _decode_raster(data: bytes, fmt: str, max_pixels: int) -> tuple[np.ndarray, int, float]:
    height, width = _png_size(data) if fmt == "png" else _jpeg_size(data)
    _check_size(height, width, max_pixels)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise CorruptImageError(f"The {fmt.upper()} file is truncated or damaged.")
    if fmt == "png" and not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        raise CorruptImageError("The PNG file is truncated: its end marker is missing.")
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    return _to_gray(pixels), bit_depth, colour_spread(pixels)


def dicom_reference(ds) -> DicomReference | None:
    """The source's UIDs, or None when the file lacks a study, series or instance UID."""
    uids = [str(ds.get(name, "") or "") for name in
            ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")]
    if not all(uids[:3]):
        return None
    sop_class = uids[3] or "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    return DicomReference(*uids[:3], sop_class, str(ds.get("Modality", "") or "CR"))


def _voi_window_edges(ds) -> tuple[float, float] | None:
    """The VOI window's edges after the VOI LUT (the same transform the pixels went through)."""
    from pydicom.multival import MultiValue
    from pydicom.pixels import apply_voi_lut

    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None or "VOILUTSequence" in ds:
        return None
    centre, width = (float(v[0]) if isinstance(v, MultiValue) else float(v) for v in (centre, width))
    if width <= 0:
        return None
    mapped = apply_voi_lut(np.array([centre - width / 2, centre + width / 2], np.float64), ds)
    return float(mapped[0]), float(mapped[1])


#: the only DICOM attributes read besides the pixel module: what was imaged, how, by what
ACQUISITION_TAGS = {"body_part": "BodyPartExamined", "view_position": "ViewPosition", "modality": "Modality"}


def _acquisition(ds) -> dict[str, str | None]:
    """BodyPartExamined / ViewPosition / Modality, upper-cased and stripped; None when empty."""
    out = {}
    for key, keyword in ACQUISITION_TAGS.items():
        value = str(ds.get(keyword, "") or "").strip().upper()
        out[key] = value or None
    return out


def _decode_dicom(data: bytes, max_pixels: int) -> tuple[np.ndarray, int, str, dict]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, struct.error) as exc:
        raise CorruptImageError("The DICOM file is truncated or damaged.") from exc
    if "PixelData" not in ds:
        raise DicomError("The DICOM file has no pixel data (it may be a report or structured document).")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_size(rows, cols, max_pixels)
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise DicomError(
            f"The DICOM image is compressed ({name}) and no decoder for it is installed; "
            "install pylibjpeg with its plugins or export it uncompressed."
        ) from exc
    except (ValueError, AttributeError, TypeError) as exc:
        raise CorruptImageError(f"The DICOM pixel data could not be decoded: {exc}") from exc
    if pixels.ndim == 3 and int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    edges = None
    if photometric.startswith("MONOCHROME"):
        pixels = apply_modality_lut(pixels, ds)
        edges = _voi_window_edges(ds)
        pixels = apply_voi_lut(pixels, ds)
    else:
        pixels = _to_gray(np.asarray(pixels)[..., ::-1] if pixels.ndim == 3 else pixels)
    bit_depth = int(ds.get("BitsStored", 8) or 8)
    return np.asarray(pixels), bit_depth, photometric, {"edges": edges, "ref": dicom_reference(ds),
                                                        "acquisition": _acquisition(ds),
                                                        "patient_study": patient_study(ds)}


def load_image(
    source: bytes | str | Path,
    filename: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Decode a file path or raw bytes into a grayscale float32 image in [0, 1].

    The format is taken from the content; a file name whose extension is not an image
    extension is refused. MONOCHROME1 DICOM is inverted so that bone is bright.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        filename = filename or path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise EmptyImageError(f"The file {path} does not exist.") from exc
        except OSError as exc:
            raise EmptyImageError(f"The file {path} could not be read: {exc.strerror}.") from exc
    else:
        data = bytes(source)
    if filename is not None:
        ext = Path(filename).suffix.lower()
        if ext not in SUPPORTED_EXTENSIONS:
            raise UnsupportedFormatError(
                f"'{ext}' files are not supported; upload a PNG, JPEG or DICOM (.dcm) image."
            )
    if not data:
        raise EmptyImageError("The file is empty.")
    fmt = sniff_format(data)
    if fmt is None and filename and Path(filename).suffix.lower() in (".dcm", ".dicom", ""):
        fmt = "dicom" if looks_like_raw_dicom(data) else None
    if fmt is None:
        raise UnsupportedFormatError("The file is not a PNG, JPEG or DICOM image.")
    if filename and SUPPORTED_EXTENSIONS.get(Path(filename).suffix.lower()) not in (None, fmt):
        log.warning("file extension does not match its content (%s); using the content", fmt)
    photometric, facts = "MONOCHROME2", {"edges": None, "ref": None, "acquisition": {},
                                         "patient_study": None}
    spread = 0.0
    if fmt == "dicom":
        raw, bit_depth, photometric, facts = _decode_dicom(data, max_pixels)
    else:
        raw, bit_depth, spread = _decode_raster(data, fmt, max_pixels)
    value_range = intensity_range(raw)
    pixels = scale_intensity(raw, value_range)
    window = _unit_window(facts["edges"], value_range)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
        window = None if window is None else (1.0 - window[0], window[1])
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        original_size=(int(raw.shape[0]), int(raw.shape[1])),
        source_format=fmt,
        bit_depth=bit_depth,
        photometric=photometric,
        sha256=hashlib.sha256(data).hexdigest(),
        window=window,
        dicom_ref=facts["ref"],
        **facts["acquisition"],
        patient_study=facts["patient_study"],
        colour_spread=spread,
    )


def _unit_window(edges: tuple[float, float] | None,
                 value_range: tuple[float, float]) -> tuple[float, float] | None:
    """VOI window edges (in the decoded values) -> (centre, width) in the [0, 1] pixel units."""
    if edges is None:
        return None
    low, high = value_range
    a, b = sorted(((edges[0] - low) / (high - low), (edges[1] - low) / (high - low)))
    if b - a <= 1e-6:
        return None
    return (a + b) / 2, b - a


def looks_like_raw_dicom(data: bytes) -> bool:
    """DICOM without the 128-byte preamble starts with a group 0x0008 or 0x0002 tag."""
    return len(data) > 8 and data[:2] in (b"\x08\x00", b"\x02\x00")
