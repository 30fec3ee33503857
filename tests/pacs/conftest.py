"""A real PACS for the node and DICOMweb tests: Orthanc with its DICOMweb plugin, started once per
test session on 127.0.0.1 (free ports, a temp storage folder; scripts/orthanc_throwaway.sh) and
stopped after. Where it cannot start, its tests skip with the reason, unless CXR_REQUIRE_ORTHANC=1
(CI), where they fail. Test X-rays: real images of ../shared/data/nih-sample wrapped into DICOM
with made-up patient tags.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED, require

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "orthanc_throwaway.sh"
NIH = SHARED / "nih-sample"
#: routes every CR/DX instance whose patient ID starts with ROUTE- to the modality 'cxrnode'
#: (one asynchronous store job each: a job that fails while the node is down can be resubmitted)
ROUTE_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  local pid = tags['PatientID'] or ''
  local modality = tags['Modality'] or ''
  if string.sub(pid, 1, 6) == 'ROUTE-' and (modality == 'CR' or modality == 'DX') then
    RestApiPost('/modalities/cxrnode/store', '{"Resources": ["' .. instanceId .. '"], "Asynchronous": true}')
  end
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(reason: str):
    if os.environ.get("CXR_REQUIRE_ORTHANC") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Orthanc:
    """A running Orthanc: its REST/DICOMweb base URL and DICOM port."""

    url: str
    dicom_port: int
    aet: str = "ORTHANC"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def get(self, path: str, **kwargs):
        import requests

        response = requests.get(self.url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, data=None, json=None):
        import requests

        response = requests.post(self.url + path, data=data, json=json, timeout=60)
        response.raise_for_status()
        return response.json() if response.content else None

    def put(self, path: str, json):
        import requests

        requests.put(self.url + path, json=json, timeout=30).raise_for_status()

    def upload(self, data: bytes) -> str:
        return self.post("/instances", data=data)["ID"]

    def study_instances(self, study_uid: str) -> list[dict]:
        """Every instance of a study with its main tags (modality, SOP class, UIDs)."""
        found = self.post("/tools/find", json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid},
                                                "Expand": True})
        rows = []
        for item in found:
            tags = self.get(f"/instances/{item['ID']}/simplified-tags")
            rows.append({"id": item["ID"], **tags})
        return rows

    def file(self, instance_id: str) -> bytes:
        import requests

        response = requests.get(f"{self.url}/instances/{instance_id}/file", timeout=30)
        response.raise_for_status()
        return response.content


@pytest.fixture(scope="session")
def orthanc():
    """One Orthanc for the test session (routing script installed, no modality yet)."""
    if not SCRIPT.is_file():
        unavailable(f"{SCRIPT} is missing")
    folder = Path(tempfile.mkdtemp(prefix="cxr-orthanc-"))
    (folder / "route.lua").write_text(ROUTE_LUA)
    http, dicom = free_port(), free_port()
    try:
        done = subprocess.run(["bash", str(SCRIPT), "start", str(folder), str(http), str(dicom)],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = subprocess.CompletedProcess([], 1, "", str(exc))
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        unavailable(f"Orthanc could not be started (`make orthanc` installs it): {done.stderr.strip()[-500:]}")
    try:
        yield Orthanc(done.stdout.strip().splitlines()[-1], dicom)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def nih_images(n: int, start: int = 0) -> list[Path]:
    """n real chest X-rays of the NIH sample, in a fixed order."""
    metadata = require(NIH / "metadata.csv")
    import pandas as pd

    names = sorted(pd.read_csv(metadata)["image"])[start:start + n]
    return [NIH / name for name in names]


def xray_dicom(png: Path, patient_id: str, study_uid: str, index: int = 1, modality: str = "DX",
               patient_name: str = "Doe^Jane", accession: str = "ACC0001", **extra) -> bytes:
    """A real X-ray (8-bit PNG) as a 12-bit DX/CR DICOM with made-up patient and study tags."""
    import cv2
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1" if modality == "DX" else "1.2.840.10008.5.1.4.1.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "19600214", "F"
    ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = accession, "S1", "20261201", "101500"
    ds.ReferringPhysicianName, ds.StudyDescription = "Smith^John", "XR CHEST"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = modality, "CHEST", "PA"
    ds.SeriesNumber, ds.InstanceNumber = 1, index
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.143, 0.143]
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dciodvfy_errors(data: bytes, folder: Path) -> list[str]:
    """dciodvfy's error lines for one DICOM object."""
    if shutil.which("dciodvfy") is None:
        unavailable("dciodvfy (Debian package dicom3tools, `make orthanc`) is not installed")
    path = folder / f"check-{time.monotonic_ns()}.dcm"
    path.write_bytes(data)
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
