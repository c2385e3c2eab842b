"""Write synthetic DICOM series with known geometry, for tests.

Everything is described the package's way: voxel arrays ``[column, row, slice]``
and a 4x4 **LPS** voxel-to-patient affine whose columns are the column step,
the row step, the slice step (any vector: a step not along the normal is a
gantry tilt) and the position of voxel ``[0, 0, 0]``.

    >>> aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.7), slice_step=2.5)
    >>> files = write_series(tmp_path, volume, affine_lps=aff)          # doctest: +SKIP

Functions
---------
``lps_affine``        build an affine from IOP, PixelSpacing and a slice step
``random_rotation``   a rotation matrix from three numbers (for hypothesis)
``write_series``      single-frame CT/MR/PT files, optional shuffling, gaps, rescale, syntax
``write_enhanced``    one enhanced multi-frame CT/MR file with functional groups
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

__all__ = [
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_STORAGE",
    "ENHANCED_MR_STORAGE",
    "MR_IMAGE_STORAGE",
    "lps_affine",
    "random_rotation",
    "write_enhanced",
    "write_series",
]

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.128")
ENHANCED_CT_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
ENHANCED_MR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4.1")
_SOP_BY_MODALITY = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE, "PT": PET_IMAGE_STORAGE}


def _ds(value: float) -> str:
    """Format a number as a DICOM DS string (at most 16 characters)."""
    text = f"{value:.10g}"
    if len(text) > 16:
        text = f"{value:.8g}"
    return text


def _ds_list(values: Sequence[float] | npt.ArrayLike) -> list[str]:
    return [_ds(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]


def lps_affine(
    *,
    iop: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    slice_step: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> npt.NDArray[np.float64]:
    """LPS affine from IOP, PixelSpacing (row, column spacing) and a slice step.

    ``slice_step`` is a scalar (along the normal ``row x column``) or an LPS vector.
    """
    row = np.asarray(iop[:3], dtype=np.float64)
    col = np.asarray(iop[3:], dtype=np.float64)
    row /= np.linalg.norm(row)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    step = np.asarray(slice_step, dtype=np.float64)
    aff = np.eye(4)
    aff[:3, 0] = row * float(pixel_spacing[1])
    aff[:3, 1] = col * float(pixel_spacing[0])
    aff[:3, 2] = normal * float(step) if step.ndim == 0 else step.reshape(3)
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return aff


def random_rotation(a: float, b: float, c: float) -> npt.NDArray[np.float64]:
    """Rotation matrix from three numbers in [0, 1) (uniform over SO(3), Shoemake)."""
    q1, q2 = np.sqrt(1 - a), np.sqrt(a)
    t1, t2 = 2 * np.pi * b, 2 * np.pi * c
    w, x, y, z = q2 * np.cos(t2), q1 * np.sin(t1), q1 * np.cos(t1), q2 * np.sin(t2)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _geometry_of(affine_lps: npt.ArrayLike) -> tuple[list[float], list[float], np.ndarray]:
    aff = np.asarray(affine_lps, dtype=np.float64)
    dc, dr = float(np.linalg.norm(aff[:3, 0])), float(np.linalg.norm(aff[:3, 1]))
    iop = [*(aff[:3, 0] / dc), *(aff[:3, 1] / dr)]
    return iop, [dr, dc], aff


def _base(modality: str, sop_class: UID, study_uid: str, series_uid: str, for_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.PatientName = "Synthetic^Test"
    ds.PatientID = "SYNTH"
    ds.StudyDate = "20260101"
    ds.SeriesNumber = 1
    ds.SeriesDescription = "synthetic"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    return ds


def _save(ds: Dataset, path: Path, transfer_syntax: UID) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)


def write_series(
    folder: str | os.PathLike[str],
    stored: npt.NDArray[np.integer],
    *,
    affine_lps: npt.ArrayLike,
    slopes: float | Sequence[float] = 1.0,
    intercepts: float | Sequence[float] = 0.0,
    modality: str = "CT",
    positions: npt.ArrayLike | None = None,
    skip: Sequence[int] = (),
    shuffle_names: bool = False,
    instance_numbers: str = "ascending",
    rng: np.random.Generator | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    for_uid: str | None = None,
    name_prefix: str = "",
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> list[Path]:
    """Write a volume as single-frame images, one file per slice.

    Parameters
    ----------
    folder
        Destination (created).
    stored
        ``(columns, rows, slices)`` stored values (int16).
    affine_lps
        Voxel-to-LPS affine; slice ``k`` is at ``affine[:3, 3] + k * affine[:3, 2]``.
    slopes, intercepts
        RescaleSlope/Intercept, one value or one per slice.
    modality
        "CT", "MR" or "PT" (sets the SOP class).
    positions
        Explicit ImagePositionPatient per slice ``(slices, 3)`` (overrides the affine).
    skip
        Slice indices not written (gaps).
    shuffle_names
        Random file names (hex) instead of slice-ordered ones.
    instance_numbers
        "ascending", "descending" or "random": InstanceNumber, which readers must ignore.
    rng
        Random generator for shuffling.
    study_uid, series_uid, for_uid
        UIDs to use (new ones if None).
    name_prefix
        Prefix of file names (to put two stacks in one folder).
    transfer_syntax
        Explicit VR LE (default) or a syntax pydicom can encode (RLE Lossless, ...).

    Returns
    -------
    list of Path
        Files written, in slice order ``k`` (skipped slices omitted).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = rng or np.random.default_rng(0)
    iop, ps, aff = _geometry_of(affine_lps)
    n: int = stored.shape[2]
    pos = (
        np.asarray(positions, dtype=np.float64).reshape(n, 3)
        if positions is not None
        else aff[:3, 3] + np.arange(n)[:, None] * aff[:3, 2]
    )
    slope_arr = np.broadcast_to(np.asarray(slopes, dtype=np.float64), (n,))
    inter_arr = np.broadcast_to(np.asarray(intercepts, dtype=np.float64), (n,))
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = for_uid or generate_uid()
    numbers = np.arange(1, n + 1)
    if instance_numbers == "descending":
        numbers = numbers[::-1]
    elif instance_numbers == "random":
        numbers = rng.permutation(numbers)
    names = [f"{name_prefix}{k:04d}.dcm" for k in range(n)]
    if shuffle_names:
        names = [f"{name_prefix}{int(v):08x}.dcm" for v in rng.choice(2**31, n, replace=False)]
    order = rng.permutation(n) if shuffle_names else np.arange(n)
    written: dict[int, Path] = {}
    sop_class = _SOP_BY_MODALITY[modality]
    for k in order:
        k = int(k)
        if k in skip:
            continue
        ds = _base(modality, sop_class, study_uid, series_uid, for_uid)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = int(numbers[k])
        ds.ImageOrientationPatient = _ds_list(iop)
        ds.ImagePositionPatient = _ds_list(pos[k])
        ds.PixelSpacing = _ds_list(ps)
        ds.SliceThickness = "99"  # deliberately wrong: spacing must come from positions
        ds.RescaleSlope = _ds(float(slope_arr[k]))
        ds.RescaleIntercept = _ds(float(inter_arr[k]))
        frame = np.ascontiguousarray(stored[:, :, k].T.astype(np.int16))
        ds.Rows, ds.Columns = frame.shape
        ds.PixelData = frame.tobytes()
        path = out / names[k]
        _save(ds, path, transfer_syntax)
        written[k] = path
    return [written[k] for k in sorted(written)]


