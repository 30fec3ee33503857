"""The exception types: one family under CxrError, each documented in one sentence, each
carrying the one sentence it was raised with."""

from __future__ import annotations

import inspect
import re

import pytest

from cxr_core.base import errors
from cxr_core.base.errors import (
    BundleError,
    CorruptImageError,
    CxrError,
    DataError,
    DegenerateImageError,
    DicomError,
    EmptyImageError,
    EngineError,
    FeedbackError,
    FeedbackStoreError,
    ImageError,
    ImageTooLargeError,
    UnsupportedFormatError,
    WeightsUnavailableError,
)

ERROR_TYPES = sorted((cls for _, cls in inspect.getmembers(errors, inspect.isclass)
                      if issubclass(cls, Exception) and cls.__module__ == errors.__name__),
                     key=lambda cls: cls.__name__)
SENTENCE_END = re.compile(r"[.!?](\s|$)")


def test_every_error_type_of_the_module_is_a_cxr_error():
    assert CxrError in ERROR_TYPES and len(ERROR_TYPES) >= 14
    for cls in ERROR_TYPES:
        assert issubclass(cls, CxrError), cls.__name__
    assert CxrError.__bases__ == (Exception,)


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda cls: cls.__name__)
def test_each_error_type_is_documented_in_one_sentence(cls):
    doc = inspect.getdoc(cls)
    assert doc and "\n" not in doc, f"{cls.__name__} needs a one-line docstring"
    assert doc.endswith(".") and len(SENTENCE_END.findall(doc)) == 1, doc


@pytest.mark.parametrize("cls", ERROR_TYPES, ids=lambda cls: cls.__name__)
def test_each_error_carries_its_sentence_and_is_caught_as_cxr_error(cls):
    sentence = f"The {cls.__name__} test input cannot be used; try another one."
    with pytest.raises(CxrError) as caught:
        raise cls(sentence)
    assert type(caught.value) is cls
    assert str(caught.value) == sentence and caught.value.args == (sentence,)


def test_the_families_group_what_callers_catch_together():
    image_errors = (EmptyImageError, UnsupportedFormatError, CorruptImageError,
                    ImageTooLargeError, DegenerateImageError, DicomError)
    for cls in image_errors:
        assert issubclass(cls, ImageError)
        assert not issubclass(cls, (DataError, BundleError, FeedbackError))
    assert issubclass(FeedbackStoreError, FeedbackError)
    for cls in (DataError, ImageError, BundleError, WeightsUnavailableError, FeedbackError,
                EngineError):
        assert cls.__bases__ == (CxrError,), cls.__name__
    # a caller that handles images does not swallow bundle or data problems
    with pytest.raises(BundleError):
        try:
            raise BundleError("The bundle is broken.")
        except ImageError:  # pragma: no cover - must not match
            pytest.fail("a BundleError was caught as an ImageError")


def test_cxr_errors_are_not_builtin_value_or_os_errors():
    """Callers distinguish the user-facing sentence from programming errors by type alone."""
    for cls in ERROR_TYPES:
        assert not issubclass(cls, (ValueError, OSError, KeyError, RuntimeError)), cls.__name__
