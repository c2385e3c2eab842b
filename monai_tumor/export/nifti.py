"""Write volumes as NIfTI-1 files, atomically, with the affine as read.

nibabel does the encoding; this module only fixes the conventions (RAS affine
in both sform and qform, scanner-anatomical codes, channel-first MetaTensors
squeezed to 3D) and makes the write atomic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import torch
from monai.data import MetaTensor

from monai_tumor.errors import ExportError
from monai_tumor.export.atomic import atomic_path

__all__ = ["to_numpy_volume", "write_nifti"]


def to_numpy_volume(image: MetaTensor | torch.Tensor | npt.ArrayLike) -> npt.NDArray[np.generic]:
    """Return a volume as a numpy array, dropping a leading singleton channel.

    Parameters
    ----------
    image
        ``(1, I, J, K)`` / ``(C, I, J, K)`` channel-first tensor, or ``(I, J, K)``.

    Returns
    -------
    numpy.ndarray
        ``(I, J, K)`` for one channel, else ``(I, J, K, C)`` (NIfTI's 4th axis).
    """
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    return arr


def write_nifti(
    image: MetaTensor | torch.Tensor | npt.ArrayLike,
    path: str | Path,
    *,
    affine: npt.ArrayLike | None = None,
    dtype: npt.DTypeLike | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a volume to ``path`` (``.nii`` or ``.nii.gz``) atomically.

    Parameters
    ----------
    image
        Channel-first MetaTensor (its ``.affine`` is used, RAS) or an array.
    path
        Destination file.
    affine
        ``(4, 4)`` voxel-to-RAS affine (mm); required unless ``image`` is a
        MetaTensor.
    dtype
        On-disk data type; defaults to the array's own.
    provenance
        JSON-serialisable record of where the volume comes from (source UIDs,
        bundle, weights hash, software versions; never patient identifiers),
        stored as a NIfTI-1 comment extension (code 6) that
        ``nib.load(path).header.extensions`` gives back.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ExportError
        If no affine is known or the file cannot be written.
    """
    dest = Path(path)
    if affine is None:
        if not isinstance(image, MetaTensor):
            raise ExportError("no affine given for a plain array; pass affine=", path=dest)
        affine = image.affine
    aff = np.asarray(
        affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else affine,
        dtype=np.float64,
    )
    arr = to_numpy_volume(image)
    if dtype is not None:
        arr = arr.astype(dtype)
    nii = nib.Nifti1Image(arr, aff)
    nii.set_sform(aff, code=1)
    nii.set_qform(aff, code=1)
    nii.header.set_xyzt_units("mm", "sec")
    if provenance is not None:
        text = json.dumps(dict(provenance), sort_keys=True, default=str)
        nii.header.extensions.append(nib.nifti1.Nifti1Extension("comment", text.encode("utf-8")))
        nii.header["descrip"] = b"monai-tumor; provenance in extension"
    try:
        with atomic_path(dest) as tmp:
            nib.save(nii, tmp)
    except OSError as exc:
        raise ExportError(f"could not write NIfTI: {exc}", path=dest) from exc
    return dest
