"""Read ground-truth annotations (RTSTRUCT contours, DICOM SEG) onto an image grid.

Both readers place each annotation by its **patient coordinates**, mapped to
voxel indices of the reference image through :mod:`monai_tumor.geometry`:
nothing relies on the order of ContourImageSequence items, on referenced SOP
instances or on frame order. The result has the reference's voxel grid
(``[column, row, slice]``) and RAS affine.

Why not a library rasteriser: highdicom reads and writes SEG but has no RTSTRUCT
rasteriser, and rt-utils would add OpenCV (its ``fillPoly`` rasterises polygon
edges too, a different fill rule at the boundary) for a few lines of work.
Filling each contour with ``skimage.draw.polygon`` (pixel centres inside) on
its slice's (column, row) indices and XOR-ing contours of the same slice
reproduces the reference masks shipped with the ``sts`` data exactly (Dice 1.0,
see ``tests/unit/test_groundtruth.py``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pydicom
import torch
from pydicom.errors import InvalidDicomError
from pydicom.uid import RTStructureSetStorage
from skimage.draw import polygon

from monai_tumor.errors import IngestError, InvalidSeriesError, UnsupportedInputError
from monai_tumor.geometry import patient_to_voxel, ras_to_lps, slice_normal
from monai_tumor.ingest.records import SEG_SOP_CLASSES

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "OffSlicePolicy",
    "RoiInfo",
    "list_rois",
    "rtstruct_to_mask",
    "seg_to_mask",
]


class OffSlicePolicy(str, Enum):
    """What to do with a contour whose plane is not one of the reference slices."""

    #: Raise :class:`InvalidSeriesError` (default: the contour belongs to another grid).
    RAISE = "raise"
    #: Warn and leave the contour out.
    SKIP = "skip"
    #: Warn and draw it on the nearest slice.
    NEAREST = "nearest"


class _ContourType(str, Enum):
    CLOSED_PLANAR = "CLOSED_PLANAR"
    OPEN_PLANAR = "OPEN_PLANAR"
    OPEN_NONPLANAR = "OPEN_NONPLANAR"
    POINT = "POINT"


@dataclass(frozen=True)
class RoiInfo:
    """One ROI of an RT Structure Set.

    Attributes
    ----------
    number
        ROINumber (3006,0022).
    name
        ROIName (3006,0026).
    contour_count
        Number of contours (0 if the ROI has no ROI Contour item).
    geometric_types
        The distinct ContourGeometricType values of its contours.
    frame_of_reference_uid
        ReferencedFrameOfReferenceUID of the ROI.
    """

    number: int
    name: str
    contour_count: int
    geometric_types: tuple[str, ...]
    frame_of_reference_uid: str


def _read_dicom(path: Path, sop_classes: tuple[str, ...], what: str) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as exc:
        raise IngestError(f"cannot read {what}: {exc}; expected a DICOM file", path=path) from exc
    found = str(ds.get("SOPClassUID", ""))
    if found not in sop_classes:
        raise UnsupportedInputError(
            f"SOPClassUID is {found or 'missing'} (Modality {ds.get('Modality', '?')}); "
            f"expected a {what} ({', '.join(sop_classes)})",
            path=path,
        )
    return ds


def _rois(ds: pydicom.Dataset) -> list[tuple[RoiInfo, pydicom.Dataset | None]]:
    contours_by_number = {
        int(item.ReferencedROINumber): item for item in ds.get("ROIContourSequence", [])
    }
    out = []
    for roi in ds.get("StructureSetROISequence", []):
        number = int(roi.ROINumber)
        contour_item = contours_by_number.get(number)
        contours = contour_item.get("ContourSequence", []) if contour_item is not None else []
        info = RoiInfo(
            number=number,
            name=str(roi.get("ROIName", "")),
            contour_count=len(contours),
            geometric_types=tuple(sorted({str(c.ContourGeometricType) for c in contours})),
            frame_of_reference_uid=str(roi.get("ReferencedFrameOfReferenceUID", "")),
        )
        out.append((info, contour_item))
    return out


def list_rois(rtstruct_path: str | os.PathLike[str]) -> list[RoiInfo]:
    """List the ROIs of an RT Structure Set.

    Parameters
    ----------
    rtstruct_path
        The RTSTRUCT file.

    Returns
    -------
    list of RoiInfo
        In StructureSetROISequence order.

    Raises
    ------
    IngestError
        If the file cannot be read.
    UnsupportedInputError
        If it is not an RT Structure Set.
    """
    ds = _read_dicom(Path(rtstruct_path), (RTStructureSetStorage,), "RT Structure Set")
    return [info for info, _ in _rois(ds)]


def _pick_roi(
    rois: list[tuple[RoiInfo, pydicom.Dataset | None]],
    roi: str | re.Pattern[str],
    path: Path,
) -> tuple[RoiInfo, pydicom.Dataset | None]:
    if isinstance(roi, re.Pattern):
        hits = [r for r in rois if roi.search(r[0].name)]
        wanted = f"matching /{roi.pattern}/"
    else:
        hits = [r for r in rois if r[0].name == roi] or [
            r for r in rois if r[0].name.strip().casefold() == roi.strip().casefold()
        ]
        wanted = f"named {roi!r}"
    names = [r[0].name for r in rois]
    if not hits:
        raise IngestError(f"no ROI {wanted}; the file has {names}", path=path)
    if len(hits) > 1:
        raise IngestError(
            f"{len(hits)} ROIs {wanted}: {[h[0].name for h in hits]}; give a narrower name",
            path=path,
        )
    return hits[0]


def _check_frame_of_reference(reference: MetaTensor, found: str, path: Path, what: str) -> None:
    expected = reference.meta.get("FrameOfReferenceUID")
    if expected and found and str(expected) != found:
        raise InvalidSeriesError(
            f"the {what} is in frame of reference {found} but the reference image is in "
            f"{expected}: its coordinates do not apply to this image. Pass the image series "
            "the annotation was drawn on.",
            path=path,
        )


def _lps_affine(reference: MetaTensor) -> npt.NDArray[np.float64]:
    return ras_to_lps(np.asarray(reference.affine, dtype=np.float64))


def _mask_tensor(data: npt.NDArray[Any], reference: MetaTensor, meta: dict[str, Any]) -> MetaTensor:
    from monai.data import MetaTensor

    affine = torch.as_tensor(np.asarray(reference.affine, dtype=np.float64))
    base = {
        k: reference.meta[k]
        for k in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "FrameOfReferenceUID",
            "sop_instance_uids",
            "frame_numbers",
        )
        if k in reference.meta
    }
    base.update(meta)
    base["space"] = "RAS"
    base["spatial_shape"] = np.asarray(data.shape[1:])
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=affine, meta=base)


def rtstruct_to_mask(
    rtstruct_path: str | os.PathLike[str],
    reference: MetaTensor,
    *,
    roi: str | re.Pattern[str],
    off_slice: OffSlicePolicy | str = OffSlicePolicy.RAISE,
    tolerance: float = 0.05,
) -> MetaTensor:
    """Rasterise one RTSTRUCT ROI onto the reference image's voxel grid.

    Each CLOSED_PLANAR contour's LPS points are mapped to fractional voxel
    indices ``[i, j, k]`` of the reference; ``k`` must be (within
    ``tolerance``) the same integer for every point, i.e. the contour lies on a
    reference slice. The polygon is filled on that slice with
    ``skimage.draw.polygon`` (pixels whose centres are inside), and contours on
    the same slice are XOR-ed, so an inner contour cuts a hole.

    Parameters
    ----------
    rtstruct_path
        The RT Structure Set file.
    reference
        Image ``(C, I, J, K)`` with a RAS ``affine`` (as returned by
        :func:`monai_tumor.ingest.reader.read_series`), normally the series
        the contours were drawn on.
    roi
        ROI name (exact, then case-insensitive), or a compiled regular
        expression searched in the names; exactly one ROI must match.
    off_slice
        What to do with a contour that does not lie on a reference slice (or
        not in a plane parallel to the slices): raise, skip or snap to the
        nearest slice (the last two warn).
    tolerance
        Largest distance from an integer slice index, in voxels. The default
        0.05 is above what real exports show (STS_002 PET stores contour z
        0.04 mm = 0.012 voxels off its slices) and far below half a slice.

    Returns
    -------
    MetaTensor
        ``(1, I, J, K)`` uint8 mask (1 inside), the reference's affine, meta
        ``"roi_name"``, ``"roi_number"``, ``"annotation_file"``,
        ``"contours_drawn"``, ``"contours_skipped"``.

    Raises
    ------
    IngestError
        If the file is unreadable or no / several ROIs match.
    InvalidSeriesError
        If the frame of reference differs from the reference image's, or a
        contour is off-slice with ``off_slice="raise"``.
    """
    policy = OffSlicePolicy(off_slice)
    path = Path(rtstruct_path)
    ds = _read_dicom(path, (RTStructureSetStorage,), "RT Structure Set")
    info, contour_item = _pick_roi(_rois(ds), roi, path)
    _check_frame_of_reference(reference, info.frame_of_reference_uid, path, "RTSTRUCT")
    shape = tuple(int(s) for s in reference.shape[1:])
    if len(shape) != 3:
        raise UnsupportedInputError(
            f"reference image has shape {tuple(reference.shape)}; expected (C, I, J, K)"
        )
    affine_lps = _lps_affine(reference)
    mask = np.zeros(shape, dtype=bool)
    drawn = skipped = 0
    contours = contour_item.get("ContourSequence", []) if contour_item is not None else []
    for number, contour in enumerate(contours, start=1):
        kind = str(contour.get("ContourGeometricType", ""))
        if kind != _ContourType.CLOSED_PLANAR.value:
            # Points and open polylines have no inside to fill.
            skipped += 1
            continue
        points = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1, 3)
        ijk = patient_to_voxel(affine_lps, points)
        k_values = ijk[:, 2]
        k = int(np.rint(np.median(k_values)))
        off = float(np.max(np.abs(k_values - k)))
        on_image = 0 <= k < shape[2]
        if off > tolerance or not on_image:
            where = (
                f"{off:.3f} voxels from slice {k}"
                if on_image
                else f"at slice index {k}, outside the image's 0..{shape[2] - 1}"
            )
            message = (
                f"contour {number} of ROI {info.name!r} is {where} (tolerance {tolerance}); "
                "the contour was not drawn on this image's slices"
            )
            if policy is OffSlicePolicy.RAISE:
                raise InvalidSeriesError(
                    message + "; pass the series it was drawn on, or off_slice='nearest'",
                    path=path,
                )
            if policy is OffSlicePolicy.SKIP or not on_image:
                warnings.warn(f"{path}: {message}; skipped", stacklevel=2)
                skipped += 1
                continue
            warnings.warn(f"{path}: {message}; drawn on slice {k}", stacklevel=2)
        rr, cc = polygon(ijk[:, 0], ijk[:, 1], shape=shape[:2])
        layer = np.zeros(shape[:2], dtype=bool)
        layer[rr, cc] = True
        mask[:, :, k] ^= layer
        drawn += 1
    meta = {
        "roi_name": info.name,
        "roi_number": info.number,
        "annotation_file": str(path),
        "contours_drawn": drawn,
        "contours_skipped": skipped,
    }
    return _mask_tensor(mask[None].astype(np.uint8), reference, meta)


# --------------------------------------------------------------------------- DICOM SEG


def _functional_item(seg: Any, index: int, sequence: str) -> pydicom.Dataset | None:
    """Return the item of a functional group macro for frame ``index`` (per-frame, else shared)."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    shared = seg.get("SharedFunctionalGroupsSequence")
    groups = []
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    if shared:
        groups.append(shared[0])
    for group in groups:
        if sequence in group and len(group[sequence].value) > 0:
            item: pydicom.Dataset = group[sequence].value[0]
            return item
    return None