def write_enhanced(
    path: str | os.PathLike[str],
    stored: npt.NDArray[np.integer],
    *,
    affine_lps: npt.ArrayLike,
    slopes: float | Sequence[float] = 1.0,
    intercepts: float | Sequence[float] = 0.0,
    modality: str = "MR",
    frame_order: Sequence[int] | None = None,
    shared_rescale: bool = False,
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> Path:
    """Write a volume as one enhanced multi-frame CT/MR image.

    Orientation and pixel measures go into the shared functional groups, plane
    position into the per-frame groups, rescale per frame (or shared if
    ``shared_rescale``). ``frame_order[f]`` is the slice stored as frame ``f+1``
    (default: slice order), so readers must sort by position.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    iop, ps, aff = _geometry_of(affine_lps)
    n = stored.shape[2]
    order = list(frame_order) if frame_order is not None else list(range(n))
    slope_arr = np.broadcast_to(np.asarray(slopes, dtype=np.float64), (n,))
    inter_arr = np.broadcast_to(np.asarray(intercepts, dtype=np.float64), (n,))
    sop_class = ENHANCED_MR_STORAGE if modality == "MR" else ENHANCED_CT_STORAGE
    ds = _base(modality, sop_class, generate_uid(), generate_uid(), generate_uid())
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n

    def item(**kwargs: object) -> Dataset:
        it = Dataset()
        for key, value in kwargs.items():
            setattr(it, key, value)
        return it

    shared = Dataset()
    shared.PlaneOrientationSequence = DicomSequence([item(ImageOrientationPatient=_ds_list(iop))])
    shared.PixelMeasuresSequence = DicomSequence(
        [item(PixelSpacing=_ds_list(ps), SliceThickness="99")]
    )
    if shared_rescale:
        shared.PixelValueTransformationSequence = DicomSequence(
            [
                item(
                    RescaleSlope=_ds(float(slope_arr[0])),
                    RescaleIntercept=_ds(float(inter_arr[0])),
                    RescaleType="US",
                )
            ]
        )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k in order:
        fg = Dataset()
        fg.PlanePositionSequence = DicomSequence(
            [item(ImagePositionPatient=_ds_list(aff[:3, 3] + k * aff[:3, 2]))]
        )
        if not shared_rescale:
            fg.PixelValueTransformationSequence = DicomSequence(
                [
                    item(
                        RescaleSlope=_ds(float(slope_arr[k])),
                        RescaleIntercept=_ds(float(inter_arr[k])),
                        RescaleType="US",
                    )
                ]
            )
        per_frame.append(fg)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    frames = np.stack([stored[:, :, k].T.astype(np.int16) for k in order])
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    _save(ds, p, transfer_syntax)
    return p


# Re-exported for tests that want a compressed synthetic series.
RLE_LOSSLESS = RLELossless
