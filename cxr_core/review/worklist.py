"""A worklist: many X-rays (or zip archives of them) reviewed in batches, ordered by a triage
score so that the study with the strongest finding that matters is read first.

Triage score (`triage_score`), over every finding except 'normal':
- each finding's margin over its threshold t, scaled to [-1, 1]: (p - t) / (1 - t) above it,
  (p - t) / t below it;
- a margin above the threshold counts CRITICAL_WEIGHT times for a critical finding
  (`CRITICAL_FINDINGS`: read first when present);
- the score is the largest of these: a study with a positive finding (score > 0) ranks above
  every study without one (score <= 0, the nearest miss first). `triage_reason` says why in words.
'normal' is left out: 1 - p(normal) ranked a strong pulmonary edema below a 'No Finding' image.
Every study is read where the Review page reads it (`pipeline.displayed_review`: the chosen
reading point, calibrated when the bundle can): the list's probabilities, its no-finding
sentence and its triage scores are the ones the reader sees on either page.
Files that cannot be reviewed stay in the list as failed, with the loader's one sentence; files
the input check refuses (not a frontal chest X-ray) are listed as refused, with its sentence
instead of findings and no triage score, below the reviewed studies.
A study is "seen" when the reader moved past it ("Reviewed, next") and "reported" once feedback
was sent for it: moving on without answering is not a report.
No Streamlit here: the Worklist page drives this module from a background thread.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from ..base.errors import CxrError
from ..explain.report import no_finding_message
from ..imaging.image_io import SUPPORTED_EXTENSIONS
from ..modeling.bundle import Bundle
from .pipeline import PRECISION, Review, Reviewer, displayed_review, normal_index

log = logging.getLogger(__name__)

STATUSES = ("queued", "ready", "refused", "failed")
STATUSES_IN_ORDER = ("ready", "refused", "queued", "failed")
#: studies the page can open (a refused one shows its reason and, on request, its findings)
OPENABLE = ("ready", "refused")

ARCHIVE_EXTENSIONS = (".zip",)
MAX_FILES = 500
MAX_ARCHIVE_BYTES = 2_000_000_000  # uncompressed bytes read from one zip (zip-bomb guard)
TOP_FINDINGS = 3


#: findings that call for action the same day, read first when positive (lower-case label
#: names; PadChest and NIH spellings)
CRITICAL_FINDINGS = frozenset({
    "pneumothorax", "tension pneumothorax", "pneumoperitoneum", "pneumomediastinum",
    "pulmonary edema", "edema"})
CRITICAL_WEIGHT = 1.5


def _margins(review: Review) -> tuple[list[int], np.ndarray]:
    """The findings ranked (all but 'normal') and each one's margin over its threshold, in [-1, 1]."""
    k_normal = normal_index(review.labels)
    ks = [k for k in range(len(review.labels)) if k != k_normal]
    probs = np.asarray(review.probs, np.float64)[ks]
    thresholds = np.clip(np.asarray(review.thresholds, np.float64)[ks], 1e-6, 1 - 1e-6)
    margins = np.where(probs >= thresholds, (probs - thresholds) / (1 - thresholds),
                       (probs - thresholds) / thresholds)
    weights = np.array([CRITICAL_WEIGHT if review.labels[k].lower() in CRITICAL_FINDINGS else 1.0
                        for k in ks])
    return ks, np.where(margins > 0, margins * weights, margins)


def triage_score(review: Review) -> float:
    """How urgently a study should be read (module docstring): higher is read first."""
    _, weighted = _margins(review)
    return float(weighted.max()) if weighted.size else 0.0


def triage_reason(review: Review) -> str:
    """Why a study is where it is: the finding that set its triage score, in words."""
    ks, weighted = _margins(review)
    if not ks:
        return "no finding to rank"
    k = ks[int(np.argmax(weighted))]
    p, t = _fmt(review.probs[k]), _fmt(review.thresholds[k])
    if weighted.max() > 0:
        critical = ", critical" if review.labels[k].lower() in CRITICAL_FINDINGS else ""
        return f"{review.labels[k]} {p} above its threshold {t}{critical}"
    return f"nothing above threshold; nearest: {review.labels[k]} {p} (threshold {t})"


def _fmt(value: float) -> str:
    """A probability or threshold with the Review page's precision (`Review.fmt`)."""
    return f"{float(value):.{PRECISION}f}"


def top_findings(review: Review, n: int = TOP_FINDINGS) -> str:
    """The positive findings (highest probability first, at most n), or the pages' one
    no-finding sentence (`no_finding_message`)."""
    k_normal = normal_index(review.labels)
    shown = [k for k in review.order() if k != k_normal][:n]
    if not shown:
        return no_finding_message(review)
    return ", ".join(f"{review.labels[k]} {_fmt(review.probs[k])}" for k in shown)


