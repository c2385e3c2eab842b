"""IBSI radiomics features per lesion, computed by MIRP.

MIRP (https://github.com/oncoray/mirp, EUPL-1.2) is an IBSI-compliant feature library; we
call it, we do not copy it (see docs/radiomics.md for the licence note). Each lesion is cut
out of the image with a margin (nibabel's slicer keeps the affine exact) and handed to MIRP
in memory with its own binary mask (:func:`~monai_tumor.radiomics.extract.
compute_features_in_memory`), with the bundle's
:class:`~monai_tumor.radiomics.settings.RadiomicsSettings`.

Reproducibility: for regions of 1000 voxels or more MIRP estimates Moran's I and Geary's C
by Monte Carlo, seeding its generator with a hash of the image, the mask and their
attributes, among them the region's sample name. The sample name is a digest of the crop's
voxels, mask and affine (:func:`content_name`), so the same lesion gets the same features
in every process and on every machine (a resumed run, a Dask worker, a feature worker
process).

Feature names are MIRP's, which are the IBSI feature tags (``morph_volume``, ``stat_mean``,
``cm_joint_max``, ...) followed, for texture features, by the aggregation (``_3d_v_mrg``,
``_2d_avg``, ...) and, for discretised features, the discretisation (``_fbs_w25.0``,
``_fbn_n32``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from monai.data import MetaTensor

from monai_tumor.postprocess.lesions import Lesion, lesion_mask
from monai_tumor.radiomics.extract import compute_features_in_memory
from monai_tumor.radiomics.pool import FeaturePool
from monai_tumor.radiomics.settings import RadiomicsSettings

__all__ = ["LesionFeatures", "content_name", "lesion_features"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LesionFeatures:
    """IBSI features of one lesion and the settings that produced them."""

    lesion_index: int
    features: dict[str, float]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"settings", "features"}`` (NaN becomes ``None``)."""
        return {
            "settings": self.settings,
            "features": {
                k: (None if not math.isfinite(v) else v) for k, v in self.features.items()
            },
        }


def _as_numpy(x: MetaTensor | npt.ArrayLike) -> npt.NDArray[Any]:
    arr = x.detach().cpu().numpy() if isinstance(x, MetaTensor) else np.asarray(x)
    return arr[0] if arr.ndim == 4 else arr


def lesion_features(
    image: MetaTensor,
    mask: MetaTensor,
    lesions: Sequence[Lesion],
    *,
    settings: RadiomicsSettings,
    margin_voxels: int = 3,
    pool: FeaturePool | None = None,
) -> list[LesionFeatures]:
    """IBSI features of every lesion of ``mask`` on ``image`` (same grid, RAS affine).

    Parameters
    ----------
    image
        ``(1, I, J, K)`` image (HU for CT) with its RAS affine.
    mask
        ``(1, I, J, K)`` label map the lesions were measured on.
    lesions
        From :func:`monai_tumor.postprocess.lesions.measure_lesions` on ``mask``.
    settings
        The bundle's radiomics settings.
    margin_voxels
        Voxels of image kept around each lesion's bounding box (resampling context).
    pool
        Worker processes that compute each lesion's families in parallel (same values);
        ``None``: MIRP runs in this process.

    Returns
    -------
    list of LesionFeatures
        One per lesion, in the order given.
    """
    # Whole-grid arrays are only viewed; copies (float32 image, uint8 mask) are of each crop.
    img = _as_numpy(image)
    affine = np.asarray(image.affine, dtype=np.float64)
    out = []
    for lesion in lesions:
        component = lesion_mask(mask, lesion)
        lo = [max(0, v - margin_voxels) for v in lesion.bbox_voxel[0]]
        hi = [
            min(n, v + margin_voxels + 1)
            for v, n in zip(lesion.bbox_voxel[1], img.shape, strict=True)
        ]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        # nibabel's slicer shifts the affine's origin to the crop: geometry stays exact.
        crop_img = nib.Nifti1Image(img, affine).slicer[box]
        if crop_img.get_data_dtype() != np.float32:
            crop_img = nib.Nifti1Image(
                np.asarray(crop_img.dataobj, dtype=np.float32), crop_img.affine
            )
        crop_mask = nib.Nifti1Image(component.view(np.uint8), affine).slicer[box]
        name = content_name(crop_img, crop_mask)
        if pool is not None:
            values = pool.compute(crop_img, crop_mask, settings=settings, sample_name=name)
        else:
            values = compute_features_in_memory(
                crop_img, crop_mask, settings=settings, sample_name=name
            )
        out.append(
            LesionFeatures(lesion_index=lesion.index, features=values, settings=settings.to_dict())
        )
    return out


def content_name(image: nib.Nifti1Image, mask: nib.Nifti1Image) -> str:
    """Name a region after its content: a digest of voxels, mask and affine (24 hex digits).

    MIRP seeds its Monte Carlo estimates with the region's sample name (module docstring).
    """
    digest = hashlib.sha256()
    for arr in (np.asarray(image.dataobj), np.asarray(mask.dataobj), image.affine):
        digest.update(np.ascontiguousarray(arr).tobytes())
        digest.update(str(arr.shape).encode())
    return digest.hexdigest()[:24]
