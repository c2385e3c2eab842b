"""Kill-and-resume: SIGKILL the batch CLI at random moments, rerun, compare to a clean run.

Three real sts CT series (with their RTSTRUCTs, as symlinks) go through the
nodule bundle. A reference run goes uninterrupted. Another output folder gets
runs killed with SIGKILL after random delays (seeded), then one run to
completion. After every kill the report files must parse (they are written
atomically); at the end every output must be valid and equal the reference:
mask voxels, ``lesions.json`` (minus times), the SEG's pixel data and UIDs.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from monai_tumor.pipeline.outputs import MANIFEST_NAME, completed_manifest
from tests.support.batch_export import link_sts_ct

NODULE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"
CASES = ("STS_001", "STS_002", "STS_003")
KILLS = 4


def _command(export: Path, out: Path) -> list[str]:
    script = "from monai_tumor.cli.main import app; app()"
    return [
        sys.executable,
        "-c",
        script,
        "batch",
        str(export),
        "--bundle",
        str(NODULE),
        "--out",
        str(out),
        "--seeds-from-rtstruct",
        "--no-progress",
        "--device",
        "cpu",
        "--workers",
        "2",
    ]


def _run(export: Path, out: Path) -> float:
    start = time.monotonic()
    done = subprocess.run(_command(export, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.monotonic() - start


def _check_report(out: Path) -> None:
    """The report files, if present, are complete (atomic writes)."""
    if (out / "summary.json").exists():
        json.loads((out / "summary.json").read_text())
    if (out / "summary.csv").exists():
        with open(out / "summary.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows and all(len(r) == len(rows[0]) for r in rows)
    if (out / "index.html").exists():
        assert (out / "index.html").read_text().rstrip().endswith("</html>")


def _outputs(out: Path) -> dict[str, dict[str, Any]]:
    """Per series folder: the comparable content of every output (validating each file)."""
    summary = json.loads((out / "summary.json").read_text())
    found: dict[str, dict[str, Any]] = {}
    for row in summary["series"]:
        assert row["status"] == "done", row
        folder = out / row["folder"]
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        assert completed_manifest(folder, manifest["cache_key"]) is not None
        assert not [p for p in folder.iterdir() if ".tmp" in p.name]
        seg = pydicom.dcmread(folder / "seg.dcm")
        with Image.open(folder / "overlay.png") as png:
            png.load()
        lesions = json.loads((folder / "lesions.json").read_text())
        mask = nib.Nifti1Image.from_filename(folder / "mask.nii.gz")
        found[row["folder"]] = {
            "mask": np.asarray(mask.dataobj),
            "affine": np.asarray(mask.affine),
            "lesions": lesions,
            "seg_pixels": seg.pixel_array,
            "seg_uids": (str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID)),
            "cache_key": manifest["cache_key"],
        }
    return found


@pytest.mark.realdata
@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(data_dir: Path, tmp_path: Path) -> None:
    export = tmp_path / "export"
    link_sts_ct(data_dir, export, CASES)
    reference_out, killed_out = tmp_path / "reference", tmp_path / "killed"
    duration = _run(export, reference_out)
    reference = _outputs(reference_out)
    assert len(reference) == len(CASES)

    rng = random.Random(20261129)
    for _ in range(KILLS):
        process = subprocess.Popen(
            _command(export, killed_out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.3 * duration, duration))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        _check_report(killed_out)
    _run(export, killed_out)
    resumed = _outputs(killed_out)

    assert resumed.keys() == reference.keys()
    for folder, want in reference.items():
        got = resumed[folder]
        np.testing.assert_array_equal(got["mask"], want["mask"])
        np.testing.assert_allclose(got["affine"], want["affine"])
        assert got["lesions"] == want["lesions"]  # lesions.json holds no times
        np.testing.assert_array_equal(got["seg_pixels"], want["seg_pixels"])
        assert got["seg_uids"] == want["seg_uids"] and got["cache_key"] == want["cache_key"]
