"""Expert feedback store (SQLAlchemy): SQLite (WAL) by default, PostgreSQL via a URL.

Append-only: a revision by the same reviewer is a new row with the next version number; nothing
is updated or deleted. Each row keeps the model's output (original) and the expert's labels
(final), the reviewer, the bundle id, the image sha256 and timestamps; never patient identifiers
or the uploaded file name. The schema carries a version; older databases are migrated in place.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)

from ..base.errors import FeedbackError, FeedbackStoreError
from ..imaging.deidentify import deidentified_bytes

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
#: findings an expert may add that the model does not list: at most this many, each this long
MAX_OTHER_FINDINGS = 20
MAX_FINDING_CHARS = 200
DECISIONS = ("agree", "disagree")
MAX_REVIEWER_CHARS = 200
MAX_COMMENT_CHARS = 2000
CONNECT_TIMEOUT_S = 5
_MIGRATION_LOCK = 7_412_019  # PostgreSQL advisory-lock key: one process migrates at a time

metadata = MetaData()
schema_info = Table("schema_info", metadata, Column("version", Integer, primary_key=True))
reviews = Table(
    "reviews", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("review_uid", String(36), nullable=False, unique=True),
    Column("image_sha256", String(64), nullable=False, index=True),
    Column("bundle_id", String(200), nullable=False),
    Column("label_set", String(100), nullable=False),
    Column("reviewer", String(MAX_REVIEWER_CHARS), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("model_output", JSON, nullable=False),  # labels, probabilities, thresholds, agreement
    Column("model_labels", JSON, nullable=False),  # labels the model called positive
    Column("decisions", JSON, nullable=False),  # {label: agree|disagree} for shown findings
    Column("added_labels", JSON, nullable=False),  # findings the model missed
    Column("expert_labels", JSON, nullable=False),  # the expert's final positive labels
    Column("comment", Text, nullable=False, default=""),
    Column("image_stored", Boolean, nullable=False, default=False),
    # schema version 3: findings the expert added that the model does not list, each
    # {"finding": text, "source": "padchest" (a term of the PadChest tree) or "free text"};
    # NULL in rows written before it
    Column("other_findings", JSON, nullable=True),
    UniqueConstraint("image_sha256", "bundle_id", "reviewer", "version", name="uq_review_version"),
)
# schema version 2: indexes for the Feedback page's filters and time ordering
V2_INDEXES = (Index("ix_reviews_reviewer", reviews.c.reviewer),
              Index("ix_reviews_bundle_id", reviews.c.bundle_id),
              Index("ix_reviews_created_at", reviews.c.created_at))


def _migrate_1_to_2(conn: Connection) -> None:
    for index in V2_INDEXES:
        index.create(conn, checkfirst=True)


def _migrate_2_to_3(conn: Connection) -> None:
    """Add the other_findings column (SQLite and PostgreSQL both take ADD COLUMN ... JSON)."""
    if "other_findings" not in {c["name"] for c in inspect(conn).get_columns("reviews")}:
        conn.execute(text("ALTER TABLE reviews ADD COLUMN other_findings JSON"))


#: version reached -> step from the version before it (each step is idempotent)
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _migrate_1_to_2, 3: _migrate_2_to_3}


def _clean_text(value: str) -> str:
    """Text as stored: NUL characters removed (PostgreSQL refuses them), everything else kept."""
    return (value or "").replace("\x00", "")


@dataclass
class Submission:
    """What the feedback form sends."""

    image_sha256: str
    bundle_id: str
    label_set: str
    reviewer: str
    labels: list[str]  # all labels of the bundle, in order
    probabilities: list[float]
    thresholds: list[float]
    model_positive: list[bool]
    agreement: list[int]
    decisions: dict[str, str]  # label -> agree/disagree (for the model's shown findings)
    added_labels: list[str] = field(default_factory=list)
    comment: str = ""
    input_check: dict | None = None  # the review's input-check verdict and score (`InputCheck.record`)
    #: findings the model does not list, added by the expert: {"finding", "source"} each
    other_findings: list[dict] = field(default_factory=list)

    @classmethod
    def from_review(cls, review, reviewer: str, decisions: dict[str, str], comment: str = "",
                    input_check: dict | None = None,
                    other_findings: list[dict] | None = None) -> "Submission":
        """The submission for one review (`pipeline.Review`): the model's side (probabilities,
        thresholds, calls, agreement) from the review, the expert's side as given."""
        return cls(image_sha256=review.image.sha256, bundle_id=review.bundle_id,
                   label_set=review.label_set, reviewer=reviewer or "", labels=list(review.labels),
                   probabilities=[float(p) for p in review.probs],
                   thresholds=[float(t) for t in review.thresholds],
                   model_positive=[bool(f) for f in review.findings],
                   agreement=[int(a) for a in review.agreement], decisions=dict(decisions),
                   comment=comment, input_check=input_check,
                   other_findings=list(other_findings or []))

    def cleaned_other_findings(self) -> list[dict]:
        """The added findings as stored: text trimmed, duplicates (any case) dropped."""
        seen, out = set(), []
        for item in self.other_findings:
            finding = " ".join(_clean_text(str(item.get("finding", ""))).split())
            if finding and finding.lower() not in seen:
                seen.add(finding.lower())
                source = "padchest" if item.get("source") == "padchest" else "free text"
                out.append({"finding": finding, "source": source})
        return out

    def expert_labels(self) -> list[str]:
        """Final labels: model positives the expert agreed with, model negatives the expert
        disagreed with (i.e. called present), plus added labels; in bundle order."""
        final = set(self.added_labels)
        for label, positive in zip(self.labels, self.model_positive):
            decision = self.decisions.get(label)
            if (positive and decision != "disagree") or (not positive and decision == "disagree"):
                final.add(label)
        return [lab for lab in self.labels if lab in final]

    def validate(self) -> None:
        """Refuse what the database would store wrongly or refuse itself, with one sentence."""
        reviewer = _clean_text(self.reviewer).strip()
        if not reviewer:
            raise FeedbackError("Please enter the reviewer's name before submitting.")
        if len(reviewer) > MAX_REVIEWER_CHARS:
            raise FeedbackError(f"The reviewer's name is longer than {MAX_REVIEWER_CHARS} characters.")
        if len(_clean_text(self.comment)) > MAX_COMMENT_CHARS:
            raise FeedbackError(f"The comment is longer than {MAX_COMMENT_CHARS} characters.")
        if len(self.image_sha256) != 64:
            raise FeedbackError("The review has no valid image hash.")
        unknown = [lab for lab in [*self.decisions, *self.added_labels] if lab not in self.labels]
        if unknown:
            raise FeedbackError(f"Unknown finding(s) for this model: {', '.join(unknown)}.")
        bad = [d for d in self.decisions.values() if d not in DECISIONS]
        if bad:
            raise FeedbackError(f"A decision must be 'agree' or 'disagree', not {bad[0]!r}.")
        others = self.cleaned_other_findings()
        if len(others) > MAX_OTHER_FINDINGS:
            raise FeedbackError(f"At most {MAX_OTHER_FINDINGS} other findings can be added.")
        if any(len(o["finding"]) > MAX_FINDING_CHARS for o in others):
            raise FeedbackError(f"An added finding is longer than {MAX_FINDING_CHARS} characters.")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except Exception:  # a read-only database keeps its journal mode; writes fail later, clearly
        log.warning("the SQLite feedback database is read-only")
    cursor.close()


