"""PNG/PDF report of one review: header facts, panel order, no identifiers."""

from pathlib import Path

import pytest

from cxr_core.base.config import settings

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "assets" / "samples").glob("*.png"))


@pytest.fixture(scope="module")
def review():
    from cxr_core.review.pipeline import Reviewer

    reviewer = Reviewer.from_paths(settings().default_bundle_path, engine="tensorflow")
    return reviewer.review_one(SAMPLES[1], filename="Doe_John_1957.png")


def test_report_png_and_pdf_are_written(review, tmp_path):
    from cxr_core.explain.report import report_pdf, report_png, write_report

    png = report_png(review, include_all=True, uncertainty=True)
    pdf = report_pdf(review)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and pdf[:5] == b"%PDF-"
    paths = write_report(review, tmp_path, "case")
    assert [p.name for p in paths] == ["case_report.png", "case_report.pdf"]


def test_report_header_panels_and_no_file_name(review):
    import matplotlib.pyplot as plt

    from cxr_core.explain.report import _figure

    fig = _figure(review, include_all=True, uncertainty=True)
    texts = [fig._suptitle.get_text()] + [ax.get_title() for ax in fig.axes if ax.get_title()]
    plt.close(fig)
    header = texts[0]
    assert review.bundle_id in header and review.label_set in header
    assert review.threshold_method in header and "UTC" in header
    panels = texts[1:]
    assert panels[0] in ("lungs and crop box", "segmentation FELL BACK to whole image")
    labels = len(review.labels)
    assert len(panels) == 1 + 2 * labels  # overview, one map and one uncertainty map per label
    # positives first, by probability
    first = [t.replace("\n", " ") for t in panels[1:1 + labels]]
    expected = [review.title(k) for k in review.order(include_all=True)]
    assert first == expected
    assert all("Doe" not in t for t in texts)  # the uploaded file name never appears


def test_report_of_a_refused_image_says_so_in_its_header(review):
    import dataclasses

    import matplotlib.pyplot as plt

    from cxr_core.explain.report import _figure, refusal_line
    from cxr_core.review.input_check import InputCheck

    assert refusal_line(review) == ""  # the sample passes
    refused = dataclasses.replace(review, input_check=InputCheck(
        False, "The DICOM header says the body part is HAND, not the chest.", None, None, ("dicom", "lungs")))
    fig = _figure(refused)
    header = fig._suptitle.get_text()
    plt.close(fig)
    assert header.startswith("INPUT CHECK REFUSED THIS IMAGE: The DICOM header says the body part is HAND")
    assert "shown anyway" in header and refused.bundle_id in header
