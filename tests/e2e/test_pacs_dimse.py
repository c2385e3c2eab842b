"""DICOM networking against a real Orthanc and dcmtk: listen, forward, send, C-FIND + C-GET.

Orthanc knows only the modalities ``SCANNER`` (dcmtk's storescu in these tests) and
``MONAITUMOR`` (us), each at 127.0.0.1 (tests/support/orthanc_server.py). The listener
allows only ``SCANNER`` to send to it. The study is a real BraTS case written as a
two-series MR study with distractors (tests/support/brats_dicom.py, 24 slices).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.data import MetaTensor
from pydicom import dcmread
from typer.testing import CliRunner

from monai_tumor.cli.main import app
from monai_tumor.errors import PacsError
from monai_tumor.inference.bundle import read_bundle_info
from monai_tumor.inference.seeds import Seed
from monai_tumor.pacs import (
    DicomNode,
    DimseOptions,
    Listener,
    ListenerOptions,
    PacsBatchResult,
    RetryPolicy,
    echo,
    outbox_for,
    run_dimse_batch,
    send_files,
)
from monai_tumor.pipeline.batch import BatchOptions, SeriesStatus
from tests.support.brats_dicom import BratsStudy, brats_case_dir, write_brats_study
from tests.support.orthanc_server import (
    AET,
    OrthancServer,
    free_port,
    orthanc_binary,
    storescu,
)

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "brats_glioma_mri"
CASE = "brats_2013_pat0003_1"
US = "MONAITUMOR"
FAST = DimseOptions(
    ae_title=US, retry=RetryPolicy(attempts=4, backoff_seconds=0.2, max_backoff_seconds=1)
)

pytestmark = [
    pytest.mark.tools,
    pytest.mark.realdata,
    pytest.mark.skipif(
        orthanc_binary() is None or shutil.which("storescu") is None,
        reason="needs Debian's orthanc and dcmtk (scripts/setup.sh)",
    ),
]


class BrightSegmenter:
    """Test double of the model (orchestration tests): label 1 where the FLAIR z-score > 2."""

    def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor:
        mask = torch.as_tensor(image[:1] > 2.0).to(torch.uint8)
        return MetaTensor(mask, affine=image.affine.clone(), meta=dict(image.meta))


@pytest.fixture(scope="module")
def listen_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, listen_port: int) -> Iterator[OrthancServer]:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), modalities={US: listen_port})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def study(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BratsStudy:
    return write_brats_study(
        brats_case_dir(data_dir, CASE), tmp_path_factory.mktemp("mr_study"), slices=(60, 84)
    )


def _all_files(study: BratsStudy) -> list[Path]:
    return [path for series in study.series.values() for path in series.files]


def _node(orthanc: OrthancServer) -> DicomNode:
    return DicomNode(AET, "127.0.0.1", orthanc.dicom_port)


def _wait_for(condition: Callable[[], bool], what: str, limit: float = 600.0) -> None:
    """Poll until ``condition`` holds (a generous limit: the machine may be busy)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def _seg_in_orthanc(orthanc: OrthancServer, study: BratsStudy) -> list[dict[str, Any]]:
    return orthanc.series_of_modality(study.study_uid, "SEG")


def _check_seg(orthanc: OrthancServer, study: BratsStudy, tmp_path: Path) -> None:
    (seg_series,) = _seg_in_orthanc(orthanc, study)
    instances = list(seg_series["Instances"])
    assert len(instances) == 1
    instance = instances[0]
    path = tmp_path / "seg_from_orthanc.dcm"
    path.write_bytes(orthanc.get_bytes(f"/instances/{instance}/file"))
    seg = dcmread(path)
    assert seg.StudyInstanceUID == study.study_uid
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [study.flair.series_uid]