def database_url(url: str) -> str:
    """The SQLAlchemy URL to use: a bare `postgresql://` URL gets the pinned psycopg 3 driver."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _transient(exc: SQLAlchemyError) -> bool:
    """A write that lost a race (version taken, database busy, a table or index another process
    created a moment ago: SQLite runs DDL outside the transaction) and is worth retrying."""
    if isinstance(exc, IntegrityError):
        return True
    message = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, OperationalError) and any(
        word in message for word in ("locked", "busy", "deadlock", "could not serialize",
                                      "already exists"))


def _reason(exc: BaseException) -> str:
    """The driver's first line, without SQL or parameters (they could carry a comment)."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]


class FeedbackStore:
    """Append-only review store; safe for many threads and processes writing at once."""

    def __init__(self, url: str, image_dir: Path | None = None):
        self.url = database_url(url)
        self.image_dir = image_dir
        try:
            parsed = make_url(self.url)
            if parsed.get_backend_name() == "sqlite" and parsed.database and \
                    not parsed.database.startswith("file:") and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args = ({"connect_timeout": CONNECT_TIMEOUT_S}
                            if parsed.get_backend_name() == "postgresql" else {})
            self.engine: Engine = create_engine(self.url, pool_pre_ping=True,
                                                connect_args=connect_args)
        except (ArgumentError, ImportError, ValueError) as exc:  # bad URL or missing driver
            raise FeedbackError(f"The feedback database URL could not be used: {exc}") from exc
        except OSError as exc:
            raise FeedbackStoreError(
                f"The folder of the feedback database could not be created: {exc.strerror}.") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    def _migrate(self) -> None:
        """Create the tables, or bring an older schema up to SCHEMA_VERSION, exactly once."""
        for attempt in range(40):
            try:
                with self.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                     {"key": _MIGRATION_LOCK})
                    self._migrate_in(conn)
                return
            except FeedbackError:
                raise
            except SQLAlchemyError as exc:
                if attempt == 39 or not _transient(exc):
                    raise FeedbackStoreError(
                        f"The feedback database could not be opened ({_reason(exc)}).") from exc
                time.sleep(random.uniform(0.01, 0.1))

    def _migrate_in(self, conn: Connection) -> None:
        fresh = not conn.dialect.has_table(conn, "reviews")
        metadata.create_all(conn, checkfirst=True)
        current = conn.execute(select(func.max(schema_info.c.version))).scalar()
        if current is None:
            current = SCHEMA_VERSION if fresh else 1
            conn.execute(insert(schema_info).values(version=current))
        if current > SCHEMA_VERSION:
            raise FeedbackError(f"The feedback database has schema version {current}; "
                                f"this CXR Review reads up to {SCHEMA_VERSION}.")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](conn)
            conn.execute(insert(schema_info).values(version=version))
            log.info("feedback database migrated to schema version %d", version)

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(schema_info.c.version))).scalar())

    def submit(self, submission: Submission, image_bytes: bytes | None = None,
               review_uid: str | None = None) -> dict:
        """Store one review as a new row and return it (with its version).

        Retries lost races; any other database failure raises FeedbackStoreError and leaves
        nothing behind (no row, no image file). A repeated `review_uid` returns the row already
        stored under it instead of adding another (a resubmitted form is stored once).
        """
        submission.validate()
        if image_bytes is not None and self.image_dir is not None:
            image_bytes = deidentified_bytes(image_bytes)  # a DICOM header never reaches the disk
        review_uid = review_uid or str(uuid.uuid4())
        expert = submission.expert_labels()
        row = {
            "review_uid": review_uid,
            "image_sha256": submission.image_sha256,
            "bundle_id": submission.bundle_id,
            "label_set": submission.label_set,
            "reviewer": _clean_text(submission.reviewer).strip(),
            "model_output": {"labels": submission.labels,
                             "probabilities": [round(float(p), 6) for p in submission.probabilities],
                             "thresholds": [round(float(t), 6) for t in submission.thresholds],
                             "agreement": [int(a) for a in submission.agreement],
                             **({"input_check": submission.input_check}
                                if submission.input_check is not None else {})},
            "model_labels": [lab for lab, pos in zip(submission.labels, submission.model_positive) if pos],
            "decisions": dict(submission.decisions),
            "added_labels": list(submission.added_labels),
            "expert_labels": expert,
            "comment": _clean_text(submission.comment),
            "image_stored": image_bytes is not None and self.image_dir is not None,
            "other_findings": submission.cleaned_other_findings(),
        }
        for attempt in range(200):
            placed: Path | None = None
            try:
                with self.engine.begin() as conn:
                    existing = conn.execute(select(reviews).where(
                        reviews.c.review_uid == review_uid)).mappings().first()
                    if existing is not None:
                        return dict(existing)
                    version = conn.execute(
                        select(func.coalesce(func.max(reviews.c.version), 0)).where(
                            reviews.c.image_sha256 == row["image_sha256"],
                            reviews.c.bundle_id == row["bundle_id"],
                            reviews.c.reviewer == row["reviewer"])).scalar() + 1
                    values = dict(row, version=version, created_at=datetime.now(timezone.utc))
                    conn.execute(insert(reviews).values(**values))
                    if row["image_stored"]:
                        placed = self._place_image(submission.image_sha256, image_bytes)
                return values
            except SQLAlchemyError as exc:
                if placed is not None:
                    placed.unlink(missing_ok=True)  # the row was not committed: no orphan image
                if attempt == 199 or not _transient(exc):
                    log.warning("feedback not saved: %s", _reason(exc))
                    raise FeedbackStoreError(
                        f"Saving the feedback failed ({_reason(exc)}).") from exc
                time.sleep(random.uniform(0.005, 0.05))
            except OSError as exc:
                raise FeedbackStoreError(
                    f"Saving the feedback failed (the image could not be stored: {exc.strerror}).") from exc
        raise FeedbackStoreError("Saving the feedback failed.")  # pragma: no cover

    def _place_image(self, sha256: str, data: bytes) -> Path | None:
        """Write the image under its hash (atomic rename); returns the path when newly created."""
        assert self.image_dir is not None
        self.image_dir.mkdir(parents=True, exist_ok=True)
        target = self.image_dir / f"{sha256}.img"
        if target.exists():
            return None
        tmp = target.with_suffix(f".{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def image_path(self, sha256: str) -> Path | None:
        """The stored image of a review, when images are kept and this one was."""
        if self.image_dir is None:
            return None
        path = self.image_dir / f"{sha256}.img"
        return path if path.is_file() else None

    def reviews_frame(self) -> pd.DataFrame:
        """All rows, oldest first."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(reviews).order_by(reviews.c.id)).mappings().all()
        except SQLAlchemyError as exc:
            raise FeedbackStoreError(
                f"The feedback database could not be read ({_reason(exc)}).") from exc
        frame = pd.DataFrame([dict(r) for r in rows])
        if frame.empty:
            frame = pd.DataFrame(columns=[c.name for c in reviews.columns])
        return frame

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(reviews)).scalar())

    def close(self) -> None:
        """Close every pooled connection (tests, and processes that open many stores)."""
        self.engine.dispose()

    def export_for_retraining(self) -> pd.DataFrame:
        """One row per image and reviewer version: sha256, bundle, model labels, expert labels, time."""
        frame = self.reviews_frame()
        if frame.empty:
            return pd.DataFrame(columns=["image_sha256", "bundle_id", "label_set", "reviewer",
                                         "version", "model_labels", "expert_labels", "created_at"])
        out = frame[["image_sha256", "bundle_id", "label_set", "reviewer", "version",
                     "model_labels", "expert_labels", "created_at"]].copy()
        for col in ("model_labels", "expert_labels"):
            out[col] = out[col].map(lambda v: "|".join(v if isinstance(v, list) else json.loads(v)))
        return out


@dataclass(frozen=True)
class SaveResult:
    """What the feedback form shows after a submit: saved or not, and one sentence."""

    saved: bool
    message: str
    row: dict | None = None
    unchanged: bool = False  # the same answers were already stored: nothing new written


def latest_version(store: FeedbackStore, submission: Submission) -> dict | None:
    """The reviewer's latest stored review of this image with this bundle, if any."""
    frame = store.reviews_frame()
    if frame.empty:
        return None
    mine = frame[(frame["image_sha256"] == submission.image_sha256)
                 & (frame["bundle_id"] == submission.bundle_id)
                 & (frame["reviewer"] == submission.reviewer.strip())]
    return None if mine.empty else mine.sort_values("version").iloc[-1].to_dict()


def same_answers(row: dict, submission: Submission) -> bool:
    """Whether a stored review holds the same decisions, added findings and comment."""
    stored_others = row.get("other_findings")
    stored_others = [] if stored_others is None or (isinstance(stored_others, float)) else stored_others
    return (dict(row["decisions"]) == dict(submission.decisions)
            and list(row["added_labels"]) == list(submission.added_labels)
            and list(stored_others) == submission.cleaned_other_findings()
            and (row["comment"] or "") == (submission.comment or ""))


def save_feedback(open_store: Callable[[], FeedbackStore], submission: Submission,
                  image_bytes: bytes | None = None, review_uid: str | None = None,
                  skip_unchanged: bool = True) -> SaveResult:
    """Open the store and submit; every failure becomes a message, never an exception, so the
    review stays on screen and the form keeps what was typed. A resubmission with the same
    answers as the reviewer's latest version stores nothing (`skip_unchanged`)."""
    try:
        store = open_store()
        try:
            previous = latest_version(store, submission) if skip_unchanged else None
        except FeedbackStoreError:  # reading failed: the submit below says what went wrong
            previous = None
        if previous is not None and same_answers(previous, submission):
            return SaveResult(True, f"Nothing changed since version {previous['version']}: "
                                    "not saved again.", previous, unchanged=True)
        row = store.submit(submission, image_bytes=image_bytes, review_uid=review_uid)
    except FeedbackStoreError as exc:
        return SaveResult(False, f"{exc} Nothing was saved; your answers are kept, submit again "
                                 "when the database is back.")
    except FeedbackError as exc:
        return SaveResult(False, str(exc))
    labels = ", ".join(row["expert_labels"]) or "none"
    return SaveResult(True, f"Feedback saved (version {row['version']} for this reviewer and "
                            f"image). Final labels: {labels}.", row)


def latest_reviews(frame: pd.DataFrame) -> pd.DataFrame:
    """Each reviewer's latest review of each image, across bundles: a reviewer who reviewed an
    image under a parent bundle and again under its retrained child counts once, with the
    revision. Latest = newest `created_at`, then highest row id (frame order when absent)."""
    if frame.empty:
        return frame
    keys = [c for c in ("created_at", "id") if c in frame.columns]
    ordered = frame.reset_index(drop=True)
    ordered = ordered.sort_values(keys, kind="stable") if keys else ordered
    latest = ordered.groupby(["image_sha256", "reviewer"], sort=False).tail(1)
    return latest.sort_index().reset_index(drop=True)


def agreement_stats(frame: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per label: share of latest reviews where the expert agrees with the model, and, over
    images with several reviewers, the share of reviewer pairs that agree with each other."""
    latest = latest_reviews(frame)
    rows = []
    for label in labels:
        if latest.empty:
            rows.append({"label": label, "reviews": 0, "model_expert_agreement": float("nan"),
                         "reviewer_pairs": 0, "inter_expert_agreement": float("nan")})
            continue
        model = latest["model_labels"].map(lambda v: label in v)
        expert = latest["expert_labels"].map(lambda v: label in v)
        pairs = agree = 0
        for _, group in latest.groupby("image_sha256"):
            calls = group["expert_labels"].map(lambda v: label in v).tolist()
            for i in range(len(calls)):
                for j in range(i + 1, len(calls)):
                    pairs += 1
                    agree += int(calls[i] == calls[j])
        rows.append({"label": label, "reviews": int(len(latest)),
                     "model_expert_agreement": float((model == expert).mean()),
                     "reviewer_pairs": pairs,
                     "inter_expert_agreement": agree / pairs if pairs else float("nan")})
    return pd.DataFrame(rows)
