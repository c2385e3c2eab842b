"""Connected lesions of a segmentation and their measurements.

A *lesion* is one 26-connected component of the (binary or selected-label)
mask. For each lesion this module reports its volume (mL), longest 3D
diameter (mm), longest axial diameter (mm), centroid in patient **LPS** mm,
intensity statistics of the image inside it and the slice range it covers.

All patient-coordinate maths goes through :mod:`monai_tumor.geometry`
(``ras_to_lps``, ``voxel_to_patient``, ``spacing_from_affine``,
``orientation_of``). The only derived quantity composed here is the
ImageOrientationPatient of the voxel grid (:func:`_grid_iop`): the first two
columns of the LPS affine divided by their lengths.

Connected components: :func:`scipy.ndimage.label` with the full 3x3x3
structuring element (26-connectivity, the convention for lesion counting in
3D: two voxels touching at an edge or corner belong to the same lesion).
MONAI's ``KeepLargestConnectedComponent`` / ``get_largest_connected_component_mask``
only keep the largest component; we need every component with its label, and
scipy's labeller plus ``find_objects`` gives labels and bounding boxes in one
pass on the CPU without optional dependencies (cuCIM).

Diameters are measured between **voxel centres** (a lesion of one voxel has
diameter 0), the usual convention of radiomics tools; they underestimate the
physical extent by up to one voxel diagonal.

Longest axial diameter
    The longest distance between two lesion voxels lying in one plane of
    constant patient z (an axial plane), measured in that plane.

    * When the voxel grid is axial (its slice plane is within 10 degrees of the
      patient axial plane, :func:`monai_tumor.geometry.orientation_of`), the
      planes are the acquired slices ``k``: the longest in-plane distance on
      each slice, as a radiologist measures on the axial image (RECIST).
    * Otherwise (coronal, sagittal, oblique grids) a plane ``z = c`` passes
      through the voxels whose centre is within ``t / 2`` of it, where ``t`` is
      the voxel's extent along z (``sum |A_z|`` over the three voxel axes of the
      LPS affine ``A``). Planes are sampled every half of the smallest voxel
      spacing across the lesion, and the distance is measured between the
      voxel centres' projections onto the axial plane (x, y).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.data import MetaTensor
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from monai_tumor.errors import MonaiTumorError
from monai_tumor.geometry import (
    Orientation,
    foreground_box,
    orientation_of,
    ras_to_lps,
    spacing_from_affine,
    voxel_to_patient,
)

__all__ = [
    "LESIONS_SCHEMA",
    "Lesion",
    "lesion_mask",
    "lesions_report",
    "mark_image_edge",
    "mark_truncated",
    "measure_lesions",
]

#: Identifier of the ``lesions.json`` layout written by :func:`lesions_report`.
LESIONS_SCHEMA = "monai-tumor/lesions/v1"

FloatArray = npt.NDArray[np.float64]

_CONNECTIVITY_26 = ndimage.generate_binary_structure(3, 3)
_CONNECTIVITY_6 = ndimage.generate_binary_structure(3, 1)
_CONNECTIVITY_4 = ndimage.generate_binary_structure(2, 1)
# Below this many points a brute-force pairwise search is cheaper than a hull.
_BRUTE_FORCE_MAX = 64


@dataclass(frozen=True)
class Lesion:
    """Measurements of one connected lesion.

    Attributes
    ----------
    index
        1-based lesion number, by decreasing volume.
    label
        Mask value the lesion was taken from (``None``: any non-zero value).
    voxel_count
        Number of voxels.
    volume_ml
        Voxel count times voxel volume (``|det|`` of the affine's 3x3), mL.
    diameter_3d_mm
        Longest distance between two voxel centres of the lesion, mm.
    diameter_axial_mm
        Longest distance within one axial plane (see the module docstring), mm.
    centroid_lps_mm
        Mean voxel centre in patient LPS coordinates, mm.
    centroid_voxel
        Mean voxel index ``[i, j, k]`` (column, row, slice) on the mask grid.
    bbox_voxel
        Inclusive voxel bounding box ``((i0, j0, k0), (i1, j1, k1))``.
    intensity_mean, intensity_max
        Mean and maximum image value inside the lesion, in ``intensity_unit``.
    intensity_unit
        ``"HU"`` for CT, else the image's ``"intensity_unit"`` meta or ``"arbitrary"``.
    first_slice, last_slice
        First and last slice index ``k`` of the grid that the lesion touches.
    first_slice_sop_instance_uid, last_slice_sop_instance_uid
        SOP Instance UIDs of those slices, when the mask or image meta has
        ``"sop_instance_uids"``.
    truncated
        The lesion reaches the border of the largest volume of interest a VOI bundle
        segmented it in, or the image's edge: its mask, volume and diameters are
        incomplete (set from the model's fields of view, see
        :func:`monai_tumor.transforms.voi.segment_growing_voi`, and for every bundle by
        :func:`mark_image_edge`).
    truncation_reason
        Why (``""`` if not truncated).
    """

    index: int
    label: int | None
    voxel_count: int
    volume_ml: float
    diameter_3d_mm: float
    diameter_axial_mm: float
    centroid_lps_mm: tuple[float, float, float]
    centroid_voxel: tuple[float, float, float]
    bbox_voxel: tuple[tuple[int, int, int], tuple[int, int, int]]
    intensity_mean: float
    intensity_max: float
    intensity_unit: str
    first_slice: int
    last_slice: int
    first_slice_sop_instance_uid: str | None = None
    last_slice_sop_instance_uid: str | None = None
    truncated: bool = False
    truncation_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists, units in key names)."""
        out = asdict(self)
        out["centroid_lps_mm"] = list(self.centroid_lps_mm)
        out["centroid_voxel"] = list(self.centroid_voxel)
        out["bbox_voxel"] = [list(self.bbox_voxel[0]), list(self.bbox_voxel[1])]
        return out


def _label_foreground(
    binary: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.intp]]:
    """26-connected components, labelled inside the foreground's bounding box only.

    Every component lies inside the bounding box of all foreground voxels, and the box's
    C order is the grid's, so labelling the box gives the same components with the same
    numbers as labelling the whole grid, without an int32 copy of the grid (420 MB for a
    512 x 512 x 400 CT). Returns the labelled box and its first voxel ``(i, j, k)``.
    """
    box = foreground_box(binary)
    if box is None:  # no component
        return np.zeros((1, 1, 1), dtype=np.int32), np.zeros(3, dtype=np.intp)
    labelled, _ = ndimage.label(binary[box], structure=_CONNECTIVITY_26)
    return labelled, np.asarray([s.start for s in box], dtype=np.intp)


