"""DICOM node throughput: a burst of 50 real chest X-rays sent by C-STORE to `python -m cxr_core
node` (shipped bundle, Lite engine), which reviews them and stores SR + SC in a throwaway Orthanc.
Reports images per minute (first C-STORE received to last SR stored) and the p50/p95 latency of
one image (received by the node -> its SR and SC stored in Orthanc). Needs Orthanc (`make orthanc`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, SHARED, write_result

BURST = int(os.environ.get("CXR_NODE_BENCH_BURST", "50"))
SCRIPT = REPO / "scripts" / "orthanc_throwaway.sh"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _echo(port: int) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRREVIEW")
    if not assoc.is_established:
        return False
    assoc.release()
    return True


def _burst(port: int, files: list[bytes]) -> None:
    """One association, one C-STORE per image, as a router sends a burst."""
    import io

    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title="BENCH")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1", ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRREVIEW")
    if not assoc.is_established:
        raise RuntimeError("the node refused the benchmark's association")
    try:
        for data in files:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
            if not status or status.Status != 0:
                raise RuntimeError("the node did not accept an image")
    finally:
        assoc.release()


def run(folder: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.pacs.conftest import nih_images, xray_dicom

    from pydicom.uid import generate_uid

    http, dicom, node_port = _free_port(), _free_port(), _free_port()
    started = subprocess.run(["bash", str(SCRIPT), "start", str(folder / "orthanc"), str(http), str(dicom)],
                             capture_output=True, text=True, timeout=120, check=False)
    if started.returncode != 0:
        raise RuntimeError(f"Orthanc could not be started: {started.stderr.strip()[-300:]}")
    queue, log = folder / "queue", folder / "node.log"
    env = {**os.environ, "CXR_ENGINE": "lite"}
    with open(log, "w") as handle:
        node = subprocess.Popen(
            [sys.executable, "-m", "cxr_core", "node", "--host", "127.0.0.1", "--port", str(node_port),
             "--allow", "BENCH", "--queue", str(queue), "--send-to", f"ORTHANC@127.0.0.1:{dicom}"],
            cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not ("listening on" in log.read_text() and _echo(node_port)):
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start: {log.read_text()[-500:]}")
            time.sleep(0.5)
        files = [xray_dicom(png, f"BENCH-{i:04d}", generate_uid(), index=i + 1)
                 for i, png in enumerate(nih_images(BURST))]
        t0 = time.time()
        _burst(node_port, files)
        sent_s = time.time() - t0
        while len(list((queue / "done").glob("*.json"))) < BURST:
            if node.poll() is not None or time.time() - t0 > 3600:
                raise RuntimeError(f"the node stopped before the burst was done: {log.read_text()[-500:]}")
            time.sleep(1.0)
    finally:
        node.terminate()
        node.wait(timeout=60)
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder / "orthanc")], capture_output=True,
                       timeout=60, check=False)
    records = [json.loads(p.read_text()) for p in (queue / "done").glob("*.json")]
    received = np.array([r["received"] for r in records])
    stored = np.array([r["sent_at"] for r in records])
    latency = stored - received
    span = float(stored.max() - received.min())
    return {"burst": BURST, "images_per_minute": round(60 * BURST / span, 1),
            "burst_seconds": round(span, 1), "c_store_burst_seconds": round(sent_s, 1),
            "latency_p50_s": round(float(np.percentile(latency, 50)), 1),
            "latency_p95_s": round(float(np.percentile(latency, 95)), 1),
            "engine": "lite", "bundle": "models/cxr-demo", "cpu_count": os.cpu_count()}


def main() -> int:
    if shutil.which("Orthanc") is None or not (SHARED / "nih-sample" / "metadata.csv").is_file():
        print("bench_node: skipped (needs Orthanc, `make orthanc`, and ../shared/data/nih-sample)")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="cxr-bench-node-"))
    try:
        result = run(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    write_result("node", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
