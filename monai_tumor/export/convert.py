"""Convert one series to NIfTI plus a JSON sidecar of acquisition fields.

The sidecar carries the allow-listed acquisition attributes of the series
(:mod:`monai_tumor.ingest.sidecar`: never patient identifiers), the geometry
as read (shape, spacing, orientation, RAS affine) and provenance (software
versions, the number of source instances).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import MetaTensor
from pydicom.errors import InvalidDicomError

from monai_tumor import __version__
from monai_tumor.errors import ExportError
from monai_tumor.export.atomic import atomic_write_json
from monai_tumor.export.nifti import write_nifti
from monai_tumor.geometry import axis_codes, spacing_from_affine
from monai_tumor.ingest.reader import ReadOptions, read_series
from monai_tumor.ingest.records import SkippedFile
from monai_tumor.ingest.sidecar import acquisition_fields

__all__ = ["ConvertResult", "convert_series", "sidecar_path_for"]


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert_series` wrote.

    Attributes
    ----------
    nifti
        The NIfTI file.
    sidecar
        The JSON sidecar next to it.
    shape
        Voxel grid ``(I, J, K)`` = (columns, rows, slices).
    spacing_mm
        Voxel size along I, J, K in mm.
    series_uid
        SeriesInstanceUID of the source (empty for non-DICOM input).
    skipped_files
        Files of the series left out, with the reason (a truncated file that was
        the only copy of its instance, read as a missing slice under
        ``nonuniform="resample"``; a truncated copy of an instance also present
        intact).
    """

    nifti: Path
    sidecar: Path
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    series_uid: str
    skipped_files: tuple[SkippedFile, ...] = ()


def sidecar_path_for(nifti_path: str | Path) -> Path:
    """``scan.nii.gz`` -> ``scan.json`` (the dcm2niix/BIDS sidecar name)."""
    p = Path(nifti_path)
    name = p.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(name + ".json")


def _first_instance_header(volume: MetaTensor, files: Sequence[Path]) -> pydicom.Dataset | None:
    """Header of the first slice's instance, found among ``files`` by SOPInstanceUID."""
    uids = volume.meta.get("sop_instance_uids") or []
    wanted = str(uids[0]) if uids else None
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue  # not DICOM or unreadable: not the instance we are looking for
        if wanted is None or str(ds.get("SOPInstanceUID", "")) == wanted:
            return ds
    return None


def _source_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, str | Path):
        p = Path(source)
        if p.is_dir():
            return sorted(f for f in p.rglob("*") if f.is_file())
        return [p]
    return [Path(s) for s in source]


def convert_series(
    source: str | Path | Sequence[str | Path],
    out_path: str | Path,
    *,
    options: ReadOptions | None = None,
    series_uid: str | None = None,
) -> ConvertResult:
    """Read one series with exact geometry and write it as NIfTI + JSON sidecar.

    Parameters
    ----------
    source
        A folder holding one series, a list of its files, or a NIfTI/NRRD/MHA file.
    out_path
        Destination ``.nii.gz`` (or ``.nii``). The sidecar is written next to it
        with the same stem and ``.json``.
    options
        Reader options (non-uniform spacing, gantry tilt handling, ...).
    series_uid
        Which series to read when the folder holds several.

    Returns
    -------
    ConvertResult
        Paths written and the geometry of the volume.

    Raises
    ------
    IngestError, InvalidSeriesError
        If the series cannot be read (the message names the file and reason).
    ExportError
        If an output cannot be written.
    """
    files = _source_files(source)
    volume = read_series(source, options=options, series_uid=series_uid)
    out = Path(out_path)
    if not out.name.endswith((".nii", ".nii.gz")):
        raise ExportError("output must end in .nii or .nii.gz", path=out)
    write_nifti(volume, out)
    affine = np.asarray(volume.affine, dtype=np.float64)
    shape = tuple(int(s) for s in volume.shape[-3:])
    spacing = tuple(float(s) for s in spacing_from_affine(affine))
    skipped = tuple(SkippedFile.from_dict(d) for d in volume.meta.get("skipped_files") or [])
    meta: dict[str, Any] = {}
    header = (
        _first_instance_header(volume, files)
        if str(volume.meta.get("SeriesInstanceUID", ""))
        else None
    )
    if header is not None:
        meta.update(acquisition_fields(header))
    meta.update(
        {
            "SeriesInstanceUID": str(volume.meta.get("SeriesInstanceUID", "")),
            "NumberOfSourceInstances": len(set(volume.meta.get("sop_instance_uids") or []) - {""}),
            "ImageShape": list(shape),
            "VoxelSpacingMM": [round(s, 6) for s in spacing],
            "AxisCodesRAS": axis_codes(affine),
            "AffineRAS": affine.round(6).tolist(),
            "SliceResidualMM": round(float(volume.meta.get("slice_residual_mm", 0.0)), 6),
            # Counts, not paths: file names in exports may carry patient names.
            "Resampled": bool(volume.meta.get("resampled", False)),
            "SkippedFiles": len(skipped),
            "ConversionSoftware": "monai-tumor",
            "ConversionSoftwareVersion": __version__,
        }
    )
    sidecar = atomic_write_json(sidecar_path_for(out), meta)
    return ConvertResult(
        nifti=out,
        sidecar=sidecar,
        shape=(shape[0], shape[1], shape[2]),
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        series_uid=meta["SeriesInstanceUID"],
        skipped_files=skipped,
    )
