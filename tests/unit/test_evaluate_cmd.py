"""`monai-tumor evaluate` and `monai-tumor bundle verify` through the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from monai_tumor.cli.main import app

runner = CliRunner()


def _affine() -> np.ndarray:
    affine = np.diag([-0.8, -0.8, 3.0, 1.0])
    affine[:3, 3] = (5.0, 6.0, -7.0)
    return affine


def _labels(shift: int = 0) -> np.ndarray:
    a = np.zeros((32, 32, 12), np.uint8)
    a[8 + shift : 24 + shift, 8:24, 3:9] = 2  # edema
    a[12 + shift : 20 + shift, 12:20, 4:8] = 4  # enhancing
    return a


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_evaluate_writes_csv_and_report(tmp_path: Path) -> None:
    pred = _save(tmp_path / "pred" / "c1.nii.gz", _labels(shift=1), _affine())
    ref = _save(tmp_path / "ref" / "c1.nii.gz", _labels(), _affine())
    out = tmp_path / "metrics.csv"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(pred.parent),
            str(ref.parent),
            "--out",
            str(out),
            "--labels",
            "WT=2,4;ET=4",
            "--report",
            str(tmp_path / "run.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["class"]) for r in rows] == [("c1", "WT"), ("c1", "ET")]
    assert float(rows[0]["dice"]) == pytest.approx(15 / 16)
    assert float(rows[1]["hd95_mm"]) == pytest.approx(0.8, abs=1e-5)
    report = json.loads((tmp_path / "run.json").read_text())
    assert len(report["rows"]) == 2


def test_evaluate_misaligned_grid_exits_nonzero(tmp_path: Path) -> None:
    shifted = _affine()
    shifted[2, 3] += 3.0
    pred = _save(tmp_path / "p.nii.gz", _labels(), shifted)
    ref = _save(tmp_path / "r.nii.gz", _labels(), _affine())
    result = runner.invoke(app, ["evaluate", str(pred), str(ref), "--out", str(tmp_path / "m.csv")])
    assert result.exit_code == 11  # InvalidSeriesError
    assert not (tmp_path / "m.csv").exists()


def test_evaluate_bad_labels_exits_config_error(tmp_path: Path) -> None:
    pred = _save(tmp_path / "p.nii.gz", _labels(), _affine())
    result = runner.invoke(app, ["evaluate", str(pred), str(pred), "--labels", "WT=x"])
    assert result.exit_code == 50


@pytest.mark.slow
def test_bundle_verify_cli_json_and_exit_code(tmp_path: Path) -> None:
    from tests.support.tiny_bundle import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "b")
    ok = runner.invoke(app, ["bundle", "verify", str(bundle), "--no-smoke", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["passed"] is True
    shutil.rmtree(bundle / "docs")
    bad = runner.invoke(app, ["bundle", "verify", str(bundle), "--no-smoke"])
    assert bad.exit_code == 1
    assert "required_files" in bad.output and "FAILED" in bad.output