def _shifted(box: tuple[slice, ...], origin: npt.NDArray[np.intp]) -> tuple[slice, ...]:
    return tuple(slice(s.start + int(o), s.stop + int(o)) for s, o in zip(box, origin, strict=True))


def _to_numpy(x: MetaTensor | torch.Tensor | npt.ArrayLike) -> npt.NDArray[Any]:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise MonaiTumorError(
                f"expected a single-channel volume (1, I, J, K), found shape {arr.shape}; "
                "pass one channel (a label map or a binary mask)"
            )
        arr = arr[0]
    if arr.ndim != 3:
        raise MonaiTumorError(f"expected a 3D volume (I, J, K), found shape {arr.shape}")
    return arr


def _affine_of(t: MetaTensor) -> FloatArray:
    aff = t.affine
    return np.asarray(
        aff.detach().cpu().numpy() if isinstance(aff, torch.Tensor) else aff, dtype=np.float64
    )


def _grid_iop(affine_lps: FloatArray) -> FloatArray:
    """ImageOrientationPatient of the grid: unit columns 0 (row dir) and 1 (column dir)."""
    spacing = spacing_from_affine(affine_lps)
    return np.concatenate([affine_lps[:3, 0] / spacing[0], affine_lps[:3, 1] / spacing[1]])


def _farthest_pair_distance(points_index: npt.NDArray[Any], to_mm: FloatArray) -> float:
    """Longest distance (mm) between points given as voxel indices.

    The convex hull is computed on the voxel indices: hull vertices are
    invariant under the (invertible, affine) voxel-to-patient map, so the
    farthest pair in patient space is among the index-space hull vertices.
    ``to_mm`` is the linear part mapping index differences to mm.
    """
    pts = np.unique(np.asarray(points_index, dtype=np.float64), axis=0)
    if len(pts) < 2:
        return 0.0
    if len(pts) > _BRUTE_FORCE_MAX:
        dims = int(np.linalg.matrix_rank(pts - pts.mean(axis=0)))
        # Hull in the subspace the points span (a single slice is planar in 3D).
        if dims >= 2:
            centred = pts - pts.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            reduced = centred @ vt[:dims].T
            try:
                pts = pts[ConvexHull(reduced).vertices]
            except QhullError:
                pts = pts[ConvexHull(reduced, qhull_options="QJ").vertices]
        else:  # collinear: the two extreme points along the line
            centred = pts - pts.mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            proj = centred @ vt[0]
            pts = pts[[int(np.argmin(proj)), int(np.argmax(proj))]]
    mm = pts @ to_mm.T
    return float(pdist(mm).max())


