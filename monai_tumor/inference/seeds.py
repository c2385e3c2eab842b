"""Seed points for VOI bundles: from a CSV, an RTSTRUCT, a DICOM SEG or a NIfTI mask.

A seed is one point in **DICOM LPS millimetres** around which a ``voi`` bundle (e.g.
``lung_nodule_ct``) cuts its volume of interest. Seeds come from a viewer click exported as
CSV, or from a prior annotation: one seed per connected component of each ROI / segment, at
the component's centroid (mapped to LPS by :mod:`monai_tumor.geometry`).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from monai_tumor.errors import ConfigError
from monai_tumor.geometry import foreground_box, ras_to_lps, voxel_to_patient

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "Seed",
    "seeds_from_csv",
    "seeds_from_mask",
    "seeds_from_nifti",
    "seeds_from_rtstruct",
    "seeds_from_seg",
]

_COORDS = ("x", "y", "z")
_SERIES = "seriesinstanceuid"
_STUDY = "studyinstanceuid"


@dataclass(frozen=True)
class Seed:
    """One seed point.

    Attributes
    ----------
    point_lps
        ``(x, y, z)`` in DICOM patient coordinates (LPS), mm.
    label
        A name for it, e.g. the ROI / segment label or the CSV ``label`` column.
    source
        The name of the file it came from (file name only, no folders: folder names of
        exports often hold patient identifiers).
    """

    point_lps: tuple[float, float, float]
    label: str = ""
    source: str = ""


def _number(text: str, column: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(
            f"line {line}: column {column!r} is {text!r}, expected a finite number (LPS mm)",
            path=path,
        )
    return value


def seeds_from_csv(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
) -> list[Seed]:
    """Read seed points from a CSV file.

    Columns (header names case-insensitive, any order): ``x``, ``y``, ``z`` (required,
    DICOM LPS mm); optional ``label``, ``SeriesInstanceUID``, ``StudyInstanceUID``. Blank
    lines and lines starting with ``#`` are skipped.

    Parameters
    ----------
    path
        The CSV file (UTF-8, comma separated).
    series_uid, study_uid
        Keep only rows whose ``SeriesInstanceUID`` / ``StudyInstanceUID`` equals this; a
        row with an empty value in that column (or a file without the column) applies to
        every series / study.

    Returns
    -------
    list[Seed]
        In file order; ``source`` is the file name.

    Raises
    ------
    ConfigError
        If the file cannot be read, lacks an ``x``/``y``/``z`` column, or a row has a
        missing or non-numeric coordinate (the message names the file and line).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the seed CSV: {exc}", path=file) from exc
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), start=1)]
    body = [(n, ln) for n, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        raise ConfigError(
            "the seed CSV is empty; expected a header 'x,y,z[,label]' and one row per seed",
            path=file,
        )
    rows = list(csv.reader([ln for _, ln in body]))
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in _COORDS if c not in header]
    if missing:
        raise ConfigError(
            f"line {body[0][0]}: header {rows[0]} lacks column(s) {missing}; expected at least "
            "x,y,z (DICOM LPS mm), optionally label, SeriesInstanceUID, StudyInstanceUID",
            path=file,
        )
    index = {name: header.index(name) for name in header}
    seeds: list[Seed] = []
    for (line, _), row in zip(body[1:], rows[1:], strict=True):
        if len(row) < len(header) and len(row) <= max(index[c] for c in _COORDS):
            raise ConfigError(
                f"line {line}: {len(row)} field(s), the header has {len(header)}", path=file
            )

        def cell(name: str, row: list[str] = row) -> str:
            i = index.get(name)
            return row[i].strip() if i is not None and i < len(row) else ""

        if series_uid is not None and cell(_SERIES) not in ("", series_uid):
            continue
        if study_uid is not None and cell(_STUDY) not in ("", study_uid):
            continue
        x, y, z = (_number(cell(c), c, file, line) for c in _COORDS)
        seeds.append(Seed(point_lps=(x, y, z), label=cell("label"), source=file.name))
    return seeds


