"""Exception types of cxr_core: each carries one sentence a user can act on."""

from __future__ import annotations


class CxrError(Exception):
    """Base class: the message is meant to be shown to a person as is."""


class DataError(CxrError):
    """An input table, tree or split file is missing, unreadable or inconsistent."""


class ImageError(CxrError):
    """An image could not be read or is not a usable chest X-ray."""


class EmptyImageError(ImageError):
    """The file has no bytes or no pixels."""


class UnsupportedFormatError(ImageError):
    """The bytes are not an image format the loader reads."""


class CorruptImageError(ImageError):
    """The file looks like a known format but is truncated or damaged."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""


class DegenerateImageError(ImageError):
    """The image is too small, has an extreme aspect ratio, or is constant."""


class DicomError(ImageError):
    """The DICOM file has no pixel data or needs a decoder that is not installed."""


class BundleError(CxrError):
    """A model bundle is missing, broken, tampered with or inconsistent."""


class ThresholdSplitError(BundleError):
    """Test figures were asked for with thresholds chosen on the test split itself."""


class WeightsUnavailableError(CxrError):
    """ImageNet weights are neither cached nor downloadable."""


class FeedbackError(CxrError):
    """A feedback submission is invalid or the store cannot be reached."""


class FeedbackStoreError(FeedbackError):
    """The feedback database cannot be reached, read or written (the submission was valid)."""


class EngineError(CxrError):
    """An inference engine cannot be chosen, opened or exported."""
