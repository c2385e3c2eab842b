"""DICOMweb against a real Orthanc: pull on metadata, segment, STOW-RS back, and faults.

Orthanc (Debian's, with its DICOMweb plugin) runs on loopback with authentication on and
only known modalities allowed to store (tests/support/orthanc_server.py); a real BraTS case is
written as a two-series MR study with two distractor series (tests/support/brats_dicom.py, 24
slices so the glioma bundle runs in seconds) and loaded with dcmtk's ``storescu``. Faults
come from a real HTTP proxy process in front of Orthanc (tests/support/fault_proxy.py) or from
stopping Orthanc itself.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from typer.testing import CliRunner

from monai_tumor.cli.main import app
from monai_tumor.errors import ConfigError, PacsError
from monai_tumor.ingest.selection import load_rules
from monai_tumor.pacs import (
    DicomwebClient,
    DicomwebConfig,
    InstanceCache,
    RetryPolicy,
    parse_query,
    pull_studies,
    read_study_list,
    run_dicomweb_batch,
)
from monai_tumor.pipeline.batch import BatchOptions, SeriesStatus
from tests.support.brats_dicom import BratsStudy, brats_case_dir, write_brats_study
from tests.support.fault_proxy import FaultProxy
from tests.support.orthanc_server import OrthancServer, dicomweb_plugin, free_port, orthanc_binary

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "brats_glioma_mri"
CASE = "brats_2013_pat0003_1"
FAST_RETRY = RetryPolicy(attempts=4, backoff_seconds=0.1, max_backoff_seconds=0.5)

pytestmark = [
    pytest.mark.tools,
    pytest.mark.skipif(
        orthanc_binary() is None or dicomweb_plugin() is None or shutil.which("storescu") is None,
        reason="needs Debian's orthanc, orthanc-dicomweb and dcmtk (scripts/setup.sh)",
    ),
]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def study(
    data_dir: Path, orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory
) -> BratsStudy:
    written = write_brats_study(
        brats_case_dir(data_dir, CASE), tmp_path_factory.mktemp("mr_study"), slices=(60, 84)
    )
    orthanc.load([path for series in written.series.values() for path in series.files])
    return written


def _config(url: str, **kwargs: object) -> DicomwebConfig:
    return DicomwebConfig(
        url,
        username="monai",
        password="tumour-test-secret",
        retry=kwargs.pop("retry", FAST_RETRY),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def _rules() -> object:
    return load_rules(BUNDLE / "configs" / "series_selection.json")


def _leftovers(root: Path) -> list[Path]:
    """Unfinished temporary files (an atomic write that did not complete)."""
    return [p for p in root.rglob(".*") if p.is_file()] if root.exists() else []


@pytest.mark.realdata
@pytest.mark.slow
def test_pull_segment_and_stow_back(
    orthanc: OrthancServer, study: BratsStudy, tmp_path: Path
) -> None:
    config = _config(orthanc.dicomweb_url)
    out = tmp_path / "out"
    options = BatchOptions(device="cpu", progress=False, workers=1)
    result = run_dicomweb_batch(
        config, out, bundle=BUNDLE, studies=[study.study_uid], options=options
    )

    assert result.exit_code == 0
    # Selection ran on metadata: only FLAIR and T1c were fetched, never the distractors.
    fetched = {s.role: s.series_uid for s in result.pull.series}
    assert fetched == {"flair": study.flair.series_uid, "t1c": study.t1c.series_uid}
    cached = list(InstanceCache(out / ".monai-tumor" / "pacs-cache").instances())
    assert len(cached) == len(study.flair.files) + len(study.t1c.files) == result.pull.fetched
    done = [r for r in result.batch.records if r.status is SeriesStatus.DONE]
    assert [r.series_instance_uid for r in done] == [study.flair.series_uid]
    assert result.delivery is not None and len(result.delivery.sent) == 1

    # Orthanc lists the SEG in the right study, referencing the right series ...
    (seg_series,) = orthanc.series_of_modality(study.study_uid, "SEG")
    (instance_id,) = seg_series["Instances"]
    seg_file = tmp_path / "from_orthanc.dcm"
    seg_file.write_bytes(orthanc.get_bytes(f"/instances/{instance_id}/file"))
    seg = dcmread(seg_file)
    assert seg.StudyInstanceUID == study.study_uid
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [study.flair.series_uid]
    assert str(seg.SOPInstanceUID) == result.delivery.sent[0]
    # ... and each frame lies on the source slice it references.
    sources = {
        str(ds.SOPInstanceUID): [float(v) for v in ds.ImagePositionPatient]
        for ds in (dcmread(p, stop_before_pixels=True) for p in study.flair.files)
    }
    referenced = set()
    for frame in seg.PerFrameFunctionalGroupsSequence:
        sop = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx(sources[sop], abs=1e-4)
        referenced.add(sop)
    assert referenced <= set(sources) and referenced

    # A rerun fetches nothing, segments nothing, sends nothing again.
    again = run_dicomweb_batch(
        config, out, bundle=BUNDLE, studies=[study.study_uid], options=options
    )
    assert again.exit_code == 0
    assert again.pull.fetched == 0 and again.pull.cached == result.pull.fetched
    assert all(r.reused for r in again.batch.records if r.status is SeriesStatus.DONE)
    assert again.delivery is not None and again.delivery.sent == ()
    assert len(orthanc.series_of_modality(study.study_uid, "SEG")) == 1

    # The same rerun from the command line (password from the environment).
    listing = tmp_path / "studies.csv"
    listing.write_text(f"StudyInstanceUID\n{study.study_uid}\n", encoding="utf-8")
    command = [
        "batch",
        "--dicomweb",
        orthanc.dicomweb_url,
        "--studies-from",
        str(listing),
        "--user",
        "monai",
        "--password-env",
        "TEST_PACS_PASSWORD",
        "--bundle",
        str(BUNDLE),
        "--out",
        str(out),
        "--no-progress",
    ]
    cli = CliRunner().invoke(app, command, env={"TEST_PACS_PASSWORD": "tumour-test-secret"})
    assert cli.exit_code == 0, cli.output
    assert f"0 instances fetched, {result.pull.fetched} already cached" in cli.output
    assert "0 SEG(s) sent" in cli.output


@pytest.mark.realdata
def test_query_and_study_list_find_the_study(
    orthanc: OrthancServer, study: BratsStudy, tmp_path: Path
) -> None:
    client = DicomwebClient(_config(orthanc.dicomweb_url))
    hits = client.search_studies(parse_query(["ModalitiesInStudy=MR"]))
    assert study.study_uid in {str(ds.StudyInstanceUID) for ds in hits}
    listing = tmp_path / "studies.csv"
    listing.write_text(f"PatientHash,StudyInstanceUID\nx,{study.study_uid}\n", encoding="utf-8")
    assert read_study_list(listing) == [study.study_uid]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_query(["ModalitiesInStudy"])


def test_wrong_password_is_a_clear_error_without_retries(orthanc: OrthancServer) -> None:
    config = DicomwebConfig(
        orthanc.dicomweb_url,
        username="monai",
        password="wrong",
        retry=RetryPolicy(attempts=5, backoff_seconds=30),  # a retry would hang the test
    )
    with pytest.raises(PacsError, match="refused our credentials"):
        DicomwebClient(config).search_studies({})


# ------------------------------------------------------------------------------ faults


@pytest.fixture
def proxy(orthanc: OrthancServer) -> Iterator[FaultProxy]:
    running = FaultProxy(orthanc.url, free_port()).start()
    try:
        yield running
    finally:
        running.stop()


def _assert_complete(cache: InstanceCache, study: BratsStudy) -> None:
    files = list(cache.instances(study.study_uid))
    assert len(files) == len(study.flair.files) + len(study.t1c.files)
    for path in files:
        ds = dcmread(path)
        assert ds.pixel_array.shape == (240, 240)  # whole: every pixel arrived
    assert _leftovers(cache.root) == []


@pytest.mark.realdata
def test_503_answers_are_retried_with_backoff(
    proxy: FaultProxy, study: BratsStudy, tmp_path: Path
) -> None:
    cache = InstanceCache(tmp_path / "cache")
    client = DicomwebClient(_config(f"{proxy.url}/dicom-web"))
    proxy.inject(status=503, count=3)  # fewer than the 4 attempts
    result = pull_studies(client, [study.study_uid], rules=_rules(), cache=cache)  # type: ignore[arg-type]
    assert proxy.faults()["status"] == 3
    assert result.fetched == len(study.flair.files) + len(study.t1c.files)
    _assert_complete(cache, study)


@pytest.mark.realdata
def test_a_transfer_cut_half_way_leaves_nothing_and_is_fetched_again(
    proxy: FaultProxy, study: BratsStudy, tmp_path: Path
) -> None:
    cache = InstanceCache(tmp_path / "cache")
    client = DicomwebClient(_config(f"{proxy.url}/dicom-web"))
    proxy.inject(cut=2, match=r"/series/[0-9.]+$")  # the series retrievals, not metadata
    pull_studies(client, [study.study_uid], rules=_rules(), cache=cache)  # type: ignore[arg-type]
    assert proxy.faults()["cut"] == 2
    _assert_complete(cache, study)


@pytest.mark.realdata
def test_persistent_503_fails_clearly_then_the_rerun_completes(
    proxy: FaultProxy, study: BratsStudy, tmp_path: Path
) -> None:
    cache = InstanceCache(tmp_path / "cache")
    client = DicomwebClient(_config(f"{proxy.url}/dicom-web"))
    proxy.inject(status=503, count=100)
    with pytest.raises(PacsError, match=r"failed 4 times, last: HTTP 503") as caught:
        pull_studies(client, [study.study_uid], rules=_rules(), cache=cache)  # type: ignore[arg-type]
    assert "rerun" in str(caught.value)
    assert _leftovers(cache.root) == []
    proxy.inject(status=503, count=0)  # the server is back
    pull_studies(client, [study.study_uid], rules=_rules(), cache=cache)  # type: ignore[arg-type]
    _assert_complete(cache, study)


@pytest.mark.realdata
@pytest.mark.slow
def test_orthanc_stopped_mid_run_then_back(
    orthanc: OrthancServer, study: BratsStudy, tmp_path: Path
) -> None:
    cache = InstanceCache(tmp_path / "cache")
    client = DicomwebClient(
        _config(
            orthanc.dicomweb_url,
            retry=RetryPolicy(attempts=8, backoff_seconds=0.25, max_backoff_seconds=4),
        )
    )
    restarted = threading.Event()

    def stop_after_first_series(_text: str) -> None:
        if restarted.is_set() or orthanc.process is None:
            return
        orthanc.stop()  # the PACS goes down between two series ...

        def back() -> None:
            orthanc.start()  # ... and comes back while the client is backing off
            restarted.set()

        threading.Timer(1.0, back).start()

    try:
        result = pull_studies(
            client,
            [study.study_uid],
            rules=_rules(),  # type: ignore[arg-type]
            cache=cache,
            progress=stop_after_first_series,
        )
    finally:
        restarted.wait(60)
        if orthanc.process is None:
            orthanc.start()
    assert restarted.is_set()
    assert {s.role for s in result.series} == {"flair", "t1c"}
    _assert_complete(cache, study)


@pytest.mark.realdata
def test_orthanc_down_is_a_clear_error_and_nothing_half_written(
    study: BratsStudy, tmp_path: Path
) -> None:
    cache = InstanceCache(tmp_path / "cache")
    config = _config(f"http://127.0.0.1:{free_port()}/dicom-web")  # nobody listens there
    with pytest.raises(PacsError, match=r"failed 4 times, last: ConnectionError") as caught:
        pull_studies(DicomwebClient(config), [study.study_uid], rules=_rules(), cache=cache)  # type: ignore[arg-type]
    assert config.safe_url in str(caught.value)
    assert _leftovers(cache.root) == []