def expand_uploads(files: list[tuple[str, bytes]], max_files: int = MAX_FILES
                   ) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(name, bytes) uploads -> image files (zip members as 'archive.zip/member') and failures
    (name, one sentence). Folders, hidden files and non-image members of a zip are skipped."""
    images: list[tuple[str, bytes]] = []
    failures: list[tuple[str, str]] = []
    for name, data in files:
        if PurePosixPath(name).suffix.lower() in ARCHIVE_EXTENSIONS:
            members, problem = _zip_members(name, data)
            images += members
            if problem:
                failures.append((name, problem))
        else:
            images.append((name, data))
    if len(images) > max_files:
        failures += [(name, f"Only the first {max_files} files of one upload are reviewed.")
                     for name, _ in images[max_files:]]
        images = images[:max_files]
    return images, failures


def _zip_members(name: str, data: bytes) -> tuple[list[tuple[str, bytes]], str | None]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        return [], "The zip archive is damaged or is not a zip file."
    members, total = [], 0
    with archive:
        for info in archive.infolist():
            path = PurePosixPath(info.filename)
            if info.is_dir() or any(part.startswith((".", "__MACOSX")) for part in path.parts):
                continue
            if path.suffix.lower() not in SUPPORTED_EXTENSIONS or path.name.upper() == "DICOMDIR":
                continue  # DICOM files often have no extension; a DICOMDIR holds no image
            total += info.file_size
            if total > MAX_ARCHIVE_BYTES:
                return members, "The zip archive unpacks to more than 2 GB; the rest was skipped."
            try:
                members.append((f"{name}/{info.filename}", archive.read(info)))
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError):
                members.append((f"{name}/{info.filename}", b""))  # listed as failed (empty)
    if not members:
        return [], "The zip archive holds no PNG, JPEG or DICOM files."
    return members, None


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `stem (2).ext`, `stem (3).ext`... when already listed: a study is opened by its
    name, so two different files called 'image.dcm' must not share one."""
    path, candidate, n = PurePosixPath(name), name, 1
    while candidate in taken:
        n += 1
        candidate = str(path.with_name(f"{path.stem} ({n}){path.suffix}"))
    taken.add(candidate)
    return candidate


@dataclass
class WorkItem:
    """One file of the worklist and where it stands."""

    name: str
    data: bytes = field(repr=False)
    status: str = "queued"  # queued | ready (model results in) | refused (by the input check) | failed
    error: str | None = None
    review: Review | None = field(default=None, repr=False)
    triage: float | None = None
    seen: bool = False  # a reader moved past it ("Reviewed, next"), with or without answers
    reported: bool = False  # feedback was sent for it
    sha256: str = ""  # of `data`: the page checks that the review it shows was made from it

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = hashlib.sha256(self.data).hexdigest()

    def owns(self, review: Review | None) -> bool:
        """Whether `review` was made from this item's bytes (never show another file's findings)."""
        return review is not None and review.image.sha256 == self.sha256

    @property
    def fallback(self) -> bool | None:
        return None if self.review is None else bool(self.review.pre.fallback)