def test_storescu_to_listen_then_seg_arrives_in_orthanc(
    orthanc: OrthancServer, study: BratsStudy, listen_port: int, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    listener = Listener(
        out,
        bundle=BUNDLE,
        options=ListenerOptions(
            ae_title=US,
            port=listen_port,
            host="127.0.0.1",
            allow=("SCANNER",),
            idle_seconds=1.0,
            forward=_node(orthanc),
            dimse=FAST,
        ),
        batch_options=BatchOptions(device="cpu", progress=False, workers=1),
        # the real glioma bundle runs in test_pacs_dicomweb.py; here the network path counts
        segmenter=BrightSegmenter(),
    ).start()
    try:
        # echoscu works, from an allowed AE title
        echo_ok = subprocess.run(
            ["echoscu", "-aet", "SCANNER", "-aec", US, "127.0.0.1", str(listen_port)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert echo_ok.returncode == 0, echo_ok.stderr
        # an AE title not on the allow-list is rejected at association time
        intruder = storescu(
            study.flair.files[:1],
            host="127.0.0.1",
            port=listen_port,
            called=US,
            calling="INTRUDER",
            check=False,
        )
        assert intruder.returncode != 0
        assert "Association Rejected" in intruder.stderr
        assert "Calling AE Title Not Recognized" in intruder.stderr
        assert listener.received == 0

        storescu(_all_files(study), host="127.0.0.1", port=listen_port, called=US)
        _wait_for(lambda: any(d.sent for d in listener.deliveries), "the SEG to be forwarded")
    finally:
        listener.stop()

    assert listener.received == len(_all_files(study))
    (run,) = listener.runs
    done = [r for r in run.records if r.status is SeriesStatus.DONE]
    assert [r.series_instance_uid for r in done] == [study.flair.series_uid]
    _check_seg(orthanc, study, tmp_path)
    assert outbox_for(out, str(_node(orthanc))).pending() == []


def test_restart_resumes_pending_study_and_unsent_seg(study: BratsStudy, tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = free_port()
    info = read_bundle_info(BUNDLE)
    # The forward destination: an Orthanc that is down until the end of the test.
    later = OrthancServer(tmp_path / "later", modalities={US: port})
    node = DicomNode(AET, "127.0.0.1", later.dicom_port)

    def listener(idle: float) -> Listener:
        return Listener(
            out,
            bundle=info,
            options=ListenerOptions(
                ae_title=US,
                port=port,
                host="127.0.0.1",
                allow=("SCANNER",),
                idle_seconds=idle,
                forward=node,
                dimse=FAST,
                resend_seconds=0.5,
            ),
            segmenter=BrightSegmenter(),
        )

    first = listener(3600).start()
    # The last two FLAIR slices come late (after the study was segmented, below).
    files = [*study.flair.files[:-2], *study.t1c.files]
    try:
        storescu(files, host="127.0.0.1", port=port, called=US)
        storescu(files[:5], host="127.0.0.1", port=port, called=US)  # sent twice
    finally:
        first.stop()  # stopped before the study was idle long enough
    assert first.received == len(files) and first.duplicates == 5
    assert first.runs == []

    # Restarted: the pending study is processed; the destination is down, the SEG is kept.
    second = listener(0.2).start()
    try:
        _wait_for(lambda: any(d.failed for d in second.deliveries), "a failed forward")
    finally:
        second.stop()
    (run,) = second.runs
    assert [r.series_instance_uid for r in run.records if r.status is SeriesStatus.DONE] == [
        study.flair.series_uid
    ]
    (partial,) = outbox_for(out, str(node)).pending()
    assert dcmread(partial).NumberOfFrames <= len(study.flair.files) - 2

    # The late slices arrive: the study is segmented again, the SEG now covers every slice.
    again = listener(0.2).start()
    try:
        storescu(study.flair.files[-2:], host="127.0.0.1", port=port, called=US)
        # runs[0] resumes what is ready (all reused); runs[1] follows the late slices
        _wait_for(lambda: len(again.runs) >= 2, "the study redone")
    finally:
        again.stop()
    redone = [r for r in again.runs[-1].records if r.status is SeriesStatus.DONE]
    assert [r.reused for r in redone] == [False]
    (pending,) = outbox_for(out, str(node)).pending()  # the partial SEG was withdrawn
    seg = dcmread(pending)
    sources = {
        str(s.ReferencedSOPInstanceUID)
        for s in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert sources == {
        str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in study.flair.files
    }
    seg_uid = str(seg.SOPInstanceUID)

    # Restarted again with the destination up: the kept SEG is sent, nothing is lost.
    later.start()
    try:
        third = listener(0.2).start()
        try:
            _wait_for(lambda: any(d.sent for d in third.deliveries), "the kept SEG to be sent")
        finally:
            third.stop()
        assert later.find("Instance", {"SOPInstanceUID": seg_uid})
    finally:
        later.stop()
    assert third.deliveries[0].sent == (seg_uid,)
    assert outbox_for(out, str(node)).pending() == []


def test_batch_dimse_find_get_and_store_back(
    orthanc: OrthancServer, study: BratsStudy, tmp_path: Path
) -> None:
    # the 240-slice reformat is left out: C-GET fetches every image series, and the point
    # here is the network path (selection among series is tested on folders and DICOMweb)
    orthanc.load([*study.flair.files, *study.t1c.files, *study.series["localizer"].files])
    out = tmp_path / "out"

    def run() -> PacsBatchResult:
        return run_dimse_batch(
            _node(orthanc),
            out,
            bundle=read_bundle_info(BUNDLE),
            studies=[study.study_uid],
            dimse=FAST,
            options=BatchOptions(device="cpu", progress=False, workers=1),
            segmenter=BrightSegmenter(),
        )

    result = run()
    assert result.exit_code == 0, [r.reason for r in result.batch.records]
    assert result.pull.fetched == len(study.flair.files) + len(study.t1c.files) + 3
    assert result.delivery is not None and len(result.delivery.sent) == 1
    sop = result.delivery.sent[0]
    assert orthanc.find("Instance", {"SOPInstanceUID": sop})
    again = run()
    assert again.pull.fetched == 0
    assert again.delivery is not None and again.delivery.sent == ()


def test_unknown_ae_title_is_rejected_by_orthanc(orthanc: OrthancServer, study: BratsStudy) -> None:
    stranger = DimseOptions(ae_title="STRANGER", retry=RetryPolicy(attempts=1))
    with pytest.raises(PacsError, match="does not allow storage from our AE title STRANGER"):
        send_files(study.flair.files[:1], _node(orthanc), options=stranger)
    echo(_node(orthanc), options=stranger)  # C-ECHO is open to anyone (site checks use it)


def test_send_and_echo_commands(orthanc: OrthancServer, study: BratsStudy) -> None:
    runner = CliRunner()
    node = f"{AET}@127.0.0.1:{orthanc.dicom_port}"
    result = runner.invoke(app, ["echo", node, "--aet", US])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["send", str(study.t1c.files[0]), "--to", node, "--aet", US])
    assert result.exit_code == 0, result.output
    assert "1 instance(s) sent" in result.output
    result = runner.invoke(
        app, ["send", str(study.t1c.files[0]), "--to", node, "--aet", "NOBODY", "--retries", "0"]
    )
    assert result.exit_code == 40
