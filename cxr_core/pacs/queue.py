"""The node's queue on disk: nothing received is lost when the node stops, crashes or is killed.

One folder per received instance, named by a hash of its SOP Instance UID (never a patient
attribute), moved into `items/` by one atomic rename once the whole file is on disk:
    items/<key>/source.dcm     the received image (deleted once its results are sent)
    items/<key>/sr.dcm, sc.dcm the results, written before they are marked reviewed; sent as
                               they are, so that a resend after a crash repeats the same SOP
                               Instance UIDs (the PACS keeps one copy, never two)
    items/<key>/state.json     status (received, reviewed), per-destination sends, attempts,
                               next retry, last error
    done/<key>.json            what is left after the last send: times, refusal flag, no images
The queue folder holds images with patient data until they are sent: it is created private (0700).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RECEIVED, REVIEWED = "received", "reviewed"


def item_key(sop_instance_uid: str) -> str:
    """Queue key of an instance: a hash of its SOP Instance UID (the same image gives the same key)."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class QueueRow:
    """One queued or finished item as the Worklist shows it (no patient data)."""

    key: str
    status: str  # received, reviewed, sent
    received: float
    attempts: int
    last_error: str
    refused: bool


class DiskQueue:
    """Received images and their results, kept on disk until every destination has them."""

    def __init__(self, root: str | Path, owner: bool = False):
        """`owner`: the node that receives into it (creates the folders, drops partial receives
        left by a crash); a reader (the app) only looks."""
        self.root = Path(root)
        if not owner:
            return
        for name in ("items", "done", "tmp"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for leftover in (self.root / "tmp").iterdir():  # a receive cut off by a crash
            shutil.rmtree(leftover, ignore_errors=True)

    def _dir(self, key: str) -> Path:
        return self.root / "items" / key

    def known(self, key: str) -> bool:
        return self._dir(key).is_dir() or (self.root / "done" / f"{key}.json").is_file()

    def put(self, sop_instance_uid: str, data: bytes) -> bool:
        """Store a received instance; False when it is already queued or was already answered."""
        key = item_key(sop_instance_uid)
        if self.known(key):
            return False
        staging = self.root / "tmp" / f"{key}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        _write_atomic(staging / "source.dcm", data)
        _write_atomic(staging / "state.json", json.dumps(
            {"status": RECEIVED, "received": time.time(), "attempts": 0, "next_try": 0.0,
             "last_error": "", "sent": {}, "refused": False}).encode())
        try:
            os.rename(staging, self._dir(key))
        except OSError:  # the same instance arrived twice at once: keep the first
            shutil.rmtree(staging, ignore_errors=True)
            return False
        _fsync_dir(self.root / "items")
        return True

    def state(self, key: str) -> dict:
        return json.loads((self._dir(key) / "state.json").read_text())

    def _save_state(self, key: str, state: dict) -> None:
        _write_atomic(self._dir(key) / "state.json", json.dumps(state).encode())

    def keys(self, status: str | None = None) -> list[str]:
        """Queued keys (optionally of one status), oldest first."""
        rows = []
        for folder in (self.root / "items").iterdir():
            try:
                state = self.state(folder.name)
            except (OSError, ValueError):
                continue
            if status is None or state["status"] == status:
                rows.append((state["received"], folder.name))
        return [key for _, key in sorted(rows)]

    def source(self, key: str) -> bytes:
        return (self._dir(key) / "source.dcm").read_bytes()

    def save_results(self, key: str, sr: bytes, sc: bytes | None, refused: bool) -> None:
        """Keep an item's results; from now on it is only ever sent, never reviewed again."""
        folder = self._dir(key)
        _write_atomic(folder / "sr.dcm", sr)
        if sc is not None:
            _write_atomic(folder / "sc.dcm", sc)
        state = self.state(key)
        state.update(status=REVIEWED, refused=refused, reviewed=time.time())
        self._save_state(key, state)

    def results(self, key: str) -> dict[str, bytes]:
        """{'sr': bytes, 'sc': bytes} of a reviewed item (no 'sc' for a refused image)."""
        folder = self._dir(key)
        return {name: (folder / f"{name}.dcm").read_bytes() for name in ("sr", "sc")
                if (folder / f"{name}.dcm").is_file()}

    def mark_sent(self, key: str, destination: str, objects: list[str]) -> None:
        state = self.state(key)
        state["sent"][destination] = sorted(set(state["sent"].get(destination, [])) | set(objects))
        self._save_state(key, state)

    def failed(self, key: str, error: str, retry_s: float, retry_max_s: float) -> float:
        """Record a failed send; returns the seconds until the next try (doubling back-off)."""
        state = self.state(key)
        state["attempts"] += 1
        delay = min(retry_max_s, retry_s * 2 ** (state["attempts"] - 1))
        state.update(next_try=time.time() + delay, last_error=error[:300])
        self._save_state(key, state)
        return delay

    def finish(self, key: str) -> None:
        """Every destination has the results: keep a small record, drop the images."""
        state = self.state(key)
        record = {k: state.get(k) for k in ("received", "reviewed", "attempts", "refused")}
        record["sent_at"] = time.time()
        _write_atomic(self.root / "done" / f"{key}.json", json.dumps(record).encode())
        shutil.rmtree(self._dir(key), ignore_errors=True)

    def rows(self, limit: int = 200) -> list[QueueRow]:
        """Queued items, then the latest finished ones, for the Worklist's node table."""
        rows = []
        for key in self.keys():
            try:
                state = self.state(key)
            except (OSError, ValueError):
                continue
            rows.append(QueueRow(key[:12], state["status"], state["received"], state["attempts"],
                                 state["last_error"], bool(state.get("refused"))))
        done = sorted((self.root / "done").glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in done[:max(0, limit - len(rows))]:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            rows.append(QueueRow(path.stem[:12], "sent", record.get("received") or 0.0,
                                 record.get("attempts") or 0, "", bool(record.get("refused"))))
        return rows

    def counts(self) -> dict[str, int]:
        pending = self.keys()
        reviewed = len(self.keys(REVIEWED))
        return {"received": len(pending) - reviewed, "reviewed": reviewed,
                "sent": len(list((self.root / "done").glob("*.json")))}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
