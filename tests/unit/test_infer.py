"""infer_one: one DICOM series folder or NIfTI file -> the same outputs as batch."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_tumor.errors import ConfigError
from monai_tumor.export.seg import read_back_seg
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.pipeline.infer import infer_one
from monai_tumor.pipeline.outputs import MANIFEST_NAME
from tests.support.dicom_factory import lps_affine, write_series
from tests.support.pipeline_doubles import ThresholdSegmenter, fake_bundle_info

NODULE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"


@pytest.fixture
def fake_bundle(tmp_path: Path) -> BundleInfo:
    return fake_bundle_info(tmp_path)


def _stored() -> np.ndarray:
    stored = np.zeros((16, 14, 6), dtype=np.int16)
    stored[4:9, 3:8, 1:4] = 300
    return stored


def test_nifti_input_writes_everything_but_the_seg(tmp_path: Path, fake_bundle: BundleInfo) -> None:
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(_stored().astype(np.float32), affine), path)
    model = ThresholdSegmenter()
    out = tmp_path / "out"
    result = infer_one(path, bundle=fake_bundle, out_dir=out, segmenter=model)
    assert result.status == "done" and "NIfTI" in result.reason and "not written" in result.reason
    assert not (out / "seg.dcm").exists()
    mask = nib.Nifti1Image.from_filename(out / "mask.nii.gz")
    np.testing.assert_allclose(mask.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), (_stored() > 100).astype(np.uint8))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["provenance"]["sources"]["ct"] == {"file": "ct.nii.gz"}
    again = infer_one(path, bundle=fake_bundle, out_dir=out, segmenter=model)
    assert again.reused and len(model.calls) == 1


def test_dicom_folder_gets_a_seg_on_its_slices(tmp_path: Path, fake_bundle: BundleInfo) -> None:
    aff = lps_affine(iop=(0, 1, 0, 0, 0, -1), pixel_spacing=(0.7, 0.9), slice_step=1.5)  # sagittal
    files = write_series(tmp_path / "ct", _stored(), affine_lps=aff, shuffle_names=True)
    (tmp_path / "ct" / "README").write_text("junk beside the series")
    out = tmp_path / "out"
    result = infer_one(
        tmp_path / "ct", bundle=fake_bundle, out_dir=out, segmenter=ThresholdSegmenter()
    )
    assert result.status == "done" and result.reason == "SEG written"
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    mask = np.asarray(nib.Nifti1Image.from_filename(out / "mask.nii.gz").dataobj)
    np.testing.assert_array_equal(read_back_seg(out / "seg.dcm", datasets), mask)
    assert mask.sum() == 5 * 5 * 3


def test_wrong_number_of_inputs(tmp_path: Path, fake_bundle: BundleInfo) -> None:
    with pytest.raises(ConfigError, match="takes 1 input"):
        infer_one([tmp_path / "a", tmp_path / "b"], bundle=fake_bundle, out_dir=tmp_path / "o")


def test_voi_bundle_without_seeds_is_skipped(tmp_path: Path) -> None:
    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.7, 0.7), slice_step=1.25)
    write_series(tmp_path / "ct", _stored(), affine_lps=aff)
    result = infer_one(tmp_path / "ct", bundle=NODULE, out_dir=tmp_path / "out")
    assert result.status == "skipped" and "seed" in result.reason
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
