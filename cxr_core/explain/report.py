"""One-X-ray report as an A4 document (PDF, or the same pages stacked in one PNG).

Header: for a DICOM input the patient and study from the file (name, ID, birth date, accession
number, study date, view: for the reader who loaded it; the report is built on request and never
stored or logged), the impression, the 'normal' contradiction warning the screen shows, the
reader, the time and "reviewed with AI assistance", the image SHA-256, the bundle, operating
point and calibration; then the disclaimer the app shows, the findings table, the lungs and crop
box, and the heatmaps the screen shows with the colour scale they are drawn with. Page 1 is
filled before page 2 (maps shrink to fit what is left of it). Never the uploaded file name.
"""

from __future__ import annotations

import io
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..imaging.laterality import MIRROR_WARNING
from .attention import OUTSIDE_LUNGS_NOTE
from .occlusion import MAP_METHOD_NAMES
from .overlay import (
    DEFAULT_ALPHA,
    DEFAULT_CUTOFF,
    OUTLINE_LEGEND,
    draw_colorbar,
    overlay,
)

#: The banner the app shows on every page for a demonstration bundle (the app uses this text).
DEMO_DISCLAIMER = ("Demonstration model trained on about 1,200 public X-rays: not for clinical "
                   "use. Findings and heatmaps illustrate the tool, not a diagnosis.")
#: Shown in every report, demonstration bundle or not.
DISCLAIMER = ("Decision support for research: the findings and heatmaps are a model's output, not "
              "a diagnosis, and must be confirmed by a qualified radiologist.")
READING_NOTE = ("How to read the maps: colour marks where the models looked for a finding; "
                "opacity rises with the value, so the hottest region is the most strongly coloured, "
                "and values below the dotted cut-off are not drawn. A map shows where a model "
                "looked, not that the finding is there.")
PAGE_SIZES = {"A4": (8.27, 11.69), "Letter": (8.5, 11.0)}  # inches
MARGIN = 0.55  # inches
PANELS_PER_ROW = 2
DISPLAY_SIDE = 900  # px: maps are blended at this size, plenty for a printed panel
PNG_DPI = 110
MIN_PANEL_H = 1.5  # inches: the smallest map row page 1 is filled with
OVERVIEW_WIDTH = 0.4  # of the usable width: the lungs and crop box, so that maps start on page 1


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows: the same choices as the screen."""

    include_all: bool = False
    uncertainty: bool = False
    members: bool = False
    alpha: float = DEFAULT_ALPHA
    cutoff: float = DEFAULT_CUTOFF
    page: str = "A4"
    reader: str = ""  # who read the study with the tool (the signed-in user, or the name typed)


def report_name(review, extension: str) -> str:
    """Neutral download name: the image hash, never the uploaded file name."""
    return f"cxr_report_{review.image.sha256[:12]}.{extension}"


def findings_rows(review) -> list[dict]:
    """The findings table, in the screen's order (positives first, then by probability). The
    group column only when some group differs from its finding (as on the screen)."""
    rows = []
    for k in review.order(include_all=True):
        rows.append({"finding": review.labels[k],
                     "group": ", ".join(review.groups.get(review.labels[k], [review.labels[k]])),
                     "probability": review.fmt(review.probs[k]),
                     "threshold": review.fmt(review.thresholds[k]),
                     "models positive": f"{review.agreement[k]}/{review.n_members}",
                     "call": review.call(k)})
    if all(row["group"] == row["finding"] for row in rows):
        for row in rows:
            del row["group"]
    return rows


def normal_contradiction(review) -> str:
    """The screen's warning when 'normal' is called with findings it excludes; '' when not."""
    others = review.normal_with_findings()
    if not others:
        return ""
    return (f"The models call 'normal' together with {', '.join(others)}, which 'normal' "
            f"excludes: read these findings as uncertain.")


