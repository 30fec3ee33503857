"""The report: an A4 document with the image hash, the findings table, the screen's maps with
their colour scale, the app's disclaimer, and no identifiers."""

import re
from pathlib import Path

import numpy as np
import pytest

from cxr_core.base.config import settings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def review():
    from cxr_core.review.pipeline import Reviewer

    reviewer = Reviewer.from_paths(settings().default_bundle_path, engine="tensorflow")
    return reviewer.review_one(SAMPLES[1], filename="Doe_John_1957.png")


def test_report_is_an_a4_pdf_and_a_png_of_the_same_pages(review, tmp_path):
    from cxr_core.explain.report import PNG_DPI, ReportOptions, report_pdf, report_png, write_report

    options = ReportOptions(include_all=True, uncertainty=True, members=True)
    pdf = report_pdf(review, options)
    assert pdf[:5] == b"%PDF-"
    boxes = re.findall(rb"/MediaBox \[ *0 0 ([\d.]+) ([\d.]+) *\]", pdf)
    pages = len(boxes)
    assert pages >= 2  # every map of every label does not fit on one page
    assert all(abs(float(w) - 595.4) < 1 and abs(float(h) - 841.7) < 1 for w, h in boxes)  # A4
    letter = report_pdf(review, ReportOptions(page="Letter"))
    assert re.search(rb"/MediaBox \[ *0 0 612 792 *\]", letter)
    import cv2

    png = cv2.imdecode(np.frombuffer(report_png(review, options), np.uint8), cv2.IMREAD_COLOR)
    assert abs(png.shape[1] - 8.27 * PNG_DPI) <= 1
    assert abs(png.shape[0] - pages * 11.69 * PNG_DPI) < pages * 10  # the pages, stacked
    paths = write_report(review, tmp_path, "case", include_all=True)
    assert [p.name for p in paths] == ["case_report.png", "case_report.pdf"]


def test_report_header_table_disclaimer_and_colour_scale(review):
    from cxr_core.explain.report import DEMO_DISCLAIMER, DISCLAIMER, report_name, report_text

    text = report_text(review)
    flat = " ".join(text.split())
    assert review.image.sha256 in text
    assert review.bundle_id in text and review.threshold_method in text and "UTC" in text
    assert DISCLAIMER in flat
    assert (DEMO_DISCLAIMER in flat) == review.is_demo
    for k, label in enumerate(review.labels):  # the whole findings table, screen precision
        assert label in text and review.fmt(review.probs[k]) in text
    assert "not drawn below 0.25" in text  # the colour scale and its cut-off
    # "1 model", "of the one model" (the demo bundle has one); "1/1 models positive" is a count
    assert not re.search(r"(?<![/\d])1 models", flat)
    assert f"{review.n_members} model" in flat
    assert "Doe" not in text  # the uploaded file name never appears
    assert report_name(review, "pdf") == f"cxr_report_{review.image.sha256[:12]}.pdf"


def test_report_maps_are_the_screens_findings_in_the_screens_order(review):
    from cxr_core.explain.report import ReportOptions, panels, report_text

    shown = [t for t, *_ in panels(review, ReportOptions())]
    # positives only, as on screen (a title may end with the outside-the-lungs note)
    assert [t.split(" (the model's attention")[0] for t in shown] == [review.title(k) for k in review.order()]
    text = report_text(review).replace("\n", " ")
    negatives = [review.title(k) for k in range(len(review.labels)) if not review.findings[k]]
    assert all(t not in text for t in negatives)
    every = panels(review, ReportOptions(include_all=True, uncertainty=True, members=True))
    assert len(every) == len(review.labels) * (2 + review.n_members)


