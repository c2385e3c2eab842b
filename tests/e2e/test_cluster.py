"""Batch on a real Dask cluster: LocalCluster, scheduler + worker processes, kills, reruns.

No mocks: every test starts real Dask processes (a ``LocalCluster``, or ``dask scheduler`` and
``dask worker`` subprocesses on free loopback ports) and SIGKILLs real processes. Synthetic
exports with the ``DyingSegmenter`` double test the fault handling in seconds; the real nodule
bundle on real CT shows the cluster run equals the single-machine run voxel for voxel.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_tumor.errors import ConfigError
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.pipeline.batch import (
    BatchOptions,
    BatchResult,
    SeriesRecord,
    SeriesStatus,
    run_batch,
)
from monai_tumor.pipeline.cluster import DaskOptions, cluster_options, parse_resources
from monai_tumor.pipeline.outputs import MANIFEST_NAME, completed_manifest
from tests.support.batch_export import link_sts_ct
from tests.support.dicom_factory import lps_affine, write_series
from tests.support.pipeline_doubles import DyingSegmenter, ThresholdSegmenter, fake_bundle_info

REPO = Path(__file__).resolve().parents[2]
NODULE = REPO / "bundles" / "lung_nodule_ct"
RULES = {
    "selections": [
        {"name": "ct", "conditions": {"Modality": "(?i)^CT$", "NumberOfSlices": [4, None]}}
    ]
}


@pytest.fixture
def fake_bundle(tmp_path: Path) -> BundleInfo:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    return fake_bundle_info(tmp_path, selection_rules=rules)


def _export(root: Path, values: list[int]) -> dict[int, str]:
    """One study with one small CT per value (the value is the lesion's intensity)."""
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    uids = {}
    for value in values:
        stored = np.zeros((16, 14, 6), dtype=np.int16)
        stored[4:9, 3:8, 1:4] = value
        files = write_series(root / f"ct{value}", stored, affine_lps=aff)
        uids[value] = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    return uids


def _by_value(result: BatchResult, uids: dict[int, str]) -> dict[int, SeriesRecord]:
    by_uid = {r.series_instance_uid: r for r in result.records}
    return {value: by_uid[uid] for value, uid in uids.items()}


def _assert_outputs_complete(out: Path) -> None:
    """Every done series has a complete, verified output folder and no temporary file."""
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["series"]:
        if row["status"] != "done":
            continue
        folder = out / row["folder"]
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        assert completed_manifest(folder, manifest["cache_key"]) is not None, row
        assert not [p for p in folder.iterdir() if ".tmp" in p.name]


# --------------------------------------------------------------------------- options


def test_cluster_options_from_the_command_line() -> None:
    local = cluster_options(cluster="local:3", worker_resources="GPU=1", allowed_failures=1)
    assert local.local_workers == 3 and local.scheduler is None
    assert local.worker_resources == {"GPU": 1.0} and local.allowed_failures == 1
    remote = cluster_options(scheduler="tcp://10.0.0.5:8786")
    assert remote.scheduler == "tcp://10.0.0.5:8786" and remote.local_workers is None
    assert parse_resources("GPU=1,MEM=4e9") == {"GPU": 1.0, "MEM": 4e9}
    for bad in (
        {"cluster": "local:0"},
        {"cluster": "local"},
        {"scheduler": "10.0.0.5:8786"},
        {"scheduler": "tcp://a:1", "cluster": "local:2"},
        {"worker_resources": "GPU=1"},
        {"cluster": "local:2", "worker_resources": "GPU"},
    ):
        with pytest.raises(ConfigError):
            cluster_options(**bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- LocalCluster


def test_local_cluster_retries_a_killed_worker_and_fails_a_poison_series(
    tmp_path: Path, fake_bundle: BundleInfo
) -> None:
    """300 runs once; 301 kills its worker once, then runs; 777 kills every worker it meets."""
    uids = _export(tmp_path / "export", [300, 301, 777])
    out = tmp_path / "out"
    markers = tmp_path / "markers"
    markers.mkdir()
    # One thread per worker: a worker runs one series at a time and the scheduler queues the
    # rest, so a death is counted only against the series that was running in that worker.
    options = BatchOptions(
        progress=False,
        cluster=DaskOptions(
            local_workers=2, threads_per_worker=1, allowed_failures=1, dashboard_address=None
        ),
    )
    result = run_batch(
        tmp_path / "export",
        out,
        bundle=fake_bundle,
        options=options,
        segmenter=DyingSegmenter(poison=[777], die_once=[301], marker_dir=markers),
    )
    rec = _by_value(result, uids)
    # The healthy series never ran on a worker that died: one attempt.
    assert rec[300].status is SeriesStatus.DONE and rec[300].attempts == 1
    assert rec[301].status is SeriesStatus.DONE and rec[301].attempts == 2
    poison = rec[777]
    assert poison.status is SeriesStatus.FAILED
    assert poison.attempts == 2 and poison.error_type == "KilledWorker"
    assert "worker died while running this series, 2 time(s)" in poison.reason
    assert result.exit_code == 1
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["series_instance_uid"]: r for r in summary["series"]}
    assert rows[uids[301]]["attempts"] == 2 and rows[uids[301]]["worker"].startswith("tcp://")
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert "worker" in header and "attempts" in header
    _assert_outputs_complete(out)


# --------------------------------------------------------------------------- real processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dask(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    # The workers unpickle the test doubles and the package from this checkout.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(count, timeout=120)


class DaskProcesses:
    """``dask scheduler`` and ``dask worker --no-nanny`` processes on loopback ports."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, workers: int, *, resources: dict[int, str] | None = None
    ) -> tuple[str, dict[str, subprocess.Popen[bytes]]]:
        """Start a scheduler and ``workers`` workers (worker i with ``--resources resources[i]``).

        Returns the scheduler's address and the worker processes by address, in start order.
        """
        port = _free_port()
        address = f"tcp://127.0.0.1:{port}"
        self.started.append(
            _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        )
        by_address = {}
        for i in range(workers):
            worker_port = _free_port()
            extra = ("--resources", resources[i]) if resources and i in resources else ()
            process = _dask(
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--worker-port",
                str(worker_port),
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--death-timeout",
                "60",
                *extra,
            )
            self.started.append(process)
            by_address[f"tcp://127.0.0.1:{worker_port}"] = process
        _wait_for_workers(address, workers)
        return address, by_address

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)


@pytest.fixture
def dask_processes() -> Iterator[DaskProcesses]:
    """Dask processes for one test (one that kills some of them)."""
    processes = DaskProcesses()
    yield processes
    processes.stop()


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[tuple[str, str, str]]:
    """A scheduler with a worker advertising ``GPU=1`` and one without, shared by the tests
    that kill no worker (each worker imports torch once for all of them).

    Yields the scheduler's address, the resourced worker's and the other worker's.
    """
    processes = DaskProcesses()
    try:
        address, workers = processes.start(2, resources={0: "GPU=1"})
        gpu, plain = workers
        yield address, gpu, plain
    finally:
        processes.stop()


def _wait_for_done(
    out: Path, *, at_least: int, process: subprocess.Popen[bytes] | None = None
) -> list[dict[str, Any]]:
    """Rows of summary.json once ``at_least`` series are done (polling the atomic report)."""
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the client exited early ({process.returncode})")
        try:
            rows = json.loads((out / "summary.json").read_text())["series"]
        except (OSError, ValueError, KeyError):
            rows = []
        done = [r for r in rows if r["status"] == "done"]
        if len(done) >= at_least:
            return done
        time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_sigkilled_mid_run_loses_nothing(
    tmp_path: Path, fake_bundle: BundleInfo, dask_processes: DaskProcesses
) -> None:
    values = [300, 310, 320, 330]
    uids = _export(tmp_path / "export", values)
    out = tmp_path / "out"
    address, workers = dask_processes.start(2)
    results: list[BatchResult] = []
    run = threading.Thread(
        target=lambda: results.append(
            run_batch(
                tmp_path / "export",
                out,
                bundle=fake_bundle,
                options=BatchOptions(progress=False, cluster=DaskOptions(scheduler=address)),
                segmenter=DyingSegmenter(pause_s=2.0),
            )
        )
    )
    run.start()
    first = _wait_for_done(out, at_least=1)[0]
    os.kill(workers[first["worker"]].pid, signal.SIGKILL)
    run.join(timeout=600)
    (result,) = results
    rec = _by_value(result, uids)
    assert all(r.status is SeriesStatus.DONE for r in rec.values()), rec
    assert {r.worker for r in rec.values()} == set(workers)
    _assert_outputs_complete(out)
    masks = [
        np.asarray(nib.Nifti1Image.from_filename(out / str(r.folder) / "mask.nii.gz").dataobj)
        for r in rec.values()
    ]
    assert all(int(m.sum()) == 5 * 5 * 3 for m in masks)


_CLIENT = """
import sys
from pathlib import Path
from tests.support.pipeline_doubles import DyingSegmenter, fake_bundle_info
from monai_tumor.pipeline.batch import BatchOptions, run_batch
from monai_tumor.pipeline.cluster import DaskOptions

export, out, bundle_root, address = sys.argv[1:]
bundle = fake_bundle_info(Path(bundle_root), selection_rules=Path(bundle_root) / "rules.json")
run_batch(export, out, bundle=bundle, segmenter=DyingSegmenter(pause_s=2.0),
          options=BatchOptions(progress=False, cluster=DaskOptions(scheduler=address)))
"""


@pytest.mark.slow
def test_a_killed_client_resumes_without_redoing_finished_series(
    tmp_path: Path, fake_bundle: BundleInfo, shared_cluster: tuple[str, str, str]
) -> None:
    values = [300, 310, 320, 330, 340]
    uids = _export(tmp_path / "export", values)
    out = tmp_path / "out"
    address, _, _ = shared_cluster
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLIENT,
            str(tmp_path / "export"),
            str(out),
            str(fake_bundle.root),
            address,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    finished = _wait_for_done(out, at_least=2, process=client)
    client.kill()
    client.wait(timeout=60)
    manifests = {
        r["series_instance_uid"]: (out / r["folder"] / MANIFEST_NAME).stat().st_mtime_ns
        for r in finished
    }

    rerun = run_batch(
        tmp_path / "export",
        out,
        bundle=fake_bundle,
        options=BatchOptions(progress=False, cluster=DaskOptions(scheduler=address)),
        segmenter=ThresholdSegmenter(),
    )
    by_uid = {r.series_instance_uid: r for r in rerun.records}
    assert all(r.status is SeriesStatus.DONE for r in rerun.records)
    assert set(by_uid) == set(uids.values())
    for uid, mtime in manifests.items():
        assert by_uid[uid].reused and by_uid[uid].worker is None, by_uid[uid]
        record_folder = by_uid[uid].folder
        assert record_folder is not None
        assert (out / record_folder / MANIFEST_NAME).stat().st_mtime_ns == mtime
    assert any(not r.reused for r in rerun.records)  # the rest was run by the rerun
    _assert_outputs_complete(out)


@pytest.mark.slow
def test_worker_resources_send_every_series_to_the_resourced_worker(
    tmp_path: Path, fake_bundle: BundleInfo, shared_cluster: tuple[str, str, str]
) -> None:
    """``--worker-resources GPU=1``: only the worker started with ``--resources GPU=1`` runs."""
    values = [300, 310, 320, 330]
    uids = _export(tmp_path / "export", values)
    out = tmp_path / "out"
    address, gpu, plain = shared_cluster
    # The command line's parsing of --scheduler / --worker-resources.
    cluster = cluster_options(scheduler=address, worker_resources="GPU=1")
    result = run_batch(
        tmp_path / "export",
        out,
        bundle=fake_bundle,
        options=BatchOptions(progress=False, cluster=cluster),
        segmenter=ThresholdSegmenter(),
    )
    assert result.exit_code == 0
    rows = json.loads((out / "summary.json").read_text())["series"]
    assert {r["series_instance_uid"] for r in rows} == set(uids.values())
    assert all(r["status"] == "done" for r in rows), rows
    assert {r["worker"] for r in rows} == {gpu}, f"none on {plain}"
    _assert_outputs_complete(out)


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
def test_batch_command_with_worker_resources_on_real_ct(
    data_dir: Path, tmp_path: Path, shared_cluster: tuple[str, str, str]
) -> None:
    """``batch --scheduler ... --worker-resources GPU=1``: the GPU=1 worker segments a real CT."""
    from typer.testing import CliRunner

    from monai_tumor.cli.main import app

    address, gpu, plain = shared_cluster
    export = link_sts_ct(data_dir, tmp_path / "export", ("STS_002",))
    out = tmp_path / "out"
    args = ["batch", str(export), "--bundle", str(NODULE), "--out", str(out)]
    args += ["--index", str(tmp_path / "index.sqlite"), "--seeds-from-rtstruct"]
    args += ["--device", "cpu", "--no-viewer", "--no-features", "--no-progress"]
    args += ["--scheduler", address, "--worker-resources", "GPU=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "summary.json").read_text())["series"]
    assert row["status"] == "done" and row["lesion_count"] >= 1, row
    assert row["worker"] == gpu, f"expected the GPU=1 worker, not {row['worker']} ({plain})"
    _assert_outputs_complete(out)


@pytest.mark.realdata
@pytest.mark.slow
def test_local_cluster_equals_the_single_machine_run_on_real_ct(
    data_dir: Path, tmp_path: Path
) -> None:
    """Two sts studies (CT + RTSTRUCT, and an MR that is skipped) through the nodule bundle."""
    import highdicom as hd

    export = link_sts_ct(data_dir, tmp_path / "export", ("STS_001", "STS_002"))
    (export / "STS_001_mr").mkdir()
    for f in sorted((data_dir / "sts" / "STS_001" / "MR_T1" / "dicom" / "image").iterdir()):
        (export / "STS_001_mr" / f.name).symlink_to(f)

    def run(out: Path, cluster: DaskOptions | None) -> BatchResult:
        options = BatchOptions(
            progress=False,
            seeds_from_export=True,
            device="cpu",
            index_path=tmp_path / "index.sqlite",
            cluster=cluster,
        )
        return run_batch(export, out, bundle=NODULE, options=options)

    single = run(tmp_path / "single", None)
    dask = run(tmp_path / "dask", DaskOptions(local_workers=2, dashboard_address=None))
    assert [r.status for r in single.records].count(SeriesStatus.DONE) == 2
    assert {r.worker for r in single.records if r.status is SeriesStatus.DONE} == {"local"}
    workers = {r.worker for r in dask.records if r.status is SeriesStatus.DONE}
    assert all(w is not None and w.startswith("tcp://") for w in workers)
    for a, b in zip(single.records, dask.records, strict=True):
        assert (a.series_instance_uid, a.status, a.reason, a.folder) == (
            b.series_instance_uid,
            b.status,
            b.reason,
            b.folder,
        )
        assert (a.lesion_count, a.total_volume_ml) == (b.lesion_count, b.total_volume_ml)
        if a.status is not SeriesStatus.DONE:
            continue
        assert a.folder is not None
        one, two = tmp_path / "single" / a.folder, tmp_path / "dask" / a.folder
        mask_a = nib.Nifti1Image.from_filename(one / "mask.nii.gz")
        mask_b = nib.Nifti1Image.from_filename(two / "mask.nii.gz")
        np.testing.assert_array_equal(np.asarray(mask_a.dataobj), np.asarray(mask_b.dataobj))
        np.testing.assert_array_equal(mask_a.affine, mask_b.affine)
        seg_a, seg_b = hd.seg.segread(one / "seg.dcm"), hd.seg.segread(two / "seg.dcm")
        np.testing.assert_array_equal(seg_a.pixel_array, seg_b.pixel_array)
        frames = [
            [
                (
                    tuple(f.PlanePositionSequence[0].ImagePositionPatient),
                    f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
                )
                for f in seg.PerFrameFunctionalGroupsSequence
            ]
            for seg in (seg_a, seg_b)
        ]
        assert frames[0] == frames[1]
        assert seg_a.SOPInstanceUID == seg_b.SOPInstanceUID
        # Every measurement, MIRP's sampled Moran's I / Geary's C included (seeded by the
        # lesion's crop, not by the process).
        lesions = [json.loads((d / "lesions.json").read_text()) for d in (one, two)]
        assert lesions[0] == lesions[1]
    _assert_outputs_complete(tmp_path / "dask")