def _components(mask: npt.NDArray[np.bool_]) -> Iterable[npt.NDArray[np.float64]]:
    """Centroid (voxel indices) of each 26-connected component, largest first."""
    from scipy import ndimage

    # Work on the bounding box of the mask: a tumour is a tiny part of a 512 x 512 x N CT
    # (LUNG1-001 GTV: 4.7 s on the full grid, milliseconds on its box).
    bounds = foreground_box(mask)
    if bounds is None:
        return []
    box = mask[bounds]
    offset = np.asarray([s.start for s in bounds], dtype=np.float64)
    labels, count = ndimage.label(box, structure=np.ones((3, 3, 3), dtype=bool))
    index = np.arange(1, count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    centroids = ndimage.center_of_mass(box, labels, index)
    order = np.argsort(-sizes, kind="stable")
    return [np.asarray(centroids[i], dtype=np.float64) + offset for i in order]


def seeds_from_mask(
    mask: torch.Tensor | npt.ArrayLike,
    reference: MetaTensor,
    *,
    label: str = "",
    source: str = "",
) -> list[Seed]:
    """One seed per 26-connected component of a binary mask, at its centroid.

    Parameters
    ----------
    mask
        ``(I, J, K)`` or ``(1, I, J, K)`` mask on ``reference``'s grid (non-zero = inside).
    reference
        The image whose voxel-to-RAS ``.affine`` locates the mask.
    label, source
        Copied into every seed.

    Returns
    -------
    list[Seed]
        Largest component first. The centroid of a non-convex component may lie outside it.
    """
    array = np.asarray(torch.as_tensor(mask).detach().cpu().numpy()) != 0
    if array.ndim == 4:
        array = array[0]
    affine_lps = ras_to_lps(torch.as_tensor(reference.affine).detach().cpu().numpy())
    seeds = []
    for centroid in _components(array):
        x, y, z = (float(v) for v in voxel_to_patient(affine_lps, centroid))
        seeds.append(Seed(point_lps=(x, y, z), label=label, source=source))
    return seeds


def seeds_from_rtstruct(
    path: str | os.PathLike[str],
    reference: MetaTensor,
    *,
    roi: str | None = None,
    off_slice: str = "raise",
) -> list[Seed]:
    """One seed per connected component of each matching RTSTRUCT ROI, at its centroid.

    Parameters
    ----------
    path
        The RT Structure Set file.
    reference
        The image the contours are rasterised onto
        (:func:`monai_tumor.ingest.groundtruth.rtstruct_to_mask`), normally the series they
        were drawn on.
    roi
        ROI name or regular expression (searched case-insensitively); ``None`` takes every
        ROI with contours.
    off_slice
        Passed to :func:`~monai_tumor.ingest.groundtruth.rtstruct_to_mask`.

    Returns
    -------
    list[Seed]
        ROIs in file order, components largest first; ``label`` is the ROI name.

    Raises
    ------
    ConfigError
        If no ROI matches ``roi`` (the message lists the ROI names).
    IngestError, InvalidSeriesError
        From reading the file or rasterising it.
    """
    from monai_tumor.ingest.groundtruth import list_rois, rtstruct_to_mask

    file = Path(path)
    rois = [r for r in list_rois(file) if r.contour_count > 0]
    if roi is not None:
        pattern = re.compile(roi, re.IGNORECASE)
        rois = [r for r in rois if r.name == roi or pattern.search(r.name)]
    if not rois:
        names = [r.name for r in list_rois(file)]
        raise ConfigError(
            f"no ROI with contours matches {roi!r}; ROIs in the file: {names}", path=file
        )
    seeds: list[Seed] = []
    for info in rois:
        exact = re.compile(rf"^{re.escape(info.name)}$")
        mask = rtstruct_to_mask(file, reference, roi=exact, off_slice=off_slice)
        seeds.extend(seeds_from_mask(mask, reference, label=info.name, source=file.name))
    return seeds


def seeds_from_nifti(path: str | os.PathLike[str]) -> list[Seed]:
    """One seed per 26-connected component of a NIfTI mask's non-zero voxels, at its centroid.

    The mask is placed by its own header (qform/sform, read as by
    :func:`monai_tumor.ingest.read_series`), so it need not share the image's grid: each seed
    is a point in patient coordinates, and seeds outside the image are dropped later
    (:func:`filter_seeds`).

    Raises
    ------
    ConfigError
        If the file cannot be read as NIfTI or holds no non-zero voxel (the message names it).
    """
    from monai_tumor.errors import MonaiTumorError
    from monai_tumor.ingest import read_series

    file = Path(path)
    try:
        mask = read_series(file)
    except MonaiTumorError as exc:
        raise ConfigError(f"cannot read it as a NIfTI mask: {exc.reason}", path=file) from exc
    seeds = seeds_from_mask(mask.as_tensor()[0], mask, source=file.name)
    if not seeds:
        raise ConfigError("the mask holds no non-zero voxel: no seed", path=file)
    return seeds


def seeds_from_seg(path: str | os.PathLike[str], reference: MetaTensor) -> list[Seed]:
    """One seed per connected component of each segment of a DICOM SEG, at its centroid.

    Parameters
    ----------
    path
        The DICOM Segmentation file.
    reference
        The image the SEG is mapped onto
        (:func:`monai_tumor.ingest.groundtruth.seg_to_mask`).

    Returns
    -------
    list[Seed]
        Segments in file order, components largest first; ``label`` is the SegmentLabel.
    """
    from monai_tumor.ingest.groundtruth import seg_to_mask

    file = Path(path)
    masks = seg_to_mask(file, reference)
    labels = list(masks.meta.get("segment_labels", []))
    seeds: list[Seed] = []
    for s in range(masks.shape[0]):
        name = str(labels[s]) if s < len(labels) else f"segment {s + 1}"
        seeds.extend(seeds_from_mask(masks[s], reference, label=name, source=file.name))
    return seeds
