"""LIDC nodule VOIs of the shared data, and the nodule bundle's radiomics settings."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from monai_tumor.radiomics.settings import RadiomicsSettings, load_radiomics_settings

NODULE_BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"


def lidc_voi(data_dir: Path, case: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """``lidc_nodules/image/<case>`` (float32 HU) and its ``nodule_mask`` (uint8 0/1)."""
    folder = data_dir / "lidc_nodules"
    image = nib.Nifti1Image.from_filename(folder / "image" / f"{case}.nii.gz")
    mask = nib.Nifti1Image.from_filename(folder / "nodule_mask" / f"{case}.nii.gz")
    voxels = np.asarray(image.dataobj, dtype=np.float32)
    labels = (np.asarray(mask.dataobj) > 0).astype(np.uint8)
    return nib.Nifti1Image(voxels, image.affine), nib.Nifti1Image(labels, image.affine)


def nodule_radiomics_settings() -> RadiomicsSettings:
    """The ``lung_nodule_ct`` bundle's ``configs/radiomics.json`` (CT: 1 mm, 25 HU bins)."""
    settings = load_radiomics_settings(NODULE_BUNDLE)
    assert settings is not None, f"{NODULE_BUNDLE} has no radiomics settings"
    return settings
