"""Reading, checking and writing label maps exchanged with annotation clients."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from monai_tumor import geometry
from monai_tumor.errors import MonaiTumorError, RequestError

__all__ = ["RESULT_SUFFIXES", "read_label", "validate_label", "write_label"]

#: Label file types the server writes (``result_extension``) and reads (uploads).
RESULT_SUFFIXES = (".nii.gz", ".nii", ".nrrd")
#: Largest allowed distance (mm) between a label's and its image's voxel centres.
GRID_TOLERANCE_MM = 1e-3


def read_label(path: Path) -> MetaTensor:
    """Read an uploaded label file (NIfTI or NRRD) as ``(1, I, J, K)`` with a RAS affine.

    Raises
    ------
    RequestError
        400 if the file is not a readable 3D volume.
    """
    from monai_tumor.service.datastore import load_image

    try:
        label = load_image(path)
    except MonaiTumorError as exc:
        raise RequestError(f"the label file cannot be read: {exc.reason}") from exc
    if label.shape[0] != 1:
        raise RequestError(
            f"the label has {label.shape[0]} channels; expected one label map (3D volume)"
        )
    return label


def validate_label(
    label: MetaTensor,
    image: MetaTensor,
    *,
    allowed: Collection[int],
    image_id: str,
    allowed_by: str = "the served models",
) -> MetaTensor:
    """Check a label against its image; return it as a uint8 ``(1, I, J, K)`` map.

    Parameters
    ----------
    label
        ``(1, I, J, K)`` with a voxel-to-RAS affine.
    image
        The datastore image, channel-first with a voxel-to-RAS affine.
    allowed
        Label values allowed for this image: those of the models that read it
        (:func:`monai_tumor.service.models.models_for_image`); 0 is always allowed.
    image_id
        For the messages.
    allowed_by
        Where ``allowed`` comes from (the models' names), for the messages.

    Raises
    ------
    RequestError
        422 if the shape, the grid (voxel centres further apart than 1e-3 mm) or a value
        does not fit.
    """
    if tuple(label.shape[1:]) != tuple(image.shape[1:]):
        raise RequestError(
            f"label shape {tuple(label.shape[1:])} differs from image {image_id!r} shape "
            f"{tuple(image.shape[1:])}; save the label on the image's own grid",
            status=422,
        )
    la = np.asarray(label.affine, dtype=np.float64)
    ia = np.asarray(image.affine, dtype=np.float64)
    corners = np.array(
        [
            [i, j, k]
            for i in (0, label.shape[1] - 1)
            for j in (0, label.shape[2] - 1)
            for k in (0, label.shape[3] - 1)
        ],
        dtype=np.float64,
    )
    shift = np.abs(
        geometry.voxel_to_patient(la, corners) - geometry.voxel_to_patient(ia, corners)
    ).max()
    if shift > GRID_TOLERANCE_MM:
        raise RequestError(
            f"label geometry differs from image {image_id!r}: voxel centres up to "
            f"{shift:.3g} mm apart (tolerance {GRID_TOLERANCE_MM} mm); the label must be on "
            "the image's grid (same origin, spacing and direction)",
            status=422,
        )
    values = torch.unique(label.as_tensor())
    if values.is_floating_point() and not torch.equal(values, values.round()):
        raise RequestError(
            f"label values must be whole numbers, found {values[:5].tolist()} ...", status=422
        )
    found = {int(v) for v in values.tolist()}
    permitted = sorted({0, *(int(v) for v in allowed)})
    bad = sorted(found - set(permitted))
    if bad:
        raise RequestError(
            f"label values {bad} are not allowed on image {image_id!r}: the label holds "
            f"{sorted(found)}, the image's model(s) {allowed_by} write {permitted}; "
            "relabel with those values (or save it on an image of the model that uses them)",
            status=422,
        )
    return MetaTensor(
        torch.as_tensor(label.as_tensor()).to(torch.uint8), affine=image.affine.clone()
    )


def write_label(label: MetaTensor, path: Path) -> Path:
    """Write a ``(1, I, J, K)`` label map as NIfTI or NRRD (by ``path``'s suffix), atomically.

    NRRD is written through SimpleITK with the LPS direction, spacing and origin of the
    label's RAS affine (:func:`monai_tumor.geometry.ras_to_lps`), as 3D Slicer reads it.
    """
    from monai_tumor.export.nifti import write_nifti

    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return write_nifti(label, path, dtype=np.uint8)
    if name.endswith(".nrrd"):
        import SimpleITK as sitk  # noqa: N813

        from monai_tumor.export.atomic import atomic_path

        lps = geometry.ras_to_lps(np.asarray(label.affine, dtype=np.float64))
        spacing = geometry.spacing_from_affine(lps)
        direction = lps[:3, :3] / spacing
        array = np.asarray(label.as_tensor()[0].cpu().numpy(), dtype=np.uint8)
        image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(o) for o in lps[:3, 3]])
        image.SetDirection([float(d) for d in direction.flatten()])
        with atomic_path(path, suffix=".nrrd") as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        return path
    raise RequestError(
        f"unsupported result_extension for {path.name!r}; expected one of {RESULT_SUFFIXES}"
    )
