"""The feedback store on SQLite and on a real PostgreSQL server (the `backend` fixture)."""

import hashlib
import multiprocessing as mp
import threading
from datetime import datetime, timezone

import pytest
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
    insert,
    inspect,
    select,
)

from cxr_core.base.errors import FeedbackError, FeedbackStoreError
from cxr_core.review.feedback import (
    SCHEMA_VERSION,
    FeedbackStore,
    Submission,
    agreement_stats,
    database_url,
    latest_reviews,
    save_feedback,
    schema_info,
)

LABELS = ["COVID-19", "Viral", "Bacterial"]
SHA = hashlib.sha256(b"img").hexdigest()


def make_submission(reviewer="Dr A", sha=None, decisions=None, added=None, comment=""):
    return Submission(
        image_sha256=sha or SHA, bundle_id="b1", label_set="demo",
        reviewer=reviewer, labels=LABELS, probabilities=[0.9, 0.8, 0.1], thresholds=[0.5] * 3,
        model_positive=[True, True, False], agreement=[3, 2, 0],
        decisions=decisions if decisions is not None else {"COVID-19": "agree", "Viral": "disagree"},
        added_labels=added or [], comment=comment)


def v1_schema() -> tuple[MetaData, Table]:
    """The schema as version 1 created it (frozen here: what older databases hold)."""
    meta = MetaData()
    Table("schema_info", meta, Column("version", Integer, primary_key=True))
    table = Table(
        "reviews", meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("review_uid", String(36), nullable=False, unique=True),
        Column("image_sha256", String(64), nullable=False, index=True),
        Column("bundle_id", String(200), nullable=False),
        Column("label_set", String(100), nullable=False),
        Column("reviewer", String(200), nullable=False),
        Column("version", Integer, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("model_output", JSON, nullable=False),
        Column("model_labels", JSON, nullable=False),
        Column("decisions", JSON, nullable=False),
        Column("added_labels", JSON, nullable=False),
        Column("expert_labels", JSON, nullable=False),
        Column("comment", Text, nullable=False, default=""),
        Column("image_stored", Boolean, nullable=False, default=False),
        UniqueConstraint("image_sha256", "bundle_id", "reviewer", "version", name="uq_review_version"),
    )
    return meta, table


def make_v1_database(url: str) -> None:
    meta, table = v1_schema()
    engine = create_engine(database_url(url))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(meta.tables["schema_info"]).values(version=1))
        conn.execute(insert(table).values(
            review_uid="0" * 36, image_sha256=SHA, bundle_id="b1", label_set="demo", reviewer="Dr Old",
            version=1, created_at=datetime(2025, 1, 2, tzinfo=timezone.utc),
            model_output={"labels": LABELS}, model_labels=["COVID-19"], decisions={},
            added_labels=[], expert_labels=["COVID-19"], comment="from v1", image_stored=False))
    engine.dispose()


def index_names(url: str) -> set[str]:
    engine = create_engine(database_url(url))
    try:
        return {ix["name"] for ix in inspect(engine).get_indexes("reviews")}
    finally:
        engine.dispose()


def test_expert_labels_policy():
    sub = make_submission(decisions={"COVID-19": "agree", "Viral": "disagree"}, added=["Bacterial"])
    assert sub.expert_labels() == ["COVID-19", "Bacterial"]
    # no decision on a model positive keeps it
    assert make_submission(decisions={}).expert_labels() == ["COVID-19", "Viral"]


def test_bare_postgresql_urls_get_the_pinned_driver():
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.sqlite") == "sqlite:///x.sqlite"


def test_new_database_gets_the_current_schema(backend):
    store = FeedbackStore(backend.url)
    assert store.schema_version() == SCHEMA_VERSION == 3
    assert {"ix_reviews_reviewer", "ix_reviews_bundle_id", "ix_reviews_created_at"} <= index_names(backend.url)
    FeedbackStore(backend.url)  # opening again changes nothing
    with store.engine.connect() as conn:
        assert conn.execute(select(schema_info.c.version)).scalars().all() == [3]
    store.close()


