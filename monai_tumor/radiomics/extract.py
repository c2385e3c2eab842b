"""One call of MIRP on an image and a mask: from files, or from NIfTI images in memory.

Kept apart from :mod:`monai_tumor.radiomics.features` (which cuts lesions out of MONAI
tensors) so that a feature worker process (:mod:`monai_tumor.radiomics.pool`) imports
MIRP without torch and MONAI.

MIRP reads NIfTI files through ITK, and loading ITK takes 1.5-3.2 s per process (its
wrapped modules are loaded in bulk). :func:`compute_features_in_memory` hands MIRP the
voxels directly, as MIRP's own numpy image objects with the geometry its ITK reader would
have read from the same image saved by nibabel (origin, orientation and spacing from the
NIfTI header, in MIRP's (z, y, x) order, rounded as the file would store them). Every
feature then equals :func:`compute_features` on the saved files
(``tests/unit/test_extract.py``: real nodules, both IBSI phantoms), with one exception:
for regions of 1000 voxels or more MIRP estimates Moran's I and Geary's C by Monte Carlo,
seeded from the voxels and the inputs' attributes. From files those attributes include the
folder's full path; in memory they include the region's name instead, so the estimates
differ from a file run's (another estimate of the same quantity) and depend on the region
only. MIRP has no public constructor taking a geometry with an array (its public numpy
input assumes 1 mm voxels at the origin), hence its private classes, used only with the
MIRP versions of :data:`~monai_tumor.radiomics.spatial.MIRP_VERSIONS`; with any other
version the images are written to a temporary folder named after the region and read
back through ITK.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monai_tumor.errors import RadiomicsError
from monai_tumor.radiomics.settings import RadiomicsSettings
from monai_tumor.radiomics.spatial import faster_mirp_spatial, supported_mirp

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["compute_features", "compute_features_in_memory", "feature_columns", "mirp_geometry"]

#: DICOM patient axes (LPS, ITK's world) from NIfTI's RAS.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

#: MIRP's columns that describe the input rather than the region (dropped from the output).
_META_PREFIXES = ("image_", "sample_name")


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
    return _extract(str(image), str(mask), settings=settings, name=f"{image} (mask {mask})")


def _extract(image: Any, mask: Any, *, settings: RadiomicsSettings, name: str) -> dict[str, float]:
    from mirp import extract_features

    try:
        with faster_mirp_spatial():  # same values, without a Python call per voxel pair
            tables = extract_features(
                image=image, mask=mask, num_cpus=None, **settings.mirp_kwargs()
            )
    except Exception as exc:  # MIRP raises many types; one project error names the input
        raise RadiomicsError(
            f"MIRP could not compute features for {name} ({exc}); check that "
            "the mask is non-empty and on the image grid"
        ) from exc
    if not tables or tables[0] is None or len(tables[0]) == 0:
        raise RadiomicsError(f"MIRP returned no feature row for {name}")
    table = tables[0]
    return {c: float(table[c].iloc[0]) for c in feature_columns(table)}


def mirp_geometry(
    image: nib.Nifti1Image,
) -> tuple[tuple[float, ...], np.ndarray, tuple[float, ...]]:
    """Origin, orientation and spacing of ``image`` as MIRP's ITK reader sets them.

    From the NIfTI header nibabel writes for ``image`` (so rounded as the file would be):
    LPS origin and direction cosines and the header's voxel sizes, in MIRP's reversed
    (z, y, x) axis order.

    Parameters
    ----------
    image
        A 3D NIfTI image (its header as ``nib.save`` would write it).

    Returns
    -------
    tuple
        ``(origin, orientation, spacing)``: two 3-tuples and a ``(3, 3)`` array.
    """
    header = image.header
    affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    spacing = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    linear = _RAS_TO_LPS @ affine[:3, :3]
    direction = linear / np.sqrt((linear**2).sum(axis=0))
    origin = _RAS_TO_LPS @ affine[:3, 3]
    orientation = np.reshape(np.ravel(direction.T)[::-1], (3, 3))
    return tuple(origin[::-1].tolist()), orientation, tuple(spacing[::-1].tolist())


def _mirp_numpy_classes() -> tuple[type, type] | None:
    if not supported_mirp():
        return None
    try:
        from mirp._data_import.numpy_file import ImageNumpyFile, MaskNumpyFile
    except ImportError:
        return None
    return ImageNumpyFile, MaskNumpyFile


def compute_features_in_memory(
    image: nib.Nifti1Image,
    mask: nib.Nifti1Image,
    *,
    settings: RadiomicsSettings,
    sample_name: str,
) -> dict[str, float]:
    """Run MIRP on an image and a binary mask held in memory; return ``{tag: value}``.

    The values equal :func:`compute_features` on the two images saved by nibabel, without
    loading ITK, except the Monte Carlo estimates of regions of 1000 voxels or more, which
    are seeded by ``sample_name`` here (see the module docstring).

    Parameters
    ----------
    image
        Float32 image (unscaled) with its affine.
    mask
        Binary mask on the same grid.
    settings
        The bundle's radiomics settings.
    sample_name
        Names the region for MIRP (and seeds its Monte Carlo estimates): the same name
        gives the same values in every process.

    Raises
    ------
    RadiomicsError
        If MIRP fails or returns no feature row.
    """
    classes = _mirp_numpy_classes()
    if classes is None:  # another MIRP version: through files and ITK
        import nibabel as nib

        with _scratch_folder(sample_name) as folder:
            nib.save(image, folder / "image.nii.gz")
            nib.save(mask, folder / "mask.nii.gz")
            return compute_features(
                folder / "image.nii.gz", folder / "mask.nii.gz", settings=settings
            )
    image_cls, mask_cls = classes
    origin, orientation, spacing = mirp_geometry(image)
    voxels = np.ascontiguousarray(np.asarray(image.dataobj, dtype=np.float32).transpose(2, 1, 0))
    labels = np.ascontiguousarray(np.asarray(mask.dataobj).transpose(2, 1, 0)).astype(int)
    common = {
        "sample_name": sample_name,
        "image_origin": origin,
        "image_orientation": orientation,
        "image_spacing": spacing,
    }
    mirp_image = image_cls(image_data=voxels, image_modality=settings.modality, **common)
    mirp_mask = mask_cls(image_data=labels, **common)
    mirp_image.image_metadata, mirp_mask.image_metadata = voxels, labels
    return _extract(mirp_image, mirp_mask, settings=settings, name=f"region {sample_name}")


@contextmanager
def _scratch_folder(name: str) -> Iterator[Path]:
    """Yield a temporary folder ``name`` (the files' sample name), under an exclusive lock.

    Only for MIRP versions without the in-memory path. MIRP then seeds its Monte Carlo
    estimates with the folder's path: a fixed path per region keeps them reproducible on
    one machine. The lock serialises two processes that measure the same region at the
    same time; folder and lock file are removed before the lock is released.
    """
    root = Path(tempfile.gettempdir()) / "monai-tumor-radiomics"
    root.mkdir(parents=True, exist_ok=True)
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
