"""Expert feedback store (SQLAlchemy): SQLite (WAL) by default, PostgreSQL via a URL.

Append-only: a revision by the same reviewer is a new row with the next version number; nothing
is updated or deleted. Each row keeps the model's output (original) and the expert's labels
(final), the reviewer, the bundle id, the image sha256 and timestamps; never patient identifiers
or the uploaded file name.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
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
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from ..base.errors import FeedbackError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DECISIONS = ("agree", "disagree")

metadata = MetaData()
schema_info = Table("schema_info", metadata, Column("version", Integer, primary_key=True))
reviews = Table(
    "reviews", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("review_uid", String(36), nullable=False, unique=True),
    Column("image_sha256", String(64), nullable=False, index=True),
    Column("bundle_id", String(200), nullable=False),
    Column("label_set", String(100), nullable=False),
    Column("reviewer", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("model_output", JSON, nullable=False),  # labels, probabilities, thresholds, agreement
    Column("model_labels", JSON, nullable=False),  # labels the model called positive
    Column("decisions", JSON, nullable=False),  # {label: agree|disagree} for shown findings
    Column("added_labels", JSON, nullable=False),  # findings the model missed
    Column("expert_labels", JSON, nullable=False),  # the expert's final positive labels
    Column("comment", Text, nullable=False, default=""),
    Column("image_stored", Boolean, nullable=False, default=False),
    UniqueConstraint("image_sha256", "bundle_id", "reviewer", "version", name="uq_review_version"),
)


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
        if not self.reviewer or not self.reviewer.strip():
            raise FeedbackError("Please enter the reviewer's name before submitting.")
        if len(self.image_sha256) != 64:
            raise FeedbackError("The review has no valid image hash.")
        unknown = [lab for lab in [*self.decisions, *self.added_labels] if lab not in self.labels]
        if unknown:
            raise FeedbackError(f"Unknown finding(s) for this model: {', '.join(unknown)}.")
        bad = [d for d in self.decisions.values() if d not in DECISIONS]
        if bad:
            raise FeedbackError(f"A decision must be 'agree' or 'disagree', not {bad[0]!r}.")


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class FeedbackStore:
    """Append-only review store; safe for many threads and processes writing at once."""

    def __init__(self, url: str, image_dir: Path | None = None):
        self.url = url
        self.image_dir = image_dir
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        except Exception as exc:  # bad URL or missing driver
            raise FeedbackError(f"The feedback database URL could not be used: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    def _migrate(self) -> None:
        try:
            for attempt in range(20):
                try:
                    metadata.create_all(self.engine)
                    break
                except OperationalError:
                    if attempt == 19:
                        raise
                    time.sleep(random.uniform(0.01, 0.1))
            with self.engine.begin() as conn:
                current = conn.execute(select(func.max(schema_info.c.version))).scalar()
                if current is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(insert(schema_info).values(version=SCHEMA_VERSION))
                    except IntegrityError:
                        pass  # another process recorded it first
                elif current > SCHEMA_VERSION:
                    raise FeedbackError(f"The feedback database has schema version {current}; "
                                        f"this CXR Review reads up to {SCHEMA_VERSION}.")
        except OperationalError as exc:
            raise FeedbackError(f"The feedback database could not be opened: {exc.orig}") from exc

    def submit(self, submission: Submission, image_bytes: bytes | None = None) -> dict:
        """Store one review as a new row; returns it (with its version). Retries on conflicts."""
        submission.validate()
        stored = False
        if image_bytes is not None and self.image_dir is not None:
            self.image_dir.mkdir(parents=True, exist_ok=True)
            target = self.image_dir / f"{submission.image_sha256}.img"
            if not target.exists():
                tmp = target.with_suffix(f".{uuid.uuid4().hex}.tmp")
                tmp.write_bytes(image_bytes)
                tmp.replace(target)
            stored = True
        expert = submission.expert_labels()
        row = {
            "review_uid": str(uuid.uuid4()),
            "image_sha256": submission.image_sha256,
            "bundle_id": submission.bundle_id,
            "label_set": submission.label_set,
            "reviewer": submission.reviewer.strip(),
            "model_output": {"labels": submission.labels,
                             "probabilities": [round(float(p), 6) for p in submission.probabilities],
                             "thresholds": [round(float(t), 6) for t in submission.thresholds],
                             "agreement": [int(a) for a in submission.agreement]},
            "model_labels": [lab for lab, pos in zip(submission.labels, submission.model_positive) if pos],
            "decisions": dict(submission.decisions),
            "added_labels": list(submission.added_labels),
            "expert_labels": expert,
            "comment": submission.comment or "",
            "image_stored": stored,
        }
        for attempt in range(200):
            try:
                with self.engine.begin() as conn:
                    version = conn.execute(
                        select(func.coalesce(func.max(reviews.c.version), 0)).where(
                            reviews.c.image_sha256 == row["image_sha256"],
                            reviews.c.bundle_id == row["bundle_id"],
                            reviews.c.reviewer == row["reviewer"])).scalar() + 1
                    values = dict(row, version=version, created_at=datetime.now(timezone.utc))
                    conn.execute(insert(reviews).values(**values))
                return values
            except (IntegrityError, OperationalError) as exc:
                if attempt == 199:
                    raise FeedbackError(f"The review could not be saved: {exc.orig}") from exc
                time.sleep(random.uniform(0.005, 0.05))
        raise FeedbackError("The review could not be saved.")  # pragma: no cover

    def reviews_frame(self) -> pd.DataFrame:
        """All rows, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(reviews).order_by(reviews.c.id)).mappings().all()
        frame = pd.DataFrame([dict(r) for r in rows])
        if frame.empty:
            frame = pd.DataFrame(columns=[c.name for c in reviews.columns])
        return frame

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(reviews)).scalar())

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
