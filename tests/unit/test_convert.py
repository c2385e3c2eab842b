"""`monai-tumor convert`: a series folder or a SeriesInstanceUID to NIfTI + sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from monai_tumor.cli.main import app
from monai_tumor.export.convert import convert_series, sidecar_path_for

runner = CliRunner()

pytestmark = pytest.mark.realdata


def _identifiers(folder: Path) -> list[str]:
    first = next(p for p in sorted(folder.iterdir()) if p.is_file())
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    values = [str(ds.get("PatientID", "")), str(ds.get("PatientName", ""))]
    return [v for v in values if len(v) >= 3]


def _assert_sidecar_clean(sidecar: Path, identifiers: list[str]) -> dict[str, object]:
    text = sidecar.read_text()
    for ident in identifiers:
        assert ident.lower() not in text.lower(), f"identifier leaked into {sidecar.name}"
    for keyword in ("PatientID", "PatientName", "PatientBirthDate"):
        assert keyword not in text
    data: dict[str, object] = json.loads(text)
    return data


@pytest.mark.parametrize("case", ["STS_001/CT", "STS_002/MR_T1", "STS_003/PET"])
def test_sts_folder_matches_reference_nifti(data_dir: Path, tmp_path: Path, case: str) -> None:
    series = data_dir / "sts" / case / "dicom" / "image"
    out = tmp_path / "image.nii.gz"
    result = runner.invoke(app, ["convert", str(series), str(out)])
    assert result.exit_code == 0, result.output
    ours = nib.Nifti1Image.from_filename(out)
    ref = nib.Nifti1Image.from_filename(
        data_dir / "sts" / case / "nifti" / "image" / "image.nii.gz"
    )
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-4)
    sidecar = _assert_sidecar_clean(sidecar_path_for(out), _identifiers(series))
    assert sidecar["Modality"] in {"CT", "MR", "PT"}


def test_lung1_by_series_uid_through_the_index(data_dir: Path, tmp_path: Path) -> None:
    images = data_dir / "lung1" / "LUNG1-001" / "image"
    index = tmp_path / "index.sqlite"
    scanned = runner.invoke(app, ["scan", str(images), "--index", str(index), "--json"])
    assert scanned.exit_code == 0, scanned.output
    uid = str(pydicom.dcmread(next(images.iterdir()), stop_before_pixels=True).SeriesInstanceUID)
    out = tmp_path / "lung1.nii.gz"
    result = runner.invoke(app, ["convert", uid, str(out), "--index", str(index)])
    assert result.exit_code == 0, result.output
    img = nib.Nifti1Image.from_filename(out)
    assert img.shape == (512, 512, 134)
    np.testing.assert_allclose(img.header.get_zooms(), (0.9766, 0.9766, 3.0), atol=1e-3)
    # Same volume as converting the folder directly.
    direct = convert_series(images, tmp_path / "direct.nii.gz")
    np.testing.assert_array_equal(
        np.asarray(img.dataobj), np.asarray(nib.Nifti1Image.from_filename(direct.nifti).dataobj)
    )
    _assert_sidecar_clean(sidecar_path_for(out), _identifiers(images))


def test_unknown_uid_names_the_fix(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", "1.2.3.4.5", str(tmp_path / "x.nii.gz")])
    assert result.exit_code == 50
    assert "--index" in result.output


def _copy_with_rounded_positions(src: Path, dest: Path, *, decimals: int) -> list[Path]:
    """The real series with ImagePositionPatient stored rounded, as some exports do."""
    dest.mkdir()
    written = []
    for path in sorted(src.iterdir()):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [round(float(v), decimals) for v in ds.ImagePositionPatient]
        out = dest / path.name
        ds.save_as(out)
        written.append(out)
    return written


def test_real_pet_with_rounded_positions_converts(data_dir: Path, tmp_path: Path) -> None:
    # The STS GE PET (3.27 mm) with positions rounded to 0.1 mm: steps of 3.2..3.3 mm,
    # every slice within 0.06 mm of the uniform grid.
    case = data_dir / "sts" / "STS_003" / "PET"
    files = _copy_with_rounded_positions(case / "dicom" / "image", tmp_path / "pet", decimals=1)
    z = sorted(
        float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files
    )
    steps = np.diff(z)
    assert steps.min() < 3.25 and steps.max() > 3.29  # refused by a step-to-step test
    out = tmp_path / "pet.nii.gz"
    result = runner.invoke(app, ["convert", str(tmp_path / "pet"), str(out)])
    assert result.exit_code == 0, result.output
    ours = nib.Nifti1Image.from_filename(out)
    ref = nib.Nifti1Image.from_filename(case / "nifti" / "image" / "image.nii.gz")
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))
    np.testing.assert_allclose(ours.affine, ref.affine, atol=0.06)
    sidecar = _assert_sidecar_clean(sidecar_path_for(out), _identifiers(case / "dicom" / "image"))
    assert isinstance(sidecar["SliceResidualMM"], float)
    assert 0.01 < sidecar["SliceResidualMM"] <= 0.06

    files[len(files) // 2].unlink()  # a genuinely missing slice is still refused
    refused = runner.invoke(app, ["convert", str(tmp_path / "pet"), str(tmp_path / "gap.nii.gz")])
    assert refused.exit_code == 11, refused.output
    assert "gap" in refused.output