def _frame_voxel_indices(
    seg: Any,
    index: int,
    affine_lps: npt.NDArray[np.float64],
    path: Path,
    tolerance: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """Voxel index of frame pixel (0, 0) and the index steps per column and per row."""
    position = _functional_item(seg, index, "PlanePositionSequence")
    orientation = _functional_item(seg, index, "PlaneOrientationSequence")
    measures = _functional_item(seg, index, "PixelMeasuresSequence")
    if position is None or orientation is None or measures is None:
        return None
    iop = np.asarray(orientation.ImageOrientationPatient, dtype=np.float64)
    spacing = np.asarray(measures.PixelSpacing, dtype=np.float64)  # [row, column] spacing
    ipp = np.asarray(position.ImagePositionPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    base = patient_to_voxel(affine_lps, ipp)
    step_col = patient_to_voxel(affine_lps, ipp + row_dir * spacing[1]) - base
    step_row = patient_to_voxel(affine_lps, ipp + col_dir * spacing[0]) - base
    # Steps must be unit moves along i or j; their error, accumulated across the
    # frame, must stay within the tolerance so the far edge still lands on a voxel.
    extent = max(int(seg.Rows), int(seg.Columns)) - 1
    for step in (step_col, step_row):
        rounded = np.rint(step)
        if (
            np.max(np.abs(step - rounded)) * max(extent, 1) > tolerance
            or np.sum(np.abs(rounded)) != 1
            or rounded[2] != 0
        ):
            ref_normal = slice_normal(
                np.concatenate(
                    [
                        affine_lps[:3, 0] / np.linalg.norm(affine_lps[:3, 0]),
                        affine_lps[:3, 1] / np.linalg.norm(affine_lps[:3, 1]),
                    ]
                )
            )
            raise UnsupportedInputError(
                f"SEG frame {index + 1} is on a pixel grid (orientation {iop.round(4).tolist()}, "
                f"spacing {spacing.tolist()} mm) that is not the reference's (slice normal "
                f"{ref_normal.round(4).tolist()}, spacing "
                f"{np.linalg.norm(affine_lps[:3, :2], axis=0).round(4).tolist()} mm); resample "
                "the segmentation instead of mapping it frame by frame",
                path=path,
            )
    if np.max(np.abs(base - np.rint(base))) > tolerance:
        raise InvalidSeriesError(
            f"SEG frame {index + 1} at {ipp.tolist()} (LPS mm) falls between reference voxels "
            f"(index {base.round(3).tolist()}); the SEG was not made on this image's grid",
            path=path,
        )
    return np.rint(base), np.rint(step_col), np.rint(step_row)


def seg_to_mask(
    seg_path: str | os.PathLike[str],
    reference: MetaTensor,
    *,
    segments: Sequence[int | str] | None = None,
    as_label_map: bool = False,
    tolerance: float = 0.05,
) -> MetaTensor:
    """Map a DICOM SEG onto the reference image's voxel grid.

    Every frame is placed by its plane position: ImagePositionPatient of the
    frame (PlanePositionSequence) is mapped to the reference's voxel indices;
    the slice index must be an integer within ``tolerance`` (so its projection
    on the slice normal equals a reference slice), and the frame's rows and
    columns must run along the reference's. Frames may cover any subset of
    slices, in any order, and may be offset in-plane. This does not depend on
    the SEG declaring that spatial locations are preserved (dcmqi's SEGs do
    not) nor on which source instances it references. Frames must carry a plane
    position (highdicom refuses a SEG with a frame of reference but without
    them, and a source-image reference alone does not say where a pixel is).

    Parameters
    ----------
    seg_path
        The DICOM Segmentation file (binary, fractional or label-map SEG), read with
        pydicom and wrapped with ``highdicom.seg.Segmentation.from_dataset`` (as
        ``highdicom.seg.segread`` does).
    reference
        Image ``(C, I, J, K)`` with a RAS ``affine``.
    segments
        Segment numbers or labels (SegmentLabel, case-insensitive) to keep, in
        output order; ``None`` keeps all.
    as_label_map
        Return one channel whose values are segment numbers, instead of one
        binary channel per segment. Overlapping segments are then an error.
    tolerance
        Largest distance from an integer voxel index, in voxels, for the
        frame origin and for its far edge (pixel spacing mismatch).

    Returns
    -------
    MetaTensor
        ``(S, I, J, K)`` uint8 binary masks (or ``(1, I, J, K)`` label map,
        uint16), the reference's affine; meta ``"segment_numbers"``,
        ``"segment_labels"`` (channel / label order) and ``"annotation_file"``.
        FRACTIONAL segments are thresholded at 0.5.

    Raises
    ------
    IngestError
        If the file cannot be read.
    UnsupportedInputError
        If it is not a SEG, its pixel grid is not the reference's, or
        overlapping segments are asked for as a label map.
    InvalidSeriesError
        If the frame of reference differs or a frame lies off the grid.
    """
    import highdicom as hd

    path = Path(seg_path)
    dataset = _read_dicom(path, tuple(sorted(SEG_SOP_CLASSES)), "DICOM Segmentation")
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as exc:  # highdicom raises plain ValueError/AttributeError on bad files
        raise IngestError(f"highdicom cannot read this SEG: {exc}", path=path) from exc
    _check_frame_of_reference(reference, str(seg.get("FrameOfReferenceUID", "")), path, "SEG")
    seg_type = str(seg.SegmentationType)
    descriptions = {
        int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in seg.SegmentSequence
    }
    if seg_type == "LABELMAP":
        descriptions.pop(0, None)  # segment 0 is the background of a LABELMAP SEG
    wanted = _resolve_segments(segments, descriptions, path)
    channel_of = {number: c for c, number in enumerate(wanted)}

    shape = tuple(int(s) for s in reference.shape[1:])
    affine_lps = _lps_affine(reference)
    masks = np.zeros((len(wanted), *shape), dtype=bool)
    max_fraction = float(seg.get("MaximumFractionalValue", 1) or 1)
    outside = 0
    n_frames = int(seg.get("NumberOfFrames", 1) or 1)
    # highdicom's Segmentation.get_volume() + Volume.match_geometry() would also work for
    # this data, but needs regularly spaced frames and its own (slice, row, column) axes;
    # placing frame by frame through geometry.py also handles a single frame, irregular
    # or sparse frames, and keeps one owner of the orientation maths.
    for index in range(n_frames):
        frame = np.asarray(seg.get_stored_frame(index, as_index=True))
        if seg_type == "LABELMAP":
            present = [n for n in np.unique(frame) if int(n) in channel_of]
            layers = [(channel_of[int(n)], frame == n) for n in present]
        else:
            ident = _functional_item(seg, index, "SegmentIdentificationSequence")
            number = int(ident.ReferencedSegmentNumber) if ident is not None else -1
            if number not in channel_of:
                continue
            on = frame >= 0.5 * max_fraction if seg_type == "FRACTIONAL" else frame > 0
            layers = [(channel_of[number], on)]
        if not any(layer.any() for _, layer in layers):
            continue
        placed = _frame_voxel_indices(seg, index, affine_lps, path, tolerance)
        if placed is None:
            raise UnsupportedInputError(
                f"SEG frame {index + 1} has no plane position, orientation or pixel spacing; "
                "it cannot be placed on the reference grid",
                path=path,
            )
        base, step_col, step_row = placed
        for channel, layer in layers:
            rows, cols = np.nonzero(layer)
            ijk = (
                base[None, :]
                + cols[:, None] * step_col[None, :]
                + rows[:, None] * step_row[None, :]
            ).astype(np.int64)
            inside = np.all((ijk >= 0) & (ijk < np.asarray(shape)), axis=1)
            outside += int(np.count_nonzero(~inside))
            ijk = ijk[inside]
            masks[channel, ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    if outside:
        warnings.warn(
            f"{path}: {outside} segmented pixels fall outside the reference image and were dropped",
            stacklevel=2,
        )
    meta: dict[str, Any] = {
        "segment_numbers": list(wanted),
        "segment_labels": [descriptions[n] for n in wanted],
        "annotation_file": str(path),
        "segmentation_type": seg_type,
    }
    if not as_label_map:
        return _mask_tensor(masks.astype(np.uint8), reference, meta)
    overlap = masks.sum(axis=0) > 1
    if overlap.any():
        raise UnsupportedInputError(
            f"{int(overlap.sum())} voxels belong to more than one segment; a label map cannot "
            "hold them. Use as_label_map=False (one channel per segment) or pick segments.",
            path=path,
        )
    labels = np.zeros(shape, dtype=np.uint16)
    for channel, number in enumerate(wanted):
        labels[masks[channel]] = number
    return _mask_tensor(labels[None], reference, meta)


def _resolve_segments(
    segments: Sequence[int | str] | None,
    descriptions: dict[int, str],
    path: Path,
) -> list[int]:
    if segments is None:
        return sorted(descriptions)
    out: list[int] = []
    for item in segments:
        if isinstance(item, str):
            hits = [n for n, label in descriptions.items() if label.casefold() == item.casefold()]
            if len(hits) != 1:
                raise IngestError(
                    f"segment label {item!r} matches {len(hits)} segments; the SEG has "
                    f"{descriptions}",
                    path=path,
                )
            out.append(hits[0])
        elif int(item) in descriptions:
            out.append(int(item))
        else:
            raise IngestError(
                f"segment number {item} not in this SEG; it has {descriptions}", path=path
            )
    return out