def test_report_of_a_refused_image_says_so_in_its_header(review):
    import dataclasses

    from cxr_core.explain.report import refusal_line, report_text
    from cxr_core.review.input_check import InputCheck

    assert refusal_line(review) == ""  # the sample passes
    refused = dataclasses.replace(review, input_check=InputCheck(
        False, "The DICOM header says the body part is HAND, not the chest.", None, None, ("dicom", "lungs")))
    text = report_text(refused).replace("\n", " ")
    assert "INPUT CHECK REFUSED THIS IMAGE: The DICOM header says the body part is HAND" in text
    assert "shown anyway" in text and refused.bundle_id in text
    assert text.index("INPUT CHECK REFUSED") < text.index(refused.bundle_id)  # at the top


def test_a_dicom_report_names_patient_and_study_impression_reader_and_settings():
    """For a DICOM source: patient name, ID, birth date, accession, study date and view from
    the file; the impression; the 'normal' warning as on screen; the reader, time and 'reviewed
    with AI assistance'; the operating point and calibration; no column repeating the finding;
    page 1 holds maps before page 2 does."""
    from cxr_core.explain.report import (
        ReportOptions,
        _build,
        findings_rows,
        impression,
        normal_contradiction,
        report_text,
    )
    from cxr_core.review.pipeline import Reviewer
    from tests.helpers import png_as_dicom

    dicom = png_as_dicom(SAMPLES[0], Modality="DX", BodyPartExamined="CHEST", ViewPosition="AP",
                         PatientName="Doe^Jane^Q", PatientID="PID-0042", PatientBirthDate="19610304",
                         AccessionNumber="ACC778", StudyDate="20261201")
    reviewer = Reviewer.from_paths(settings().default_bundle_path, engine="tensorflow")
    review = reviewer.review_one(dicom, filename="study.dcm")
    text = report_text(review, ReportOptions(reader="Dr Reader"))
    flat = " ".join(text.split())
    assert "Patient: Doe, Jane Q | ID: PID-0042 | Born: 1961-03-04" in flat
    assert "Accession: ACC778 | Study date: 2026-12-01 | View: AP" in flat
    assert "Reader: Dr Reader" in flat and "reviewed with AI assistance" in flat
    assert f"Operating point: {review.threshold_method} thresholds" in flat and "calibration:" in flat
    assert impression(review) in flat
    positives = [review.labels[k] for k in review.order() if review.labels[k] != "normal"]
    assert impression(review) == ("Impression: positive for " + ", ".join(
        f"{lab} ({review.fmt(review.probs[review.labels.index(lab)])})" for lab in positives) + "."
        if positives else impression(review))
    warning = normal_contradiction(review)
    assert (" ".join(warning.split()) in flat) if warning else "excludes" not in flat
    # the demo's label set names each finding its own group: no column repeats the finding
    rows = findings_rows(review)
    assert all("group" not in row for row in rows) == all(
        review.groups.get(lab, [lab]) == [lab] for lab in review.labels)
    # page 1 is filled: its last map row ends within 2 inches of the page's bottom margin
    figures = _build(review, ReportOptions())
    first = figures[0]
    lowest = min(ax.get_position().y0 for ax in first.axes) * first.get_figheight()
    assert lowest < 2.0
    # a PNG source has no patient block
    png_review = reviewer.review_one(SAMPLES[0], filename="a.png")
    assert "Patient:" not in report_text(png_review)
    assert "Reader: (not given)" in " ".join(report_text(png_review).split())


def test_impression_without_positive_findings_says_so():
    from types import SimpleNamespace

    from cxr_core.explain.report import impression

    def fake(labels, positives):
        return SimpleNamespace(labels=labels, order=lambda: positives,
                               probs=np.full(len(labels), 0.9), fmt=lambda v: f"{v:.3f}")

    assert impression(fake(["a", "normal"], [])) == "Impression: no finding above threshold."
    assert impression(fake(["a", "normal"], [1])) == (
        "Impression: no finding above threshold (the models call 'normal').")
    assert impression(fake(["a", "normal"], [0, 1])) == "Impression: positive for a (0.900)."