def test_version_1_database_is_migrated_in_place(backend):
    make_v1_database(backend.url)
    assert "ix_reviews_reviewer" not in index_names(backend.url)
    store = FeedbackStore(backend.url)
    assert store.schema_version() == 3
    assert "ix_reviews_reviewer" in index_names(backend.url)
    old = store.reviews_frame()
    assert old["comment"].tolist() == ["from v1"] and old["reviewer"].tolist() == ["Dr Old"]
    assert old["other_findings"].tolist() == [None]  # rows from before the column: none added
    row = store.submit(make_submission("Dr Old"))
    assert row["version"] == 2  # the revision follows the migrated row
    assert len(latest_reviews(store.reviews_frame())) == 1
    store.close()


def test_an_expert_adds_findings_the_model_does_not_list(backend):
    """Free text or a PadChest term, stored in the other_findings column (schema 3), trimmed and
    without repeats; a change to them is a new version; the model's labels are unaffected."""
    store = FeedbackStore(backend.url)
    sub = make_submission()
    sub.other_findings = [{"finding": "  rib   fracture ", "source": "free text"},
                          {"finding": "Pneumothorax", "source": "padchest"},
                          {"finding": "pneumothorax", "source": "free text"}, {"finding": ""}]
    row = store.submit(sub)
    stored = store.reviews_frame().iloc[-1]
    assert stored["other_findings"] == [{"finding": "rib fracture", "source": "free text"},
                                        {"finding": "Pneumothorax", "source": "padchest"}]
    assert row["expert_labels"] == ["COVID-19"]  # model labels as before; added ones kept apart
    again = save_feedback(lambda: store, sub)
    assert again.unchanged  # the same added findings: nothing new
    sub.other_findings = sub.other_findings[:1]
    assert save_feedback(lambda: store, sub).row["version"] == 2
    too_long = make_submission()
    too_long.other_findings = [{"finding": "x" * 201}]
    with pytest.raises(FeedbackError, match="longer than 200"):
        store.submit(too_long)
    store.close()


def _open(url: str) -> None:
    FeedbackStore(url).close()


def test_several_processes_migrate_a_version_1_database_once(backend):
    make_v1_database(backend.url)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_open, args=(backend.url,)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    store = FeedbackStore(backend.url)
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(schema_info.c.version)).scalars()) == [1, 2, 3]
    assert store.count() == 1
    store.close()


