"""One LIDC nodule volume of interest of the shared data as float32 image and binary mask."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def lidc_voi(data_dir: Path, case: str) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """``lidc_nodules/image/<case>`` (float32 HU) and its ``nodule_mask`` (uint8 0/1)."""
    folder = data_dir / "lidc_nodules"
    image = nib.Nifti1Image.from_filename(folder / "image" / f"{case}.nii.gz")
    mask = nib.Nifti1Image.from_filename(folder / "nodule_mask" / f"{case}.nii.gz")
    voxels = np.asarray(image.dataobj, dtype=np.float32)
    labels = (np.asarray(mask.dataobj) > 0).astype(np.uint8)
    return nib.Nifti1Image(voxels, image.affine), nib.Nifti1Image(labels, image.affine)
