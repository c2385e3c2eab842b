"""``monai-tumor batch`` / ``infer``: help, a real run, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monai_tumor.cli.main import app

NODULE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"
runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "batch",
            [
                *("--bundle", "--out", "--rules", "--workers", "--device"),
                *("--seeds-from-rtstruct", "--scheduler", "--cluster"),
                *("--worker-resources", "--allowed-failures"),
            ],
        ),
        ("infer", ["--bundle", "--out", "--device", "--seeds", "--seeds-from"]),
    ],
)
def test_help_lists_the_options(command: str, options: list[str]) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "220", "NO_COLOR": "1"})
    assert result.exit_code == 0
    for option in options:
        assert option in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--cluster", "local:0"],
        ["--scheduler", "localhost:8786"],
        ["--worker-resources", "GPU=1"],
        ["--cluster", "local:2", "--worker-resources", "GPU"],
    ],
    ids=["no-workers", "no-scheme", "resources-alone", "bad-resources"],
)
def test_bad_cluster_options_are_config_errors(args: list[str], tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["batch", str(tmp_path), "--bundle", str(NODULE), "--out", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 50, result.output


def test_missing_export_is_an_ingest_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["batch", str(tmp_path / "nope"), "--bundle", str(NODULE), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 10
    assert "not a folder" in result.output


def _export(data_dir: Path, root: Path, *, drop_one: bool) -> None:
    """sts STS_001 CT and its RTSTRUCT as symlinks (optionally with a middle slice missing)."""
    series = data_dir / "sts" / "STS_001" / "CT" / "dicom"
    files = sorted((series / "image").iterdir())
    if drop_one:
        files.pop(len(files) // 2)
    (root / "img").mkdir(parents=True)
    for i, f in enumerate(files):
        (root / "img" / f"f{i:04d}").symlink_to(f)
    (root / "RS").symlink_to(series / "mask" / "RS.dcm")


@pytest.mark.realdata
@pytest.mark.slow
def test_batch_run_then_rerun(data_dir: Path, tmp_path: Path) -> None:
    export, out = tmp_path / "export", tmp_path / "out"
    _export(data_dir, export, drop_one=False)
    args = ["batch", str(export), "--bundle", str(NODULE), "--out", str(out)]
    args += ["--seeds-from-rtstruct", "--no-progress", "--device", "cpu"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "1 done (0 reused), 0 skipped, 0 failed" in first.output
    assert first.output.strip().endswith(str(out / "index.html"))
    # Quiet terminal: the summary and the report's path, no library warnings; those
    # (and the package's INFO records) are in the run's log file.
    assert len(first.output.strip().splitlines()) == 2, first.output
    assert "Warning" not in first.output and "WARNING" not in first.output
    assert "done in" in (out / "monai-tumor.log").read_text()
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "1 done (1 reused)" in second.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["series"][0]["status"] == "done" and summary["series"][0]["reused"]


@pytest.mark.realdata
@pytest.mark.slow
def test_batch_exit_code_when_a_series_fails(data_dir: Path, tmp_path: Path) -> None:
    """A CT with a missing slice, let through by lenient rules, fails to read: exit code 11."""
    export, out = tmp_path / "export", tmp_path / "out"
    _export(data_dir, export, drop_one=True)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"selections": [{"name": "ct", "conditions": {"Modality": "CT"}}]}))
    args = ["batch", str(export), "--bundle", str(NODULE), "--out", str(out), "--rules", str(rules)]
    result = runner.invoke(app, [*args, "--seeds-from-rtstruct", "--no-progress"])
    assert result.exit_code == 11, result.output  # InvalidSeriesError
    assert "1 failed" in result.output
    row = json.loads((out / "summary.json").read_text())["series"][0]
    assert row["status"] == "failed" and row["error_type"] == "InvalidSeriesError"
    assert "EXPORT/" in row["reason"] and str(export) not in row["reason"]


@pytest.mark.realdata
@pytest.mark.slow
def test_infer_command(data_dir: Path, tmp_path: Path) -> None:
    series = data_dir / "sts" / "STS_003" / "CT" / "dicom"
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "infer",
            str(series / "image"),
            "--bundle",
            str(NODULE),
            "--out",
            str(out),
            "--seeds-from",
            str(series / "mask" / "RS.dcm"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    # the sarcoma is larger than the nodule bundle's fixed box: written, and flagged truncated
    assert "done + review: SEG written" in result.output
    assert "truncated" in result.output
    assert {p.name for p in out.iterdir()} >= {"mask.nii.gz", "seg.dcm", "lesions.json"}
    lesions = json.loads((out / "lesions.json").read_text())["lesions"]
    assert any(lesion["truncated"] for lesion in lesions)