def _farthest_pair_distance_2d(points_xy: FloatArray) -> float:
    """Longest distance between 2D points already in mm."""
    pts = np.unique(points_xy, axis=0)
    if len(pts) < 2:
        return 0.0
    if len(pts) > _BRUTE_FORCE_MAX:
        return _farthest_pair_distance(pts, np.eye(2))
    return float(pdist(pts).max())


def _surface_voxels(component: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Voxels of the component with at least one 6-neighbour outside it."""
    return component & ~ndimage.binary_erosion(component, _CONNECTIVITY_6, border_value=0)


def _axial_diameter_per_slice(component: npt.NDArray[np.bool_], linear: FloatArray) -> float:
    """Longest in-plane distance over the ``k`` slices of an axial grid (mm)."""
    best = 0.0
    for k in range(component.shape[2]):
        sl = component[:, :, k]
        if not sl.any():
            continue
        edge = sl & ~ndimage.binary_erosion(sl, _CONNECTIVITY_4, border_value=0)
        ij = np.argwhere(edge)
        best = max(best, _farthest_pair_distance(ij, linear[:, :2]))
    return best


def _axial_diameter_slabs(
    indices: npt.NDArray[Any], affine_lps: FloatArray, spacing: FloatArray
) -> float:
    """Longest xy distance within planes of constant patient z (non-axial grids), mm."""
    pts = voxel_to_patient(affine_lps, indices)
    thickness = float(np.abs(affine_lps[2, :3]).sum())
    step = float(spacing.min()) / 2.0
    z = pts[:, 2]
    best = 0.0
    for c in np.arange(z.min(), z.max() + step, step):
        sel = np.abs(z - c) <= thickness / 2.0
        if np.count_nonzero(sel) >= 2:
            best = max(best, _farthest_pair_distance_2d(pts[sel, :2]))
    return best


def _intensity_unit(image: MetaTensor) -> str:
    modality = str(image.meta.get("Modality", "")).upper()
    if modality == "CT":
        return "HU"
    return str(image.meta.get("intensity_unit", "arbitrary"))


def measure_lesions(
    mask: MetaTensor,
    image: MetaTensor,
    *,
    label: int | None = None,
    min_volume_ml: float = 0.0,
) -> list[Lesion]:
    """Split a mask into 26-connected lesions and measure each.

    Parameters
    ----------
    mask
        ``(1, I, J, K)`` or ``(I, J, K)`` label map or binary mask on the
        image grid (voxel axes ``[column, row, slice]``), with a RAS affine.
    image
        ``(1, I, J, K)`` image the mask was made on (same grid); its values
        give the intensity statistics (HU for CT after rescale).
    label
        Mask value to measure; ``None`` takes every non-zero voxel as lesion
        (for a multi-class map, the whole tumour).
    min_volume_ml
        Lesions smaller than this (mL) are dropped before numbering.

    Returns
    -------
    list of Lesion
        Sorted by decreasing volume, numbered from 1. Empty if no voxel is set.

    Raises
    ------
    MonaiTumorError
        If the mask and image grids differ (shape or affine).
    """
    m = _to_numpy(mask)
    img = _to_numpy(image)
    if m.shape != img.shape:
        raise MonaiTumorError(
            f"mask shape {m.shape} differs from image shape {img.shape}; measure the mask "
            "on the grid it was predicted on (resample it to the image first)"
        )
    affine_ras = _affine_of(mask)
    if not np.allclose(affine_ras, _affine_of(image), atol=1e-3):
        raise MonaiTumorError(
            "mask and image affines differ by more than 1e-3 mm: they are not on the same "
            "grid; resample the mask onto the image before measuring"
        )
    affine_lps = ras_to_lps(affine_ras)
    linear = affine_lps[:3, :3]
    spacing = spacing_from_affine(affine_lps)
    voxel_ml = abs(float(np.linalg.det(linear))) / 1000.0
    axial = orientation_of(_grid_iop(affine_lps)) is Orientation.AXIAL
    unit = _intensity_unit(image)
    uids = mask.meta.get("sop_instance_uids") or image.meta.get("sop_instance_uids")
    uid_list = list(uids) if uids is not None and len(uids) == m.shape[2] else None

    binary = (m == label) if label is not None else (m != 0)
    labelled, origin = _label_foreground(binary)
    found: list[Lesion] = []
    for number, local_box in enumerate(ndimage.find_objects(labelled), start=1):
        if local_box is None:
            continue
        component = labelled[local_box] == number
        count = int(np.count_nonzero(component))
        volume = count * voxel_ml
        if volume < min_volume_ml:
            continue
        box = _shifted(local_box, origin)
        offset = np.array([s.start for s in box])
        local = np.argwhere(component)
        indices = local + offset
        centroid_vox = indices.mean(axis=0)
        centroid = voxel_to_patient(affine_lps, centroid_vox)
        surface = np.argwhere(_surface_voxels(component)) + offset
        d3 = _farthest_pair_distance(surface, linear)
        if axial:
            dax = _axial_diameter_per_slice(component, linear)
        else:
            dax = _axial_diameter_slabs(indices, affine_lps, spacing)
        values = img[box][component]
        k0, k1 = int(indices[:, 2].min()), int(indices[:, 2].max())
        found.append(
            Lesion(
                index=0,
                label=label,
                voxel_count=count,
                volume_ml=float(volume),
                diameter_3d_mm=d3,
                diameter_axial_mm=dax,
                centroid_lps_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                centroid_voxel=(
                    float(centroid_vox[0]),
                    float(centroid_vox[1]),
                    float(centroid_vox[2]),
                ),
                bbox_voxel=(
                    (int(indices[:, 0].min()), int(indices[:, 1].min()), k0),
                    (int(indices[:, 0].max()), int(indices[:, 1].max()), k1),
                ),
                intensity_mean=float(values.mean()),
                intensity_max=float(values.max()),
                intensity_unit=unit,
                first_slice=k0,
                last_slice=k1,
                first_slice_sop_instance_uid=str(uid_list[k0]) if uid_list else None,
                last_slice_sop_instance_uid=str(uid_list[k1]) if uid_list else None,
            )
        )
    found.sort(key=lambda les: (-les.voxel_count, les.centroid_voxel))
    return [replace(les, index=i) for i, les in enumerate(found, start=1)]


def lesion_mask(
    mask: MetaTensor | torch.Tensor | npt.ArrayLike, lesion: Lesion
) -> npt.NDArray[np.bool_]:
    """Boolean ``(I, J, K)`` mask of one lesion found by :func:`measure_lesions` on ``mask``.

    The lesion is the 26-connected component inside its bounding box with its voxel count
    (other lesions may reach into the box, but they are not connected to it).

    Raises
    ------
    MonaiTumorError
        If no such component exists (the lesion was measured on another mask).
    """
    m = _to_numpy(mask)
    (i0, j0, k0), (i1, j1, k1) = lesion.bbox_voxel
    box = (slice(i0, i1 + 1), slice(j0, j1 + 1), slice(k0, k1 + 1))
    inside = m[box]  # only the box: no whole-grid boolean copy
    binary = (inside == lesion.label) if lesion.label is not None else (inside != 0)
    labelled, _ = ndimage.label(binary, structure=_CONNECTIVITY_26)
    box_shape = (i1 - i0 + 1, j1 - j0 + 1, k1 - k0 + 1)
    for number, sub in enumerate(ndimage.find_objects(labelled), start=1):
        if sub is None or tuple(s.stop - s.start for s in sub) != box_shape:
            continue
        component = labelled == number
        if int(np.count_nonzero(component)) == lesion.voxel_count:
            out = np.zeros(m.shape, dtype=bool)
            out[box] = component
            return out
    raise MonaiTumorError(
        f"lesion {lesion.index} ({lesion.voxel_count} voxels in box {lesion.bbox_voxel}) is "
        "not a connected component of this mask; pass the mask it was measured on"
    )


def mark_truncated(
    lesions: list[Lesion],
    mask: MetaTensor | torch.Tensor | npt.ArrayLike,
    fields_of_view: Sequence[Mapping[str, Any]],
) -> list[Lesion]:
    """Flag the lesions that a VOI bundle's field of view cut off.

    Parameters
    ----------
    lesions
        From :func:`measure_lesions` on ``mask`` (any label).
    mask
        The ``(1, I, J, K)`` or ``(I, J, K)`` label map the lesions were measured on.
    fields_of_view
        :meth:`monai_tumor.transforms.voi.FieldOfView.to_dict` records; those with
        ``truncated`` and a ``voxel`` flag the 26-connected lesion holding that voxel.

    Returns
    -------
    list of Lesion
        The same lesions, with ``truncated`` and ``truncation_reason`` set.
    """
    flagged = [f for f in fields_of_view if f.get("truncated") and f.get("voxel") is not None]
    if not flagged or not lesions:
        return list(lesions)
    m = _to_numpy(mask)
    labelled, origin = _label_foreground(m != 0)
    boxes = ndimage.find_objects(labelled)
    reasons: dict[int, list[str]] = {}
    for record in flagged:
        local = np.asarray([int(v) for v in record["voxel"]], dtype=np.intp) - origin
        inside = bool(np.all(local >= 0) and np.all(local < np.asarray(labelled.shape)))
        number = int(labelled[tuple(local)]) if inside else 0
        local_box = boxes[number - 1] if number > 0 else None
        if local_box is None:
            continue
        box = _shifted(local_box, origin)
        bbox = (
            (box[0].start, box[1].start, box[2].start),
            (box[0].stop - 1, box[1].stop - 1, box[2].stop - 1),
        )
        count = int(np.count_nonzero(labelled[local_box] == number))
        for les in lesions:
            if les.bbox_voxel == bbox and les.voxel_count == count:
                reasons.setdefault(les.index, []).append(str(record.get("reason", "")))
    return [
        replace(les, truncated=True, truncation_reason="; ".join(sorted(set(reasons[les.index]))))
        if les.index in reasons
        else les
        for les in lesions
    ]


_AXIS_NAMES = ("column", "row", "slice")


def mark_image_edge(lesions: list[Lesion], shape: Sequence[int]) -> list[Lesion]:
    """Flag the lesions that reach the edge of the image: the scan ends there.

    A lesion whose voxels lie on the first or last column, row or slice of the grid may go
    on beyond what was scanned (a limited scan range, a cropped export), so its mask,
    volume and diameters may be incomplete. Lesions already flagged (a VOI bundle's field
    of view, :func:`mark_truncated`, which reports the image's edge for VOI bundles) keep
    their reason.

    Parameters
    ----------
    lesions
        From :func:`measure_lesions`.
    shape
        The label map's spatial shape ``(I, J, K)``.

    Returns
    -------
    list of Lesion
        The same lesions, those at the edge with ``truncated`` and ``truncation_reason``.
    """
    out: list[Lesion] = []
    for les in lesions:
        (lo, hi) = les.bbox_voxel
        faces = [
            f"{'first' if at_lo else 'last'} {_AXIS_NAMES[axis]}"
            for axis in range(3)
            for at_lo, touched in ((True, lo[axis] == 0), (False, hi[axis] == shape[axis] - 1))
            if touched
        ]
        if les.truncated or not faces:
            out.append(les)
            continue
        reason = f"reaches the image's edge ({', '.join(faces)}): the scan ends there"
        out.append(replace(les, truncated=True, truncation_reason=reason))
    return out


def lesions_report(lesions: list[Lesion], *, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """Build the JSON-ready ``lesions.json`` payload.

    Parameters
    ----------
    lesions
        As returned by :func:`measure_lesions`.
    provenance
        Where the mask came from (model/bundle name and version, input series
        UIDs, software versions, ...). Must not contain patient identifiers;
        copied as given (values made JSON-safe with ``str``).

    Returns
    -------
    dict
        ``{"schema", "provenance", "conventions", "lesion_count",
        "total_volume_ml", "lesions": [...]}``; units are in the key names
        (``volume_ml``, ``diameter_3d_mm``, ``centroid_lps_mm``), intensity units in
        each lesion's ``intensity_unit``.
    """
    return {
        "schema": LESIONS_SCHEMA,
        "provenance": _json_safe(dict(provenance)),
        "conventions": {
            "patient_coordinates": "DICOM LPS (x to patient left, y posterior, z superior), mm",
            "voxel_indices": "[column, row, slice] on the mask grid, 0-based",
            "connectivity": "26-connected components",
            "diameters": "between voxel centres; axial = within planes of constant patient z",
        },
        "lesion_count": len(lesions),
        "total_volume_ml": float(sum(les.volume_ml for les in lesions)),
        "lesions": [les.to_dict() for les in lesions],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
