"""IBSI radiomics features per lesion, computed by MIRP.

MIRP (https://github.com/oncoray/mirp, EUPL-1.2) is an IBSI-compliant feature library; we
call it, we do not copy it (see docs/radiomics.md for the licence note). Each lesion is cut
out of the image with a margin (nibabel's slicer keeps the affine exact), written with its
own binary mask as two temporary NIfTI files, and passed to :func:`mirp.extract_features`
with the bundle's :class:`~monai_tumor.radiomics.settings.RadiomicsSettings`.

Reproducibility: for regions of 1000 voxels or more MIRP estimates Moran's I and Geary's C
by Monte Carlo, seeding its generator with a hash of the image, the mask *and the folder
the files were read from*. A random temporary folder would therefore give different values
for the same lesion in every process (a resumed run or a Dask worker would disagree with a
single-machine run). The temporary files are written to a content-addressed folder instead
(:func:`_scratch_folder`), so the same lesion always gets the same features.

Feature names are MIRP's, which are the IBSI feature tags (``morph_volume``, ``stat_mean``,
``cm_joint_max``, ...) followed, for texture features, by the aggregation (``_3d_v_mrg``,
``_2d_avg``, ...) and, for discretised features, the discretisation (``_fbs_w25.0``,
``_fbn_n32``).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from monai.data import MetaTensor

from monai_tumor.errors import RadiomicsError
from monai_tumor.postprocess.lesions import Lesion, lesion_mask
from monai_tumor.radiomics.settings import RadiomicsSettings
from monai_tumor.radiomics.spatial import faster_mirp_spatial

__all__ = ["LesionFeatures", "compute_features", "feature_columns", "lesion_features"]

logger = logging.getLogger(__name__)

#: MIRP's columns that describe the input rather than the region (dropped from the output).
_META_PREFIXES = ("image_", "sample_name")


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


def feature_columns(table: Any) -> list[str]:
    """Return the feature columns of a MIRP table (its input-description columns dropped)."""
    return [str(c) for c in table.columns if not str(c).startswith(_META_PREFIXES)]


def compute_features(
    image: str | Path, mask: str | Path, *, settings: RadiomicsSettings
) -> dict[str, float]:
    """Run MIRP on one image file and one binary mask file; return ``{feature tag: value}``.

    Raises
    ------
    RadiomicsError
        If MIRP fails or returns no feature row.
    """
    from mirp import extract_features

    try:
        with faster_mirp_spatial():  # same values, without a Python call per voxel pair
            tables = extract_features(
                image=str(image), mask=str(mask), num_cpus=None, **settings.mirp_kwargs()
            )
    except Exception as exc:  # MIRP raises many types; one project error names the input
        raise RadiomicsError(
            f"MIRP could not compute features for mask {mask} ({exc}); check that "
            "the mask is non-empty and on the image grid",
            path=image,
        ) from exc
    if not tables or tables[0] is None or len(tables[0]) == 0:
        raise RadiomicsError(f"MIRP returned no feature row for mask {mask}", path=image)
    table = tables[0]
    return {c: float(table[c].iloc[0]) for c in feature_columns(table)}


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
        with _scratch_folder(crop_img, crop_mask) as folder:
            img_path, mask_path = folder / "image.nii.gz", folder / "mask.nii.gz"
            nib.save(crop_img, img_path)
            nib.save(crop_mask, mask_path)
            values = compute_features(img_path, mask_path, settings=settings)
        out.append(
            LesionFeatures(lesion_index=lesion.index, features=values, settings=settings.to_dict())
        )
    return out


@contextmanager
def _scratch_folder(image: nib.Nifti1Image, mask: nib.Nifti1Image) -> Iterator[Path]:
    """Yield a temporary folder named after the crop's content, held under an exclusive lock.

    MIRP seeds its Monte Carlo estimate of Moran's I and Geary's C with the folder the files
    were read from (see the module docstring); naming the folder after the voxels and the
    affine makes the estimate a function of the lesion alone. The lock serialises two
    processes that happen to measure the same lesion at the same time; the folder and the
    lock file are removed before the lock is released, so nothing is left behind.
    """
    digest = hashlib.sha256()
    for arr in (np.asarray(image.dataobj), np.asarray(mask.dataobj), image.affine):
        digest.update(np.ascontiguousarray(arr).tobytes())
        digest.update(str(arr.shape).encode())
    root = Path(tempfile.gettempdir()) / "monai-tumor-radiomics"
    root.mkdir(parents=True, exist_ok=True)
    name = digest.hexdigest()[:24]
    folder, lock_path = root / name, root / f"{name}.lock"
    while True:
        lock = open(lock_path, "a")  # noqa: SIM115 (held past this loop, closed in finally)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(lock_path)):
                break  # still the lock file at that path: ours
        except FileNotFoundError:
            pass  # its holder removed it while this process waited: take a fresh one
        lock.close()
    try:
        shutil.rmtree(folder, ignore_errors=True)  # left behind by a killed process
        folder.mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        lock.close()  # releases the lock
