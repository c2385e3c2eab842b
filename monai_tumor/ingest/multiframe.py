"""Per-frame geometry and rescale of single-frame and enhanced multi-frame DICOM.

A legacy image (CT/MR/PET Image Storage) is one frame whose geometry sits at
the top level. An enhanced image (Enhanced CT/MR/PET, or any object with
functional groups) keeps it in functional group macros, either shared by all
frames (SharedFunctionalGroupsSequence) or per frame
(PerFrameFunctionalGroupsSequence); per-frame values win over shared ones:

* PlanePositionSequence > ImagePositionPatient
* PlaneOrientationSequence > ImageOrientationPatient
* PixelMeasuresSequence > PixelSpacing (and SliceThickness, SpacingBetweenSlices)
* PixelValueTransformationSequence > RescaleSlope, RescaleIntercept

A legacy multi-frame image without per-frame positions (RT Dose) places its
frames with GridFrameOffsetVector along the slice normal.

Both kinds come out as a list of :class:`FrameInfo`, so the stacking code does
not care where a frame came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from monai_tumor.errors import InvalidSeriesError
from monai_tumor.geometry import slice_normal
from monai_tumor.ingest.native_header import (
    COLUMNS,
    ROWS,
    SOP_INSTANCE_UID,
    number_of_frames,
    raw_ascii,
    raw_us,
)

__all__ = ["FrameInfo", "frames_of"]


@dataclass(frozen=True)
class FrameInfo:
    """Geometry and rescale of one frame of one instance.

    Attributes
    ----------
    path
        File holding the frame.
    frame_number
        1-based frame number in that instance (1 for single-frame files).
    sop_instance_uid
        SOPInstanceUID of the instance.
    iop
        ImageOrientationPatient, six LPS direction cosines (row then column direction).
    ipp
        ImagePositionPatient (LPS mm) of the centre of the first transmitted pixel.
    pixel_spacing
        PixelSpacing as stored: (row spacing, column spacing), mm.
    rows, columns
        Frame size.
    slope, intercept
        Modality LUT (RescaleSlope, RescaleIntercept); (1, 0) when absent.
    slice_thickness
        SliceThickness or SpacingBetweenSlices (mm) if present, used only for
        the spacing of a single-slice volume; None otherwise.
    """

    path: Path
    frame_number: int
    sop_instance_uid: str
    iop: tuple[float, float, float, float, float, float]
    ipp: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    slope: float
    intercept: float
    slice_thickness: float | None


def _item(seq_owner: Dataset | None, keyword: str) -> Dataset | None:
    if seq_owner is None:
        return None
    seq = seq_owner.get(keyword)
    if seq:
        return seq[0]
    return None


def _from_groups(keyword: str, per_frame: Dataset | None, shared: Dataset | None) -> Dataset | None:
    item = _item(per_frame, keyword)
    return item if item is not None else _item(shared, keyword)


# Tags read as decimal strings (DS). pydicom converts values lazily, validating
# every number; on a 134-slice CT that conversion costs more than parsing the
# files, so the raw bytes are split and parsed here (DS is ASCII numbers
# separated by backslashes, PS3.5 6.2) and pydicom's value is used whenever
# the element is already converted.
_IPP = 0x00200032
_IOP = 0x00200037
_PIXEL_SPACING = 0x00280030
_SLOPE = 0x00281053
_INTERCEPT = 0x00281052
_THICKNESS = 0x00180050
_SPACING_BETWEEN = 0x00180088
_GRID_FRAME_OFFSETS = 0x3004000C


def _ds_values(src: Dataset | None, tag: int, path: Path) -> tuple[float, ...] | None:
    """Numbers of a DS element, or None when absent or empty."""
    if src is None:
        return None
    elem = src.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    try:
        if isinstance(value, bytes):
            text = value.decode("ascii").strip(" \x00")
            if not text:
                return None
            return tuple(float(v) for v in text.split("\\"))
        if value is None or value == "":
            return None
        if isinstance(value, (str, int, float)):
            return (float(value),)
        return tuple(float(v) for v in value)  # MultiValue of DSfloat
    except (UnicodeDecodeError, ValueError, TypeError) as exc:
        raise InvalidSeriesError(
            f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) holds {value!r}; expected "
            "decimal numbers",
            path=path,
        ) from exc


def _pick(tag: int, path: Path, *sources: Dataset | None) -> tuple[float, ...] | None:
    for src in sources:
        values = _ds_values(src, tag, path)
        if values is not None:
            return values
    return None


def _frame(
    path: Path,
    sop_uid: str,
    number: int,
    n_frames: int,
    ds: Dataset,
    per_frame: Dataset | None,
    shared: Dataset | None,
) -> FrameInfo:
    if per_frame is None and shared is None:
        position = orientation = measures = rescale = None
    else:
        position = _from_groups("PlanePositionSequence", per_frame, shared)
        orientation = _from_groups("PlaneOrientationSequence", per_frame, shared)
        measures = _from_groups("PixelMeasuresSequence", per_frame, shared)
        rescale = _from_groups("PixelValueTransformationSequence", per_frame, shared)
    ipp = _pick(_IPP, path, position, ds)
    iop = _pick(_IOP, path, orientation, ds)
    ps = _pick(_PIXEL_SPACING, path, measures, ds)
    frame_note = f" (frame {number})" if n_frames > 1 else ""
    missing = [
        kw
        for kw, value in (
            ("ImagePositionPatient", ipp),
            ("ImageOrientationPatient", iop),
            ("PixelSpacing", ps),
        )
        if value is None
    ]
    if missing or ipp is None or iop is None or ps is None:
        raise InvalidSeriesError(
            f"no {', '.join(missing)}{frame_note}: the image has no patient geometry, so it "
            "cannot be placed in space. Expected a CT/MR/PET image with a plane position, "
            "orientation and pixel spacing; a projection or secondary capture is not a volume",
            path=path,
        )
    for name, values, count in (
        ("ImagePositionPatient", ipp, 3),
        ("ImageOrientationPatient", iop, 6),
        ("PixelSpacing", ps, 2),
    ):
        if len(values) != count:
            raise InvalidSeriesError(
                f"{name}{frame_note} has {len(values)} values; expected {count}", path=path
            )
    for name, values in (
        ("ImagePositionPatient", ipp),
        ("ImageOrientationPatient", iop),
        ("PixelSpacing", ps),
    ):
        if not all(math.isfinite(v) for v in values):
            raise InvalidSeriesError(
                f"{name}{frame_note} is {list(values)}; expected finite numbers", path=path
            )
    if ps[0] <= 0 or ps[1] <= 0:
        raise InvalidSeriesError(
            f"PixelSpacing{frame_note} is {list(ps)}; expected two positive distances (mm)",
            path=path,
        )
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    if (
        abs(float(np.linalg.norm(row)) - 1) > 0.01
        or abs(float(np.linalg.norm(col)) - 1) > 0.01
        or abs(float(row @ col)) > 0.01
    ):
        raise InvalidSeriesError(
            f"ImageOrientationPatient{frame_note} is {list(iop)}; expected two orthogonal "
            "unit vectors (row and column direction cosines)",
            path=path,
        )
    slope = _pick(_SLOPE, path, rescale, ds)
    intercept = _pick(_INTERCEPT, path, rescale, ds)
    for name, rescale_values in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        if rescale_values is not None and not all(math.isfinite(v) for v in rescale_values):
            raise InvalidSeriesError(
                f"{name}{frame_note} is {list(rescale_values)}; expected a finite number",
                path=path,
            )
    thickness = _pick(_SPACING_BETWEEN, path, measures, ds) or _pick(_THICKNESS, path, measures, ds)
    return FrameInfo(
        path=path,
        frame_number=number,
        sop_instance_uid=sop_uid,
        iop=(iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]),
        ipp=(ipp[0], ipp[1], ipp[2]),
        pixel_spacing=(ps[0], ps[1]),
        rows=raw_us(ds, ROWS, 0),
        columns=raw_us(ds, COLUMNS, 0),
        slope=slope[0] if slope else 1.0,
        intercept=intercept[0] if intercept else 0.0,
        slice_thickness=abs(thickness[0]) if thickness and thickness[0] != 0 else None,
    )


def frames_of(ds: Dataset, path: Path) -> list[FrameInfo]:
    """List the frames of an instance with their geometry and rescale.

    Parameters
    ----------
    ds
        The instance (header is enough; pixel data is not touched).
    path
        The file it came from (for error messages and the record).

    Returns
    -------
    list of FrameInfo
        One entry per frame, in stored frame order (frame numbers 1..N).

    Raises
    ------
    InvalidSeriesError
        A frame lacks position, orientation or pixel spacing.
    """
    sop_uid = raw_ascii(ds, SOP_INSTANCE_UID)
    n_frames = number_of_frames(ds)
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame_seq: Sequence[Dataset] = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame_seq and len(per_frame_seq) != n_frames:
        raise InvalidSeriesError(
            f"PerFrameFunctionalGroupsSequence has {len(per_frame_seq)} items but "
            f"NumberOfFrames is {n_frames}; the file is inconsistent",
            path=path,
        )
    frames = [
        _frame(
            path,
            sop_uid,
            i + 1,
            n_frames,
            ds,
            per_frame_seq[i] if per_frame_seq else None,
            shared,
        )
        for i in range(n_frames)
    ]
    if n_frames > 1 and not any(_item(f, "PlanePositionSequence") for f in per_frame_seq):
        offsets = _ds_values(ds, _GRID_FRAME_OFFSETS, path)
        if offsets is None or len(offsets) != n_frames:
            raise InvalidSeriesError(
                f"{n_frames} frames but no per-frame positions (PlanePositionSequence in "
                "PerFrameFunctionalGroupsSequence, or GridFrameOffsetVector); the frames "
                "cannot be placed in space",
                path=path,
            )
        # RT Dose style (PS3.3 C.8.8.3.2): offsets along the normal from the first frame.
        # With a first offset of 0 they are relative; otherwise they are the z of each
        # frame of an axial stack, which is the same displacement from frame 1.
        normal = slice_normal(frames[0].iop)
        base = np.asarray(frames[0].ipp)
        moved = []
        for f, off in zip(frames, offsets, strict=True):
            pos = base + (off - offsets[0]) * normal
            moved.append(replace(f, ipp=(float(pos[0]), float(pos[1]), float(pos[2]))))
        frames = moved
    return frames