def no_finding_message(review) -> str:
    """The one sentence the Review and Worklist pages (and the report's impression) give when
    no finding other than 'normal' passes its threshold; '' when one does."""
    shown = review.order()
    if any(not _is_normal(review.labels[k]) for k in shown):
        return ""
    return "No finding above threshold" + (" (the models call 'normal')" if shown else "") + "."


def impression(review) -> str:
    """One line: the positive findings, or that none passes its threshold."""
    positives = [k for k in review.order() if not _is_normal(review.labels[k])]
    if positives:
        return "Impression: positive for " + ", ".join(
            f"{review.labels[k]} ({review.fmt(review.probs[k])})" for k in positives) + "."
    message = no_finding_message(review)
    return "Impression: " + message[0].lower() + message[1:]


def _is_normal(label: str) -> bool:
    return label.strip().lower() in ("normal", "no finding", "no findings", "no_finding")


def reading_settings(review) -> str:
    """The operating point and calibration the findings were read at (what the review records)."""
    point = getattr(review, "operating_point", None) or f"{review.threshold_method} thresholds"
    if not hasattr(review, "calibration"):  # a review that does not record it
        said = "calibration: as stored in the bundle for these thresholds"
    else:
        said = "calibration: " + (review.calibration or "none (the models' own probabilities)")
    return f"Operating point: {point}, chosen on the validation split; {said}"


