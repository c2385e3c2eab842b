"""The annotation server over a real Orthanc (DICOMweb): list, fetch, infer, save as SEG.

Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) runs on a free loopback port
with HTTP basic authentication and holds one real CT series (STS_001, 59 slices); the
annotation server (``monai-tumor serve --studies http://user:pw@.../dicom-web``) is
driven with MONAI Label 0.8.5's client.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_tumor.ingest.reader import read_series
from tests.support.annotation_server import Server, free_port, read_nifti

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

USER, PASSWORD = "annotator", "orthanc-test-pw"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture(scope="module")
def orthanc(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists() or not PLUGIN.is_file():
        pytest.fail("Orthanc with the DICOMweb plugin is required: run scripts/setup.sh")
    root = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "monai-tumor-annotation-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "Plugins": [str(PLUGIN)],
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = open(root / "orthanc.log", "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(auth=(USER, PASSWORD), timeout=60) as http:
        deadline = time.monotonic() + 120
        while True:
            try:
                http.get(f"{base}/system").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((root / "orthanc.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        for f in sorted((data_dir / "sts" / "STS_001" / "CT" / "dicom" / "image").glob("*.dcm")):
            http.post(f"{base}/instances", content=f.read_bytes()).raise_for_status()
    yield f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/dicom-web"
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def web_server(orthanc: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("dicomweb-server")
    srv = Server(orthanc, work / "state", work / "server.log")
    yield srv
    srv.stop()


def test_dicomweb_datastore_round_trip(
    ml: ModuleType, web_server: Server, orthanc: str, data_dir: Path, tmp_path: Path
) -> None:
    client: Any = ml.MONAILabelClient(web_server.url, tmpdir=str(tmp_path))
    source = data_dir / "sts" / "STS_001" / "CT" / "dicom" / "image"
    series_uid = str(
        pydicom.dcmread(next(source.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
    )
    assert list(client.datastore()["objects"]) == [series_uid]
    assert client.next_sample("first", {})["id"] == series_uid

    mask_file = data_dir / "sts" / "STS_001" / "CT" / "nifti" / "mask" / "mask.nii.gz"
    mask, _ = read_nifti(mask_file)
    point = [int(np.rint(v)) for v in np.argwhere(mask > 0).mean(axis=0)]
    out, params = client.infer("lung_nodule_ct", series_uid, {"foreground": [point]})
    reference = read_series(source)  # the same series read locally: same grid
    pred, affine = read_nifti(Path(out))
    assert pred.shape == tuple(reference.shape[1:])
    np.testing.assert_allclose(affine, np.asarray(reference.affine), atol=1e-3)
    assert params["model_version"] == 0

    # a corrected label (the sarcoma GTV, value 1) is stored locally and as SEG on Orthanc
    nib.save(nib.Nifti1Image((mask > 0).astype(np.uint8), affine), tmp_path / "final.nii.gz")
    assert client.save_label(series_uid, str(tmp_path / "final.nii.gz"))["version"] == 1
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.auth = (USER, PASSWORD)
    web = DICOMwebClient(url=orthanc.replace(f"{USER}:{PASSWORD}@", ""), session=session)
    segs = web.search_for_series(search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    seg_series = segs[0]["0020000E"]["Value"][0]
    study = segs[0]["0020000D"]["Value"][0]
    (seg,) = web.retrieve_series(study, seg_series)
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    refs = {
        str(item.ReferencedSOPInstanceUID)
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert refs == set(reference.meta["sop_instance_uids"])
    # the model's output as DICOM SEG on the source series (output=dicom_seg)
    answer = httpx.post(
        f"{web_server.url}/infer/lung_nodule_ct",
        params={"image": series_uid, "output": "dicom_seg"},
        files={"params": (None, json.dumps({"foreground": [point]}))},
        timeout=600,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/dicom"
    predicted = pydicom.dcmread(io.BytesIO(answer.content))
    assert predicted.Modality == "SEG"
    assert predicted.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    # the SEG is not offered as an image to annotate
    assert list(client.datastore()["objects"]) == [series_uid]
    assert client.info()["datastore"]["completed"] == 1