def test_newer_schema_is_refused(backend):
    store = FeedbackStore(backend.url)
    with store.engine.begin() as conn:
        conn.execute(insert(schema_info).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(FeedbackError, match="schema version 4"):
        FeedbackStore(backend.url)
    store.close()


def test_submit_persists_and_revisions_are_new_versions(backend, tmp_path):
    store = FeedbackStore(backend.url, image_dir=tmp_path / "images")
    first = store.submit(make_submission(comment="<b>bold?</b>"), image_bytes=b"raw-image")
    second = store.submit(make_submission(decisions={"COVID-19": "agree"}))
    assert (first["version"], second["version"]) == (1, 2)
    frame = FeedbackStore(backend.url).reviews_frame()  # a new connection sees both
    assert len(frame) == 2 and frame["comment"].iloc[0] == "<b>bold?</b>"
    assert list(frame["expert_labels"].iloc[1]) == ["COVID-19", "Viral"]
    assert frame["decisions"].iloc[0] == {"COVID-19": "agree", "Viral": "disagree"}
    assert frame["image_stored"].tolist() == [True, False]
    assert len(latest_reviews(frame)) == 1
    stored = list((tmp_path / "images").iterdir())
    assert [p.name for p in stored] == [SHA + ".img"]
    assert store.image_path(SHA) == stored[0] and stored[0].read_bytes() == b"raw-image"
    export = store.export_for_retraining()
    assert list(export.columns[:3]) == ["image_sha256", "bundle_id", "label_set"]
    assert export["expert_labels"].tolist() == ["COVID-19", "COVID-19|Viral"]
    store.close()


def test_resubmitted_form_is_stored_once(backend):
    store = FeedbackStore(backend.url)
    first = store.submit(make_submission(), review_uid="11111111-2222-3333-4444-555555555555")
    again = store.submit(make_submission(), review_uid="11111111-2222-3333-4444-555555555555")
    assert again["version"] == first["version"] == 1 and store.count() == 1
    store.close()


def test_invalid_submissions_are_refused(backend):
    store = FeedbackStore(backend.url)
    with pytest.raises(FeedbackError, match="reviewer"):
        store.submit(make_submission(reviewer="  "))
    with pytest.raises(FeedbackError, match="Unknown"):
        store.submit(make_submission(added=["Dragon"]))
    with pytest.raises(FeedbackError, match="longer than 200"):
        store.submit(make_submission(reviewer="x" * 201))
    with pytest.raises(FeedbackError, match="longer than 2000"):
        store.submit(make_submission(comment="y" * 2001))
    assert store.count() == 0
    store.close()


def test_odd_text_is_stored_verbatim_except_nul(backend):
    store = FeedbackStore(backend.url)
    name = "Dr <script>alert(1)</script> ' OR 1=1; --  Ünïcödé 🩻"
    comment = "**bold** <img src=x onerror=alert(1)>\n\tline\x00two; DROP TABLE reviews;"
    store.submit(make_submission(reviewer=name, comment=comment))
    row = store.reviews_frame().iloc[0]
    assert row["reviewer"] == name
    assert row["comment"] == comment.replace("\x00", "")
    store.close()


def test_agreement_between_model_experts_and_experts(backend):
    store = FeedbackStore(backend.url)
    store.submit(make_submission("A", decisions={"COVID-19": "agree", "Viral": "agree"}))
    store.submit(make_submission("B", decisions={"COVID-19": "agree", "Viral": "disagree"}))
    stats = agreement_stats(store.reviews_frame(), LABELS).set_index("label")
    assert stats.loc["COVID-19", "model_expert_agreement"] == 1.0
    assert stats.loc["Viral", "model_expert_agreement"] == 0.5
    assert stats.loc["Viral", "inter_expert_agreement"] == 0.0
    assert stats.loc["COVID-19", "inter_expert_agreement"] == 1.0
    store.close()


def _writer(url: str, reviewer: str, count: int) -> None:
    store = FeedbackStore(url)
    for _ in range(count):
        store.submit(make_submission(reviewer))
    store.close()


def test_concurrent_threads_and_processes_lose_nothing(backend):
    FeedbackStore(backend.url).close()
    threads = [threading.Thread(target=_writer, args=(backend.url, f"T{i % 2}", 10)) for i in range(6)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(backend.url, "P", 10)) for _ in range(3)]
    for worker in threads + procs:
        worker.start()
    for worker in threads + procs:
        worker.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    store = FeedbackStore(backend.url)
    frame = store.reviews_frame()
    assert len(frame) == 6 * 10 + 3 * 10
    assert frame["review_uid"].is_unique
    # versions per reviewer are exactly 1..n: no duplicates, no gaps
    for reviewer, group in frame.groupby("reviewer"):
        assert sorted(group["version"]) == list(range(1, len(group) + 1)), reviewer
    store.close()