def _dicom_date(value: str) -> str:
    """DICOM DA (YYYYMMDD) as YYYY-MM-DD; other values as they are."""
    value = (value or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _person_name(value: str) -> str:
    """DICOM PN (family^given^middle^prefix^suffix) as 'Family, Given Middle'."""
    parts = [p.strip() for p in (value or "").split("=")[0].split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else family or given


def patient_lines(review) -> str:
    """The DICOM source's patient and study, for the reader who loaded it; '' when not DICOM."""
    study = getattr(review.image, "patient_study", None)
    if study is None:
        return ""
    dash = "–"
    return (f"Patient: {_person_name(study.patient_name) or dash}   |   "
            f"ID: {study.patient_id or dash}   |   "
            f"Born: {_dicom_date(study.patient_birth_date) or dash}\n"
            f"Accession: {study.accession_number or dash}   |   "
            f"Study date: {_dicom_date(study.study_date) or dash}   |   "
            f"View: {study.view_position or review.image.view_position or dash}")


def panels(review, options: ReportOptions) -> list[tuple[str, int, str, int | None]]:
    """(title, label index, kind, member) of every map panel, in the screen's order."""
    out = []
    for k in review.order(include_all=options.include_all):
        title = review.title(k)
        if review.attention_outside_lungs(k, DISPLAY_SIDE):  # said, never hidden by masking
            title += f" ({OUTSIDE_LUNGS_NOTE})"
        out.append((title, k, "mean", None))
        if options.uncertainty:
            out.append((f"{review.labels[k]}: uncertainty (std over models)", k, "std", None))
        if options.members:
            out += [(f"{review.labels[k]}: {arch}", k, "mean", m) for m, arch in enumerate(review.archs)]
    return out


class _Document:
    """Pages of fixed size filled top to bottom; positions in inches from the top-left."""

    def __init__(self, page: str):
        self.width, self.height = PAGE_SIZES[page]
        self.figures: list = []
        self.y = self.height  # forces a new page on first use

    def new_page(self) -> None:
        from matplotlib.figure import Figure

        self.figures.append(Figure(figsize=(self.width, self.height)))
        self.y = MARGIN
        number = len(self.figures)
        self.figures[-1].text(0.5, 0.25 / self.height, f"CXR Review report, page {number}",
                              ha="center", fontsize=7, color="0.4")

    def need(self, height: float) -> None:
        if self.y + height > self.height - MARGIN:
            self.new_page()

    def axes(self, x: float, height: float, width: float):
        """Axes at x inches from the left and the current y, `height` tall."""
        fig = self.figures[-1]
        return fig.add_axes((x / self.width, 1 - (self.y + height) / self.height,
                             width / self.width, height / self.height))

    def text(self, text: str, size: float = 8.5, height: float | None = None, **kwargs) -> None:
        lines = text.count("\n") + 1
        height = height or lines * size * 1.45 / 72
        self.need(height)
        self.figures[-1].text(MARGIN / self.width, 1 - self.y / self.height, text, fontsize=size,
                              va="top", ha="left", **kwargs)
        self.y += height


def _build(review, options: ReportOptions) -> list:
    doc = _Document(options.page)
    usable = doc.width - 2 * MARGIN
    doc.new_page()
    doc.text("CXR Review report", size=15, weight="bold")
    doc.y += 0.05
    refusal = refusal_line(review)
    if refusal:
        doc.text(textwrap.fill(refusal, 110), size=9, weight="bold", color="darkred")
    if review.likely_mirrored():
        doc.text(textwrap.fill(MIRROR_WARNING, 110), size=9, weight="bold", color="#a04000")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    segmentation = (f"FELL BACK to the whole image ({review.pre.mask.reason})" if review.pre.fallback
                    else "lungs found; the models read the lung crop")
    patient = patient_lines(review)
    if patient:
        doc.text(patient, size=9.5, weight="bold")
        doc.y += 0.05
    doc.text(textwrap.fill(impression(review), 100), size=10, weight="bold")
    contradiction = normal_contradiction(review)
    if contradiction:
        doc.text(textwrap.fill("Warning: " + contradiction, 110), size=8.5, color="#9a5b00")
    doc.text(f"Reader: {options.reader or '(not given)'}   |   {stamp}   |   reviewed with AI "
             f"assistance", size=8.5)
    doc.y += 0.05
    doc.text(f"Image SHA-256: {review.image.sha256}", size=7.5, family="monospace")
    n_models = f"{review.n_members} model" + ("s" if review.n_members != 1 else "")
    doc.text(f"Bundle: {review.bundle_id} (label set {review.label_set}, {n_models})\n"
             f"Segmentation: {segmentation}\n"
             f"{textwrap.fill(reading_settings(review), 125)}\n"
             f"{int(review.findings.sum())} positive finding(s) of {len(review.labels)}; "
             f"heatmaps: {MAP_METHOD_NAMES[review.map_method]} "
             + (f"averaged over the {n_models}." if review.n_members > 1 else "of the one model."))
    doc.y += 0.1
    notice = (DEMO_DISCLAIMER + " " if review.is_demo else "") + DISCLAIMER
    wrapped = textwrap.fill(notice, 118)
    doc.text(wrapped, size=8, color="#7a4b00",
             bbox={"boxstyle": "round,pad=0.4", "facecolor": "#fff4d6", "edgecolor": "#e0b050"})
    doc.y += 0.15
    _table(doc, review, usable)
    doc.y += 0.2
    _overview(doc, review, options, usable)
    _maps(doc, review, options, usable)
    return doc.figures


def refusal_line(review) -> str:
    """The input check's refusal, for a report made although it refused the image; '' otherwise.
    (Reports of refused images are only made on request: 'show anyway' or `explain --force`.)"""
    check = getattr(review, "input_check", None)
    if check is None or check.passed:
        return ""
    return (f"INPUT CHECK REFUSED THIS IMAGE: {check.reason} The findings below were shown anyway "
            f"at the reader's request.")


def _table(doc: _Document, review, usable: float) -> None:
    rows = findings_rows(review)
    columns = list(rows[0]) if rows else []
    row_h = 0.2
    width_of = {"finding": 0.28, "group": 0.22, "probability": 0.11, "threshold": 0.1,
                "models positive": 0.13, "call": 0.16}
    # the call column as wide as its longest text (7 pt, with the cell padding: 0.064 inch a character)
    longest = max((len(r.get("call", "")) for r in rows), default=0)
    font = 7.5
    if longest * 0.057 > width_of["call"] * usable:
        font = 7.0
        width_of.update(finding=0.18, probability=0.1, call=longest * 0.064 / usable)
    widths = np.array([width_of[c] for c in columns])
    start = 0
    while start < len(rows):
        doc.need(row_h * 3)
        fit = max(1, int((doc.height - MARGIN - doc.y) / row_h) - 1)
        chunk = rows[start:start + fit]
        ax = doc.axes(MARGIN, row_h * (len(chunk) + 1), usable)
        ax.axis("off")
        table = ax.table(cellText=[[r[c] for c in columns] for r in chunk], colLabels=columns,
                         colWidths=list(widths / widths.sum()), loc="upper left",
                         cellLoc="left", bbox=(0, 0, 1, 1))
        table.auto_set_font_size(False)
        table.set_fontsize(font)
        for (r, _), cell in table.get_celld().items():
            cell.set_edgecolor("0.8")
            if r == 0:
                cell.set_facecolor("0.92")
                cell.set_text_props(weight="bold")
            elif chunk[r - 1]["call"].startswith("positive"):
                cell.set_facecolor("#fde3e3")
        doc.y += row_h * (len(chunk) + 1)
        start += len(chunk)


def _overview(doc: _Document, review, options: ReportOptions, usable: float) -> None:
    """The lungs and crop box on the left; the colour scale and how to read the maps beside it."""
    height, width = review.display_size(DISPLAY_SIDE)
    panel_w = usable * OVERVIEW_WIDTH
    panel_h = panel_w * height / width
    doc.need(panel_h + 0.45)
    note = ("Segmentation FELL BACK to the whole image (red box)" if review.pre.fallback
            else OUTLINE_LEGEND.capitalize())
    doc.text(note, size=8, color="red" if review.pre.fallback else "black")
    ax = doc.axes(MARGIN, panel_h, panel_w)
    ax.imshow(review.outline_display(DISPLAY_SIDE))
    ax.axis("off")
    side_x, side_w = MARGIN + panel_w + 0.3, usable - panel_w - 0.3
    top = doc.y
    doc.y += 0.1
    draw_colorbar(doc.axes(side_x, 0.18, side_w), options.alpha, options.cutoff)
    doc.y += 0.75
    fig = doc.figures[-1]
    fig.text(side_x / doc.width, 1 - doc.y / doc.height, textwrap.fill(READING_NOTE, 52),
             fontsize=7.5, va="top", ha="left", color="0.2")
    doc.y = top + panel_h + 0.2


def _maps(doc: _Document, review, options: ReportOptions, usable: float) -> None:
    items = panels(review, options)
    if not items:
        doc.text("No finding passes its threshold; no heatmap is shown (as on the screen).")
        return
    height, width = review.display_size(DISPLAY_SIDE)
    gap = 0.2
    panel_w = (usable - gap * (PANELS_PER_ROW - 1)) / PANELS_PER_ROW
    panel_h = min(panel_w * height / width, 4.0)
    title_h, bar_h = 0.4, 0.75
    if any(OUTSIDE_LUNGS_NOTE in title for title, *_ in items):
        title_h = 0.58  # room for the note's extra lines
    image = review.display_pixels(DISPLAY_SIDE)
    page_with_bar = 1  # the first page shows the scale beside the overview
    for start in range(0, len(items), PANELS_PER_ROW):
        row_h = panel_h
        left = doc.height - MARGIN - doc.y - title_h - 0.05
        if len(doc.figures) == 1 and row_h > left >= MIN_PANEL_H:
            row_h = left  # fill page 1: a smaller row rather than an empty half page
        doc.need(title_h + row_h + (bar_h if page_with_bar != len(doc.figures) else 0))
        if len(doc.figures) > 1:
            row_h = panel_h
        if page_with_bar != len(doc.figures):  # the colour scale on every page with maps
            ax = doc.axes(MARGIN, 0.18, min(usable, 4.5))
            draw_colorbar(ax, options.alpha, options.cutoff)
            doc.y += bar_h
            page_with_bar = len(doc.figures)
        for i, (title, k, kind, member) in enumerate(items[start:start + PANELS_PER_ROW]):
            x = MARGIN + i * (panel_w + gap)
            row_w = panel_w * row_h / panel_h
            ax = doc.axes(x, title_h + row_h, row_w)
            heat = review.heatmap_display(k, kind, member, DISPLAY_SIDE)
            ax.imshow(overlay(image, heat, options.alpha, options.cutoff), aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_position((x / doc.width, 1 - (doc.y + title_h + row_h) / doc.height,
                             row_w / doc.width, row_h / doc.height))
            ax.set_title("\n".join(textwrap.wrap(title, 52)), fontsize=7.5, loc="left",
                         color="darkred" if review.findings[k] and kind == "mean" and member is None
                         else "black")
        doc.y += title_h + row_h + 0.15


def report_text(review, options: ReportOptions | None = None) -> str:
    """Every text the report prints, in page order (for tests and accessibility checks)."""
    figures = _build(review, options or ReportOptions())
    texts = []
    for fig in figures:
        texts += [t.get_text() for t in fig.texts]
        for ax in fig.axes:
            texts += [ax.get_title(loc="left")] + [t.get_text() for t in ax.texts]
            if ax.get_xlabel():  # the colour scale: its numbers and its caption
                texts += [t.get_text() for t in ax.get_xticklabels()] + [ax.get_xlabel()]
            for table in ax.tables:
                texts += [cell.get_text().get_text() for cell in table.get_celld().values()]
    return "\n".join(t for t in texts if t)


def report_pdf(review, options: ReportOptions | None = None, **choices) -> bytes:
    """The report as a multi-page PDF of A4 (or Letter) pages. `choices` are ReportOptions fields."""
    options = options or ReportOptions(**choices)
    from matplotlib.backends.backend_pdf import PdfPages

    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": "CXR Review report", "Author": "CXR Review"}) as pdf:
        for fig in _build(review, options):
            pdf.savefig(fig)
    return buf.getvalue()


def report_pages(review, options: ReportOptions | None = None, **choices) -> list[np.ndarray]:
    """The report's pages as RGB uint8 pictures at PNG_DPI, all of one size (one page each)."""
    options = options or ReportOptions(**choices)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    pages = []
    for fig in _build(review, options):
        canvas = FigureCanvasAgg(fig)
        fig.set_dpi(PNG_DPI)
        canvas.draw()
        pages.append(np.array(np.asarray(canvas.buffer_rgba())[..., :3]))
    return pages


def report_png(review, options: ReportOptions | None = None, pages: list[np.ndarray] | None = None,
               **choices) -> bytes:
    """The report's pages stacked into one PNG (`pages`: from `report_pages`, to draw them once).
    `choices` are ReportOptions fields."""
    import cv2

    pages = pages if pages is not None else report_pages(review, options, **choices)
    sheet = np.concatenate([np.concatenate([p, np.full((8, p.shape[1], 3), 200, np.uint8)])
                            for p in pages])[:-8]
    return cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))[1].tobytes()


def write_report(review, out_dir: Path, stem: str, options: ReportOptions | None = None,
                 pages: list[np.ndarray] | None = None, **choices) -> tuple[Path, Path]:
    """Write `<stem>_report.png` and `<stem>_report.pdf`; returns their paths. `pages`: the
    report's pages when already drawn (`report_pages` with the same options)."""
    options = options or ReportOptions(**choices)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{stem}_report.png", out_dir / f"{stem}_report.pdf"
    png.write_bytes(report_png(review, options, pages=pages))
    pdf.write_bytes(report_pdf(review, options))
    return png, pdf
