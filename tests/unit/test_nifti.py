from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_tumor.errors import ExportError
from monai_tumor.export.nifti import to_numpy_volume, write_nifti


@pytest.fixture
def oblique_affine() -> np.ndarray:
    rot = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, 0.6], [-0.6, 0.0, 0.8]])
    aff = np.eye(4)
    aff[:3, :3] = rot * np.array([0.7, 0.9, 2.5])
    aff[:3, 3] = [-12.5, 40.0, 101.25]
    return aff


def test_metatensor_round_trip(tmp_path: Path, oblique_affine: np.ndarray) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    image = MetaTensor(torch.from_numpy(data), affine=torch.from_numpy(oblique_affine))
    out = write_nifti(image, tmp_path / "x.nii.gz")
    nii = nib.Nifti1Image.from_filename(out)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), data[0])
    np.testing.assert_allclose(nii.affine, oblique_affine, atol=1e-6)
    np.testing.assert_allclose(nii.get_qform(), oblique_affine, atol=1e-4)
    assert int(nii.header["sform_code"]) == 1


def test_plain_array_needs_affine(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no affine"):
        write_nifti(np.zeros((2, 2, 2)), tmp_path / "x.nii.gz")


def test_dtype_and_multichannel(tmp_path: Path) -> None:
    data = np.zeros((3, 2, 2, 2), dtype=np.float32)
    data[1] = 1
    out = write_nifti(data, tmp_path / "m.nii", affine=np.eye(4), dtype=np.uint8)
    nii = nib.Nifti1Image.from_filename(out)
    assert nii.shape == (2, 2, 2, 3)
    assert nii.get_data_dtype() == np.uint8
    assert to_numpy_volume(data).shape == (2, 2, 2, 3)