class Worklist:
    """Files to review, reviewed in batches (thread-safe: a background thread fills it while
    the page reads it)."""

    def __init__(self) -> None:
        self.items: list[WorkItem] = []
        self.current: str | None = None  # the study open in the viewer
        self.uploads_seen: set[str] = set()  # upload ids already added (the page re-sends them)
        self.duplicates: list[str] = []  # names skipped because their image is already listed
        #: the reading point the reader chose (None: the bundle's default): every review is
        #: kept read where the pages display it (`displayed_review`), its triage score too
        self.point: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, files: list[tuple[str, bytes]], refused: list[tuple[str, str]] | None = None) -> int:
        """Add uploads (zips expanded); unreadable archives, and files the caller `refused`
        (name, sentence), are listed as failed. Returns the number of entries added. A file
        whose bytes are already listed, under any name (a study uploaded alone and inside a
        zip, or twice), is skipped and its name kept in `duplicates`: one row per study."""
        images, failures = expand_uploads(files)
        failures += refused or []
        with self._lock:
            known = {(len(item.data), hash(item.data)) for item in self.items if item.data}
            names = {item.name for item in self.items}
            added = []
            for name, data in images:
                content = (len(data), hash(data))
                if data and content in known:
                    self.duplicates.append(name)
                    continue
                known.add(content)
                added.append(WorkItem(_unique(name, names), data))
            added += [WorkItem(_unique(n, names), b"", status="failed", error=e) for n, e in failures]
            self.items += added
        return len(added)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            statuses = [item.status for item in self.items]
        return {s: statuses.count(s) for s in STATUSES} | {"total": len(statuses)}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_queued(self, reviewer: Reviewer, batch_size: int = 4) -> None:
        """Review every queued file, `batch_size` at a time; a file that fails is marked failed
        with its one sentence (an unexpected error: a generic sentence, logged in full)."""
        while True:
            with self._lock:
                batch = [item for item in self.items if item.status == "queued"][:batch_size]
            if not batch:
                return
            loaded = []
            for item in batch:
                try:
                    loaded.append((item, reviewer.load(item.data, filename=PurePosixPath(item.name).name)))
                except CxrError as exc:
                    self._finish(item, error=str(exc))
            if not loaded:
                continue
            try:
                reviews = reviewer.review([image for _, image in loaded])
            except CxrError as exc:
                for item, _ in loaded:
                    self._finish(item, error=str(exc))
                continue
            except Exception:  # never leave the list stuck on one bad batch
                log.exception("unexpected error while reviewing a worklist batch")
                for item, _ in loaded:
                    self._finish(item, error="Something went wrong while analysing this image.")
                continue
            for (item, _), review in zip(loaded, reviews):
                self._finish(item, review=review, bundle=reviewer.bundle)

    def read_at(self, bundle: Bundle, point: str | None = None) -> bool:
        """Read every study where the pages display them for the chosen reading `point`
        (`displayed_review`: the Review page's calibrated probabilities, thresholds and
        calls); the triage scores and the list order follow. Nothing is run again. True when
        a study changed."""
        changed = False
        with self._lock:
            self.point = point
            for item in self.items:
                if item.review is None:
                    continue
                shown = displayed_review(bundle, item.review, point)
                if shown is not item.review:
                    changed = True
                    item.review = shown
                    if item.status == "ready":
                        item.triage = triage_score(shown)
        return changed

    def _finish(self, item: WorkItem, review: Review | None = None, error: str | None = None,
                bundle: Bundle | None = None) -> None:
        with self._lock:
            if review is not None and bundle is not None:
                review = displayed_review(bundle, review, self.point)
            if review is None:
                item.status, item.error = "failed", error
            elif review.input_check is not None and not review.input_check.passed:
                item.status, item.review, item.error = "refused", review, review.input_check.reason
            else:
                item.status, item.review, item.triage = "ready", review, triage_score(review)

    def start(self, reviewer: Reviewer, batch_size: int = 4) -> bool:
        """Review the queued files in a background thread; False when one is already running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(target=self.run_queued, args=(reviewer, batch_size),
                                            name="worklist", daemon=True)
            self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def ordered(self) -> list[WorkItem]:
        """Ready studies by triage score (most abnormal first), then refused, queued, failed."""
        with self._lock:
            items = list(self.items)
        rank = {status: i for i, status in enumerate(STATUSES_IN_ORDER)}
        return sorted(items, key=lambda it: (rank[it.status], -(it.triage or 0.0)))

    def item(self, name: str) -> WorkItem | None:
        with self._lock:
            return next((item for item in self.items if item.name == name), None)

    def next_name(self, name: str | None) -> str | None:
        """The next openable study below `name` in the list order (the first one when None)."""
        names = [item.name for item in self.ordered() if item.status in OPENABLE]
        if not names:
            return None
        if name not in names:
            return names[0]
        position = names.index(name)
        return names[position + 1] if position + 1 < len(names) else None

    def mark_seen(self, name: str) -> None:
        """The reader moved past this study; it is not a report unless feedback was sent."""
        with self._lock:
            for item in self.items:
                if item.name == name:
                    item.seen = True

    def mark_reported(self, name: str) -> None:
        """Feedback was sent for this study (it is also seen)."""
        with self._lock:
            for item in self.items:
                if item.name == name:
                    item.seen = item.reported = True

    def table(self) -> pd.DataFrame:
        """One row per file, in list order: what the Worklist page shows."""
        rows = []
        for item in self.ordered():
            review = item.review
            rows.append({
                "file": item.name,
                "status": item.status,
                "top findings": (top_findings(review) if item.status == "ready"
                                 else (item.error or "")),
                "triage score": None if item.triage is None else round(item.triage, 3),
                "why": triage_reason(review) if item.status == "ready" else "",
                "segmentation fallback": item.fallback,
                "read": "reported" if item.reported else ("seen" if item.seen else "no"),
            })
        return pd.DataFrame(rows, columns=["file", "status", "top findings", "triage score", "why",
                                           "segmentation fallback", "read"])
