"""The DICOM node: a C-STORE / C-ECHO SCP (pynetdicom) that queues chest X-rays on disk, reviews
them in the background and sends the SR and the report's Secondary Capture to its destinations.

- Associations from calling AE titles outside the allow-list are rejected (and logged).
- Only CR, DX-for-presentation and DX-for-processing images are accepted: any other storage
  class is refused with 0x0122 (SOP class not supported), a dataset that lacks its UIDs or
  pixels with 0xA900, one whose pixels do not decode with 0xC000; never a crash; the refusal is logged by queue key, never by patient.
- An image is answered 'stored' only once it is on disk (`queue.DiskQueue`): a kill in the middle
  of a burst loses nothing, and a restart reviews and sends what is left.
- A destination that is down is retried with a doubling back-off, logged on every failure.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

from ..base.errors import CxrError
from ..imaging.image_io import dicom_reference, load_image, patient_study
from ..review.dicom_out import dicom_results, refusal_report
from .queue import RECEIVED, REVIEWED, DiskQueue, item_key
from .sender import SendError, send
from .settings import NodeSettings

log = logging.getLogger(__name__)

#: CR, DX for presentation, DX for processing
ACCEPTED_CLASSES = ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",
                    "1.2.840.10008.5.1.4.1.1.1.1.1")
#: C-STORE failure statuses (PS3.4 B.2.3)
OUT_OF_RESOURCES, NOT_MATCHING, CANNOT_UNDERSTAND, CLASS_NOT_SUPPORTED = 0xA700, 0xA900, 0xC000, 0x0122
REVIEW_BATCH = 4


class Node:
    """The SCP, the review worker and the sender, sharing one on-disk queue."""

    def __init__(self, config: NodeSettings, reviewer_factory: Callable[[], object],
                 max_pixels: int | None = None):
        from ..base.config import settings as app_settings

        self.config = config.validated()
        self.queue = DiskQueue(config.queue_dir, owner=True)
        self._reviewer_factory = reviewer_factory
        self._max_pixels = max_pixels or app_settings().max_pixels
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None

    # --- receiving --------------------------------------------------------------------------
    def _application_entity(self):
        from pydicom.uid import (
            DeflatedExplicitVRLittleEndian,
            ExplicitVRBigEndian,
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            JPEGLSLossless,
            JPEGLSNearLossless,
        )
        from pynetdicom import AE, StoragePresentationContexts
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.config.aet)
        ae.require_calling_aet = list(self.config.allow)
        syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                    ExplicitVRBigEndian, JPEGLSLossless, JPEGLSNearLossless]
        for uid in ACCEPTED_CLASSES:
            ae.add_supported_context(uid, syntaxes)
        # every other storage class is negotiated too, so that a non-image dataset (a report, a
        # CT slice) sent by mistake is refused with a status instead of failing the association
        for context in StoragePresentationContexts:
            if context.abstract_syntax not in ACCEPTED_CLASSES:
                ae.add_supported_context(context.abstract_syntax, syntaxes[:2])
        ae.add_supported_context(Verification)
        ae.maximum_associations = 8
        return ae

    def handle_store(self, event) -> int:
        """C-STORE: check the instance, put it on disk, answer; never raises."""
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            sop_uid = str(ds.get("SOPInstanceUID", "") or "")
            key = item_key(sop_uid)[:12] if sop_uid else "-"
            sop_class = str(ds.get("SOPClassUID", "") or event.request.AffectedSOPClassUID)
            if sop_class not in ACCEPTED_CLASSES:
                log.warning("refused instance %s: SOP class %s is not a CR/DX image", key, sop_class)
                return CLASS_NOT_SUPPORTED
            if dicom_reference(ds) is None or "PixelData" not in ds:
                log.warning("refused instance %s: it lacks its study/series/instance UIDs or pixel data", key)
                return NOT_MATCHING
            data = event.encoded_dataset(include_meta=True)
            load_image(data, filename="received.dcm", max_pixels=self._max_pixels)  # decodes, or refuses
        except CxrError as exc:
            log.warning("refused instance %s: %s", key, exc)
            return CANNOT_UNDERSTAND
        except Exception as exc:  # noqa: BLE001 (a malformed dataset must never take the node down)
            log.warning("refused a malformed dataset: %s", type(exc).__name__)
            return CANNOT_UNDERSTAND
        try:
            queued = self.queue.put(sop_uid, data)
        except OSError as exc:
            log.error("cannot queue instance %s: %s", key, exc.strerror)
            return OUT_OF_RESOURCES
        log.info("received instance %s%s", key, "" if queued else " (already received; kept once)")
        self._wake.set()
        return 0x0000

    @staticmethod
    def handle_rejected(event) -> None:
        assoc = event.assoc
        log.warning("refused an association from calling AE '%s' at %s (not on the allow-list)",
                    assoc.requestor.ae_title, assoc.requestor.address)

    # --- running ----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the port and start the review and send threads (pending items first)."""
        from pynetdicom import evt

        reviewer = self._reviewer_factory()
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_REJECTED, self.handle_rejected),
                    (evt.EVT_C_ECHO, lambda event: 0x0000)]
        self._server = self._application_entity().start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers)
        counts = self.queue.counts()
        log.info("node %s listening on %s:%d; queue %s: %d to review, %d to send; sending to %s",
                 self.config.aet, self.config.host, self.config.port, self.config.queue_dir,
                 counts["received"], counts["reviewed"],
                 ", ".join(d.name for d in self.config.send_to))
        for target, name in ((lambda: self._review_loop(reviewer), "review"), (self._send_loop, "send")):
            thread = threading.Thread(target=target, name=f"node-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=30)

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM."""
        import signal

        self.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.is_set():
            self._stop.wait(1.0)
        log.info("node stopping; the queue keeps what is not sent yet")
        self.stop()

    # --- reviewing --------------------------------------------------------------------------
    def _review_loop(self, reviewer) -> None:
        while not self._stop.is_set():
            keys = self.queue.keys(RECEIVED)[:REVIEW_BATCH]
            if not keys:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self.review_pending(reviewer, keys)

    def review_pending(self, reviewer, keys: list[str]) -> None:
        """Review a batch; when it fails, its images one at a time, and an image the pipeline
        cannot take gets a refusal SR (answered once, never retried forever)."""
        try:
            self.review_batch(reviewer, keys)
            return
        except Exception:
            log.exception("review of a batch failed; reviewing its images one at a time")
        for key in keys:
            if self.queue.state(key)["status"] != RECEIVED:
                continue  # its results were kept before the failure
            try:
                self.review_batch(reviewer, [key])
            except Exception:
                log.exception("instance %s could not be analysed", key[:12])
                self._refuse(key, self.queue.source(key), "The image could not be analysed.", reviewer)

    def review_batch(self, reviewer, keys: list[str]) -> None:
        """Review queued items and keep their SR (and SC) in the queue."""
        from ..explain.report import report_pages

        images, loaded_keys = [], []
        for key in keys:
            data = self.queue.source(key)
            try:
                images.append(load_image(data, filename="received.dcm", max_pixels=self._max_pixels))
                loaded_keys.append(key)
            except CxrError as exc:
                self._refuse(key, data, str(exc), reviewer)
        if not images:
            return
        started = time.perf_counter()
        for key, review in zip(loaded_keys, reviewer.review(images)):
            if review.refused:
                log.info("instance %s refused by the input check: %s", key[:12], review.input_check.reason)
                results = dicom_results(review)
            else:
                results = dicom_results(review, report_pages(review))
            self.queue.save_results(key, results.sr, results.sc, review.refused)
        log.info("reviewed %d instance(s) in %.1f s", len(images), time.perf_counter() - started)
        self._wake.set()

    def _refuse(self, key: str, data: bytes, reason: str, reviewer) -> None:
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        bundle = reviewer.bundle
        sr = refusal_report(dicom_reference(ds), patient_study(ds), bundle.bundle_id, reason)
        self.queue.save_results(key, sr, None, refused=True)
        log.info("instance %s not reviewed: %s", key[:12], reason)

    # --- sending ----------------------------------------------------------------------------
    def _send_loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            due = [k for k in self.queue.keys(REVIEWED) if self.queue.state(k)["next_try"] <= now]
            if not due:
                self._wake.wait(0.5)
                continue
            for key in due:
                if self._stop.is_set():
                    break
                self.send_item(key)

    def send_item(self, key: str) -> bool:
        """Send one reviewed item to every destination that lacks it; True when all have it."""
        results, state = self.queue.results(key), self.queue.state(key)
        for destination in self.config.send_to:
            missing = [name for name in ("sr", "sc")
                       if name in results and name not in state["sent"].get(destination.name, [])]
            if not missing:
                continue
            try:
                send(destination, [results[name] for name in missing], calling_aet=self.config.aet)
            except SendError as exc:
                delay = self.queue.failed(key, str(exc), self.config.retry_s, self.config.retry_max_s)
                log.warning("sending %s failed: %s; retry %d in %.0f s", key[:12], exc,
                            self.queue.state(key)["attempts"], delay)
                return False
            self.queue.mark_sent(key, destination.name, missing)
            log.info("sent %s to %s (%s)", key[:12], destination.name, ", ".join(missing))
        self.queue.finish(key)
        return True


def default_reviewer_factory(bundle=None, engine: str | None = None):
    """A factory for the node's Reviewer: the given or default bundle, warmed up once."""
    def make():
        from ..base.config import settings as app_settings
        from ..review.pipeline import Reviewer

        reviewer = Reviewer.from_paths(bundle or app_settings().default_bundle_path, engine=engine)
        reviewer.warm_up()
        return reviewer
    return make
