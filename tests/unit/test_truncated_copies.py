"""Truncated files: an intact copy is used; an only copy is a missing slice, per the policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from monai_tumor.cli.main import app
from monai_tumor.errors import EXIT_CODES, IngestError
from monai_tumor.ingest.enums import SkipReason
from monai_tumor.ingest.headers import inspect_file
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.reader import ReadOptions, read_series
from monai_tumor.ingest.records import InstanceHeader
from monai_tumor.ingest.scan import scan_export
from monai_tumor.ingest.selection import select_series
from tests.support.dicom_factory import lps_affine, write_series

KEY = b"truncation-test-key-0123"


def _export(root: Path, *, transfer_syntax: str = "1.2.840.10008.1.2.1") -> list[Path]:
    """A 6-slice CT, and in another folder (sorting first) a cut copy of its slice 2."""
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    stored = np.arange(16 * 14 * 6, dtype=np.int16).reshape(16, 14, 6)
    files = write_series(
        root / "series", stored, affine_lps=aff, transfer_syntax=pydicom.uid.UID(transfer_syntax)
    )
    junk = root / "a_junk"
    junk.mkdir()
    data = files[2].read_bytes()
    (junk / "cut.dcm").write_bytes(data[: len(data) - 200])
    return files


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
def test_header_scan_knows_a_file_is_truncated(tmp_path: Path, syntax: str) -> None:
    files = _export(tmp_path, transfer_syntax=syntax)  # native, and RLE (encapsulated)
    cut = inspect_file(tmp_path / "a_junk" / "cut.dcm", patient_key=KEY)
    intact = inspect_file(files[2], patient_key=KEY)
    assert isinstance(cut, InstanceHeader) and isinstance(intact, InstanceHeader)
    assert intact.truncated == ""
    assert "the file holds" in cut.truncated or "without its sequence delimiter" in cut.truncated


def test_the_intact_copy_is_used_and_the_cut_one_listed(tmp_path: Path) -> None:
    files = _export(tmp_path)
    index_path = tmp_path / "index.sqlite"
    result = scan_export(tmp_path, index_path=index_path, workers=1, progress=False)
    (series,) = result.series
    assert series.number_of_slices == 6 and series.uniform
    assert series.truncated_instances == 0
    (skipped,) = [s for s in result.skipped if s.path.name == "cut.dcm"]
    assert skipped.reason is SkipReason.TRUNCATED
    assert "truncated copy" in skipped.detail and "the file holds" in skipped.detail
    with SeriesIndex(index_path) as index:
        chosen = index.files_for_series(series.series_instance_uid)
    assert sorted(chosen) == sorted(files)
    volume = read_series(chosen)
    assert volume.shape[-1] == 6


def test_an_instance_with_no_intact_copy_fails_naming_the_file(tmp_path: Path) -> None:
    files = _export(tmp_path)
    files[2].unlink()  # the cut copy is all there is of slice 2
    index_path = tmp_path / "index.sqlite"
    result = scan_export(tmp_path, index_path=index_path, workers=1, progress=False)
    (series,) = result.series
    # known at scan time, from the headers
    assert series.truncated_instances == 1
    assert series.to_dict()["truncated_instances"] == 1
    table = CliRunner().invoke(
        app, ["scan", str(tmp_path), "--index", str(index_path)], env={"COLUMNS": "250"}
    )
    assert table.exit_code == 0 and "6 (1 truncated)" in table.output
    complete = {"selections": [{"name": "ct", "conditions": {"TruncatedInstances": 0}}]}
    assert select_series([series], complete).missing == ("ct",)
    with SeriesIndex(index_path) as index:
        chosen = index.files_for_series(series.series_instance_uid)
    assert tmp_path / "a_junk" / "cut.dcm" in chosen
    with pytest.raises(IngestError, match=r"cut\.dcm.*truncated"):
        read_series(chosen)


def _index_files(root: Path) -> list[Path]:
    index_path = root / "index.sqlite"
    (series,) = scan_export(root, index_path=index_path, workers=1, progress=False).series
    with SeriesIndex(index_path) as index:
        return index.files_for_series(series.series_instance_uid)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
def test_an_only_truncated_copy_is_a_missing_slice_under_resample(
    tmp_path: Path, syntax: str
) -> None:
    files = _export(tmp_path, transfer_syntax=syntax)
    intact = read_series(files)
    files[2].unlink()  # the cut copy is all there is of slice 2
    cut = tmp_path / "a_junk" / "cut.dcm"
    volume = read_series(_index_files(tmp_path), options=ReadOptions(nonuniform="resample"))
    # the scanner's grid: same shape and affine as the intact series
    assert volume.shape == intact.shape
    np.testing.assert_allclose(np.asarray(volume.affine), np.asarray(intact.affine), atol=1e-9)
    # the slices that are there are the scanner's; the missing one is interpolated
    kept = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(np.asarray(volume[..., kept]), np.asarray(intact[..., kept]))
    expected = (np.asarray(intact[..., 1]) + np.asarray(intact[..., 3])) / 2
    np.testing.assert_allclose(np.asarray(volume[..., 2]), expected)
    assert volume.meta["resampled"] is True
    assert volume.meta["sop_instance_uids"][2] == ""
    assert volume.meta["sop_instance_uids"][:2] == intact.meta["sop_instance_uids"][:2]
    (skipped,) = volume.meta["skipped_files"]
    assert skipped["path"] == str(cut) and skipped["reason"] == SkipReason.TRUNCATED.value
    assert "only copy of its instance" in skipped["detail"] and "missing slice" in skipped["detail"]


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
def test_an_only_truncated_copy_fails_the_strict_policy_naming_the_file(
    tmp_path: Path, syntax: str
) -> None:
    files = _export(tmp_path, transfer_syntax=syntax)
    files[2].unlink()
    with pytest.raises(IngestError, match=r"a_junk/cut\.dcm: the file is truncated") as caught:
        read_series(_index_files(tmp_path), options=ReadOptions(nonuniform="error"))
    assert "only copy of its instance" in str(caught.value)
    assert "nonuniform='resample'" in str(caught.value)


@pytest.mark.parametrize("policy", ["error", "resample"])
def test_a_truncated_copy_beside_the_intact_one_is_left_out_under_any_policy(
    tmp_path: Path, policy: str
) -> None:
    files = _export(tmp_path)
    cut = tmp_path / "a_junk" / "cut.dcm"
    intact = read_series(files)
    volume = read_series([cut, *files], options=ReadOptions(nonuniform=policy))
    np.testing.assert_array_equal(np.asarray(volume), np.asarray(intact))
    assert volume.meta["resampled"] is False
    (skipped,) = volume.meta["skipped_files"]
    assert skipped["path"] == str(cut)
    assert skipped["detail"].startswith(f"truncated copy of the instance in {files[2]}")


def test_a_truncated_end_slice_shortens_the_stack(tmp_path: Path) -> None:
    files = _export(tmp_path)
    intact = read_series(files)
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) - 100])
    volume = read_series(files, options=ReadOptions(nonuniform="resample"))
    assert volume.shape[-1] == 5  # nothing beyond the last slice to interpolate from
    np.testing.assert_allclose(np.asarray(volume.affine), np.asarray(intact.affine), atol=1e-9)
    np.testing.assert_array_equal(np.asarray(volume), np.asarray(intact[..., :5]))
    assert [s["path"] for s in volume.meta["skipped_files"]] == [str(files[5])]


def test_convert_lists_the_missing_slice_and_reports_it(tmp_path: Path) -> None:
    files = _export(tmp_path)
    files[2].unlink()
    series = tmp_path / "series"
    shutil.move(tmp_path / "a_junk" / "cut.dcm", series / "cut.dcm")
    out, report = tmp_path / "out" / "ct.nii.gz", tmp_path / "report.json"
    args = ["convert", str(series), str(out), "--report", str(report)]
    strict = CliRunner().invoke(app, args)
    assert (
        strict.exit_code == EXIT_CODES[IngestError]
        and "cut.dcm: the file is truncated" in strict.output
    )
    result = CliRunner().invoke(app, [*args, "--nonuniform", "resample"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"skipped {series / 'cut.dcm'}: truncated (" in result.output
    (listed,) = json.loads(report.read_text())["skipped_files"]
    assert listed["path"] == str(series / "cut.dcm") and listed["reason"] == "truncated"
    sidecar = json.loads(out.with_name("ct.json").read_text())
    assert sidecar["SkippedFiles"] == 1 and sidecar["Resampled"] is True
    assert sidecar["NumberOfSourceInstances"] == 5 and sidecar["ImageShape"][2] == 6


@pytest.mark.realdata
def test_a_real_series_with_a_truncated_slice(data_dir: Path, tmp_path: Path) -> None:
    """The JPEG 2000 CT (20 slices) with its 11th slice cut short, read as the policy says."""
    source = data_dir / "ct_jpeg2000" / "dicom"
    intact = read_series(source)
    copy = tmp_path / "ct"
    shutil.copytree(source, copy)
    k = 10  # found by position: this export's SOPInstanceUIDs are empty
    z = float(np.asarray(intact.meta["original_affine"])[2] @ [0, 0, k, 1])  # RAS S = LPS z
    (victim,) = [
        p
        for p in copy.iterdir()
        if abs(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) - z)
        < 1e-3
    ]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=rf"{victim.name}: the file is truncated"):
        read_series(copy)
    volume = read_series(copy, options=ReadOptions(nonuniform="resample"))
    assert volume.shape == intact.shape
    # the scanner's geometry: the affine of the intact read
    np.testing.assert_allclose(np.asarray(volume.affine), np.asarray(intact.affine), atol=1e-6)
    others = [i for i in range(intact.shape[-1]) if i != k]
    np.testing.assert_array_equal(np.asarray(volume[..., others]), np.asarray(intact[..., others]))
    expected = (np.asarray(intact[..., k - 1]) + np.asarray(intact[..., k + 1])) / 2
    np.testing.assert_allclose(np.asarray(volume[..., k]), expected, atol=1e-3)
    assert volume.meta["resampled"] is True
    (skipped,) = volume.meta["skipped_files"]
    assert skipped["path"] == str(victim) and skipped["reason"] == "truncated"
    assert "missing slice" in skipped["detail"]