def test_read_only_database_saves_nothing_and_says_so(backend, tmp_path):
    FeedbackStore(backend.url).submit(make_submission("Dr Before"))
    read_only = FeedbackStore(backend.read_only_url(), image_dir=tmp_path / "images")
    assert len(read_only.reviews_frame()) == 1  # reading still works
    result = save_feedback(lambda: read_only, make_submission(comment="keep me"), image_bytes=b"img")
    assert not result.saved and result.row is None
    assert result.message.startswith("Saving the feedback failed") and "answers are kept" in result.message
    assert "keep me" not in result.message  # no SQL parameters echoed
    assert FeedbackStore(backend.url).count() == 1  # nothing half-written ...
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())  # ... no orphan image
    read_only.close()


def test_unreachable_database_is_a_message_not_a_crash(backend):
    url = backend.unreachable_url()
    with pytest.raises(FeedbackStoreError):
        FeedbackStore(url)
    result = save_feedback(lambda: FeedbackStore(url), make_submission())
    assert not result.saved and "answers are kept" in result.message
    invalid = save_feedback(lambda: FeedbackStore(backend.url), make_submission(reviewer=""))
    assert not invalid.saved and invalid.message == "Please enter the reviewer's name before submitting."


def test_database_lost_under_an_open_store(postgres_server, tmp_path):
    from tests.review.conftest import Backend, admin_sql

    name = "fb_vanishing"
    admin_sql(postgres_server, f"CREATE DATABASE {name}")
    backend = Backend("postgresql", f"{postgres_server}/{name}", postgres_server, name)
    store = FeedbackStore(backend.url, image_dir=tmp_path / "images")
    assert save_feedback(lambda: store, make_submission()).saved
    backend.drop()
    result = save_feedback(lambda: store, make_submission(), image_bytes=b"img")
    assert not result.saved and result.message.startswith("Saving the feedback failed")
    assert not (tmp_path / "images").exists()
    store.close()




def test_input_check_is_stored_inside_the_model_output(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'fb.sqlite'}")
    verdict = {"passed": False, "reason": "The lung segmentation failed (no lung found).",
               "score": 4.2, "threshold": 1.5, "checks": ["lungs", "score"], "method": "m"}
    sub = make_submission()
    sub.input_check = verdict
    row = store.submit(sub)
    assert row["model_output"]["input_check"] == verdict
    plain = store.submit(make_submission(reviewer="Dr B"))
    assert "input_check" not in plain["model_output"]
    stored = store.reviews_frame()
    assert len(stored) == 2 and "input_check" not in stored.columns  # no new column


def test_a_submission_is_made_from_a_review(tmp_path):
    """The model's side of a submission comes from the review as plain Python values; what the
    expert said is kept as given; the store takes it."""
    from types import SimpleNamespace

    import numpy as np

    from cxr_core.review.feedback import FeedbackStore, Submission, save_feedback

    review = SimpleNamespace(
        image=SimpleNamespace(sha256="ab" * 32), bundle_id="b1", label_set="specific",
        labels=["pneumonia", "normal"], probs=np.array([0.8, 0.1], np.float32),
        thresholds=np.array([0.5, 0.4]), findings=np.array([True, False]),
        agreement=np.array([2, 0]))
    sub = Submission.from_review(review, "Dr A", {"pneumonia": "agree"}, comment="ok",
                                 input_check={"verdict": "accepted"},
                                 other_findings=[{"finding": "kyphosis", "source": "padchest"}])
    assert sub.image_sha256 == "ab" * 32 and sub.bundle_id == "b1" and sub.reviewer == "Dr A"
    assert sub.labels == ["pneumonia", "normal"] and sub.model_positive == [True, False]
    assert sub.probabilities == [pytest.approx(0.8), pytest.approx(0.1)]
    assert all(type(v) is float for v in sub.probabilities + sub.thresholds)
    assert sub.agreement == [2, 0] and all(type(v) is int for v in sub.agreement)
    assert sub.decisions == {"pneumonia": "agree"} and sub.comment == "ok"
    assert sub.other_findings == [{"finding": "kyphosis", "source": "padchest"}]
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.sqlite'}")
    assert save_feedback(lambda: store, sub).saved
