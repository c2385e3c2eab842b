"""Segmentation metrics per case and class: Dice, HD95 (mm), surface Dice (mm tolerance).

The numbers come from MONAI (:class:`monai.metrics.DiceMetric`,
:func:`monai.metrics.compute_hausdorff_distance` with ``percentile=95`` and
:func:`monai.metrics.compute_surface_dice`), with the voxel spacing taken from the
affine (:func:`monai_tumor.geometry.spacing_from_affine`), so distances are in mm on
anisotropic grids.

Grids must match: the prediction and the reference must have the same shape and
the same affine (within ``affine_atol_mm``, default 1e-3 mm), otherwise
:class:`~monai_tumor.errors.InvalidSeriesError` is raised. Nothing is resampled
here: comparing misaligned voxels would report wrong numbers silently.

Empty-mask conventions (MONAI returns NaN or warns for these; we fix them):

==================  ======  ===========  ============
case                dice    hd95_mm      surface_dice
==================  ======  ===========  ============
both empty          1.0     0.0          1.0
one empty           0.0     ``inf``      0.0
==================  ======  ===========  ============

``inf`` (written ``inf`` in the CSV) marks an undefined distance loudly: a mean
over cases becomes ``inf`` instead of silently skipping the case as NaN would.

References may be NIfTI/NRRD/MHA label maps, RTSTRUCT files (one ROI rasterised
with :func:`monai_tumor.ingest.groundtruth.rtstruct_to_mask`) or DICOM SEG files
(:func:`monai_tumor.ingest.groundtruth.seg_to_mask`, segment numbers as labels).
The annotation is placed by its patient coordinates onto the grid of the DICOM
series given as ``ref_series``, or, without it, onto the prediction's own grid.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from pydicom.uid import RTStructureSetStorage

from monai_tumor.errors import ConfigError, IngestError, InvalidSeriesError
from monai_tumor.geometry import spacing_from_affine

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "CSV_COLUMNS",
    "CaseMetric",
    "EvaluationOptions",
    "evaluate",
    "evaluate_case",
    "load_prediction",
    "load_reference",
    "match_cases",
    "parse_label_groups",
    "write_metrics_csv",
]

#: Most distinct values a label map may hold (background included); more means an image.
MAX_LABELS = 1000

#: Columns of the metrics CSV, in order (``class`` is :attr:`CaseMetric.label`).
CSV_COLUMNS: tuple[str, ...] = (
    "case",
    "class",
    "dice",
    "hd95_mm",
    "surface_dice",
    "pred_voxels",
    "ref_voxels",
    "volume_pred_ml",
    "volume_ref_ml",
)

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class CaseMetric:
    """Metrics of one class (label group) in one case.

    Attributes
    ----------
    case
        Case name (file name without its volume suffix, unless given).
    label
        Class name (the ``class`` CSV column), e.g. ``"WT"`` or ``"1"``.
    dice
        Dice coefficient in [0, 1].
    hd95_mm
        95th-percentile symmetric Hausdorff distance between the surfaces, mm.
    surface_dice
        Normalised surface Dice at the tolerance of :class:`EvaluationOptions`.
    pred_voxels, ref_voxels
        Voxels in the prediction / reference mask of this class.
    volume_pred_ml, volume_ref_ml
        The same as volumes in mL (voxel volume from the affine).
    """

    case: str
    label: str
    dice: float
    hd95_mm: float
    surface_dice: float
    pred_voxels: int
    ref_voxels: int
    volume_pred_ml: float
    volume_ref_ml: float

    def to_row(self) -> dict[str, Any]:
        """Return the CSV row (keys :data:`CSV_COLUMNS`)."""
        row = asdict(self)
        row["class"] = row.pop("label")
        return {k: row[k] for k in CSV_COLUMNS}


@dataclass(frozen=True)
class EvaluationOptions:
    """Options of :func:`evaluate` / :func:`evaluate_case`.

    Attributes
    ----------
    labels
        Class name -> label values forming the class (e.g. BraTS
        ``{"WT": (1, 2, 3, 4), "TC": (1, 3, 4), "ET": (4,)}``), applied to both
        prediction and reference. None: one class per non-zero label value present
        in the reference or the prediction (a label only in the prediction is a
        false positive and is reported too).
    tolerance_mm
        Surface Dice tolerance, mm.
    affine_atol_mm
        Largest allowed difference between the two affines, mm.
    roi
        RTSTRUCT references: ROI name or regular expression; None takes the only ROI.
    segments
        SEG references: segment numbers or labels to keep (None: all); the label value
        of a segment is its segment number.
    ref_series
        DICOM series folder giving the grid RTSTRUCT/SEG references are placed on;
        None places them on the prediction's grid.
    ref_name
        Glob of the reference file inside each ``<case>/`` reference sub-folder
        (e.g. ``"OTMultiClass.nii.gz"`` for BraTS); None: the folder must hold one file.
    """

    labels: Mapping[str, Sequence[int]] | None = None
    tolerance_mm: float = 1.0
    affine_atol_mm: float = 1e-3
    roi: str | None = None
    segments: Sequence[int | str] | None = None
    ref_series: Path | None = None
    ref_name: str | None = None


def parse_label_groups(text: str) -> dict[str, tuple[int, ...]]:
    """Parse ``"WT=1,2,3,4;TC=1,3,4;ET=4"`` into ``{"WT": (1, 2, 3, 4), ...}``.

    A bare list ``"1,2"`` gives one class per value (``{"1": (1,), "2": (2,)}``).

    Raises
    ------
    ConfigError
        On an empty name, a non-integer or non-positive label, or a repeated name.
    """
    groups: dict[str, tuple[int, ...]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if "=" in part:
            name, _, values = part.partition("=")
            name = name.strip()
            items = [v.strip() for v in values.split(",") if v.strip()]
        else:
            name, items = "", [v.strip() for v in part.split(",") if v.strip()]
        try:
            numbers = tuple(int(v) for v in items)
        except ValueError as exc:
            raise ConfigError(
                f"label groups {text!r}: {part!r} has a non-integer label; expected "
                "NAME=1,2,3;NAME2=4 (integers > 0)"
            ) from exc
        if not numbers or any(n <= 0 for n in numbers):
            raise ConfigError(f"label groups {text!r}: {part!r} needs labels > 0")
        pairs = [(name, numbers)] if name else [(str(n), (n,)) for n in numbers]
        for key, value in pairs:
            if key in groups:
                raise ConfigError(f"label groups {text!r}: class {key!r} given twice")
            groups[key] = value
    if not groups:
        raise ConfigError(f"label groups {text!r} define no class; e.g. 'WT=1,2,3,4;ET=4'")
    return groups


# --------------------------------------------------------------------------- loading


def _case_name(path: Path) -> str:
    name = path.name
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(_VOLUME_SUFFIXES)


def load_prediction(path: str | Path) -> MetaTensor:
    """Read a prediction label map (NIfTI/NRRD/MHA) as ``(1, I, J, K)`` with its RAS affine."""
    from monai_tumor.ingest.reader import read_series

    return read_series(Path(path))


def _dicom_kind(path: Path) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"]
        )
    except Exception as exc:  # pydicom raises several types on non-DICOM input
        raise IngestError(
            f"not a NIfTI/NRRD/MHA volume and not readable as DICOM ({exc}); expected a label "
            "map, an RTSTRUCT or a DICOM SEG",
            path=path,
        ) from exc
    if str(ds.get("SOPClassUID", "")) == RTStructureSetStorage or ds.get("Modality") == "RTSTRUCT":
        return "RTSTRUCT"
    if ds.get("Modality") == "SEG":
        return "SEG"
    raise IngestError(
        f"DICOM object of modality {ds.get('Modality')!r}; expected an RTSTRUCT or a SEG "
        "as reference",
        path=path,
    )


def load_reference(
    path: str | Path, grid: MetaTensor, *, options: EvaluationOptions | None = None
) -> MetaTensor:
    """Read a reference as a ``(1, I, J, K)`` label map.

    Parameters
    ----------
    path
        NIfTI/NRRD/MHA label map, RTSTRUCT or DICOM SEG file.
    grid
        Grid RTSTRUCT/SEG annotations are placed on (ignored for label maps, which
        carry their own grid and are compared to the prediction's by :func:`evaluate_case`).
    options
        ``roi`` and ``segments`` select what to read.

    Returns
    -------
    MetaTensor
        Label map: label-map values as stored (rounded to integers), RTSTRUCT -> 1
        inside the ROI, SEG -> segment numbers.
    """
    from monai_tumor.ingest import groundtruth

    opts = options or EvaluationOptions()
    ref_path = Path(path)
    if _is_volume(ref_path):
        return load_prediction(ref_path)
    kind = _dicom_kind(ref_path)
    if kind == "RTSTRUCT":
        roi: str | re.Pattern[str]
        if opts.roi is not None:
            roi = opts.roi
        else:
            names = [r.name for r in groundtruth.list_rois(ref_path)]
            if len(names) != 1:
                raise ConfigError(
                    f"the RTSTRUCT has {len(names)} ROIs ({', '.join(names)}); "
                    "choose one with --roi",
                    path=ref_path,
                )
            roi = names[0]
        return groundtruth.rtstruct_to_mask(ref_path, grid, roi=roi)
    return groundtruth.seg_to_mask(ref_path, grid, segments=opts.segments, as_label_map=True)


def match_cases(
    pred: str | Path, ref: str | Path, *, ref_name: str | None = None
) -> list[tuple[str, Path, Path]]:
    """Pair prediction and reference files by case name.

    Parameters
    ----------
    pred
        A prediction file, or a folder of prediction files (``<case>.nii.gz`` ...).
    ref
        A reference file, or a folder holding for each prediction case either a file
        ``<case>.<volume suffix>`` / ``<case>.dcm`` or a sub-folder ``<case>/`` with
        exactly one reference file in it (or one matching ``ref_name``).
    ref_name
        Glob of the reference file inside case sub-folders.

    Returns
    -------
    list[tuple[str, Path, Path]]
        ``(case, prediction, reference)`` sorted by case.

    Raises
    ------
    IngestError
        When a prediction has no reference (all such cases are listed) or a path is missing.
    """
    pred_path, ref_path = Path(pred), Path(ref)
    for p in (pred_path, ref_path):
        if not p.exists():
            raise IngestError("does not exist", path=p)
    if pred_path.is_file():
        if ref_path.is_dir():
            found = _ref_in_folder(ref_path, _case_name(pred_path), ref_name)
            if found is None:
                raise IngestError(
                    f"no reference for case {_case_name(pred_path)!r} in this folder", path=ref_path
                )
            ref_path = found
        return [(_case_name(pred_path), pred_path, ref_path)]
    if not ref_path.is_dir():
        raise IngestError(
            "predictions are a folder but the reference is one file; give a folder of references",
            path=ref_path,
        )
    preds = sorted(p for p in pred_path.iterdir() if p.is_file() and _is_volume(p))
    if not preds:
        raise IngestError("no NIfTI/NRRD/MHA prediction files found", path=pred_path)
    pairs, missing = [], []
    for p in preds:
        case = _case_name(p)
        found = _ref_in_folder(ref_path, case, ref_name)
        if found is None:
            missing.append(case)
        else:
            pairs.append((case, p, found))
    if missing:
        raise IngestError(
            f"no reference for {len(missing)} prediction case(s): {', '.join(missing[:10])}; "
            "expected <case>.nii.gz or <case>/<one file> in the reference folder",
            path=ref_path,
        )
    return pairs


def _ref_in_folder(folder: Path, case: str, ref_name: str | None) -> Path | None:
    for suffix in (*_VOLUME_SUFFIXES, ".dcm"):
        candidate = folder / f"{case}{suffix}"
        if candidate.is_file():
            return candidate
    sub = folder / case
    if sub.is_dir():
        pattern = ref_name or "*"
        files = sorted(p for p in sub.glob(pattern) if p.is_file() and not p.name.startswith("."))
        if len(files) == 1:
            return files[0]
        if len(files) > 1:
            raise IngestError(
                f"{len(files)} files match {pattern!r} in the case folder; expected one "
                "reference per case: pass its name (--ref-name)",
                path=sub,
            )
    return None


# --------------------------------------------------------------------------- metrics


def _label_map(volume: Any, what: str) -> npt.NDArray[np.int64]:
    array = np.asarray(volume.detach().cpu().numpy() if torch.is_tensor(volume) else volume)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise InvalidSeriesError(
                f"the {what} has {array.shape[0]} channels; expected one label map (1, I, J, K)"
            )
        array = array[0]
    if array.ndim != 3:
        raise InvalidSeriesError(f"the {what} has shape {array.shape}; expected (I, J, K)")
    rounded = np.rint(array)
    if not np.allclose(rounded, array, atol=1e-3):
        raise InvalidSeriesError(
            f"the {what} has non-integer values; expected a label map (argmax/threshold first)"
        )
    labels = rounded.astype(np.int64)
    # an image passed by mistake (CT in HU, an MR) is integer too: it would be "evaluated"
    # as hundreds of classes of zero Dice
    lowest = int(labels.min()) if labels.size else 0
    if lowest < 0:
        raise InvalidSeriesError(
            f"the {what} has negative values (down to {lowest}); a label map holds 0 and "
            "positive labels: is this an image (e.g. CT in HU) rather than a mask?"
        )
    count = len(np.unique(labels))
    if count > MAX_LABELS:
        raise InvalidSeriesError(
            f"the {what} holds {count} distinct values; a label map has at most {MAX_LABELS} "
            "(is this an image rather than a mask?)"
        )
    return labels


def _affine_of(volume: Any) -> npt.NDArray[np.float64] | None:
    affine = getattr(volume, "affine", None)
    if affine is None:
        return None
    return np.asarray(
        affine.detach().cpu().numpy() if torch.is_tensor(affine) else affine, dtype=np.float64
    )


def _check_grids(
    pred: Any, ref: Any, shape_p: tuple[int, ...], shape_r: tuple[int, ...], atol: float
) -> npt.NDArray[np.float64] | None:
    if shape_p != shape_r:
        raise InvalidSeriesError(
            f"prediction grid {shape_p} differs from reference grid {shape_r}; resample the "
            "prediction onto the reference grid first (misaligned voxels are never compared)"
        )
    a_p, a_r = _affine_of(pred), _affine_of(ref)
    if a_p is None or a_r is None:
        return a_r if a_r is not None else a_p
    diff = float(np.abs(a_p - a_r).max())
    if diff > atol:
        raise InvalidSeriesError(
            f"prediction and reference affines differ by up to {diff:.4g} mm (> {atol} mm): "
            f"prediction\n{np.array2string(a_p, precision=4)}\nreference\n"
            f"{np.array2string(a_r, precision=4)}\nThey are not on the same grid; resample the "
            "prediction onto the reference grid (misaligned voxels are never compared)"
        )
    return a_r


def _groups(
    labels: Mapping[str, Sequence[int]] | None,
    pred: npt.NDArray[np.int64],
    ref: npt.NDArray[np.int64],
) -> dict[str, tuple[int, ...]]:
    if labels is not None:
        return {str(k): tuple(int(v) for v in vs) for k, vs in labels.items()}
    values = sorted((set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0})
    return {str(v): (int(v),) for v in values}


def evaluate_case(
    pred: Any,
    ref: Any,
    *,
    labels: Mapping[str, Sequence[int]] | None = None,
    spacing: Sequence[float] | None = None,
    tolerance_mm: float = 1.0,
    affine_atol_mm: float = 1e-3,
    case: str = "case",
) -> list[CaseMetric]:
    """Compare one prediction with its reference, per class.

    Parameters
    ----------
    pred, ref
        Label maps ``(I, J, K)`` or ``(1, I, J, K)`` (axes [column, row, slice]):
        MetaTensors with RAS affines (then shapes and affines must agree), or arrays.
    labels
        Class name -> label values; None: one class per non-zero label present in
        the reference or the prediction. See :class:`EvaluationOptions`.
    spacing
        Voxel size in mm along the three axes; default from the affine (required
        when neither input has one).
    tolerance_mm
        Surface Dice tolerance, mm.
    affine_atol_mm
        Largest allowed affine difference, mm.
    case
        Case name for the results.

    Returns
    -------
    list[CaseMetric]
        One entry per class, in the order of ``labels`` (or ascending label value).
        Empty masks follow the conventions in the module docstring.

    Raises
    ------
    InvalidSeriesError
        If the grids differ (shape or affine), or an input is not a label map.
    """
    from monai.metrics import DiceMetric, compute_hausdorff_distance, compute_surface_dice

    p, r = _label_map(pred, "prediction"), _label_map(ref, "reference")
    affine = _check_grids(pred, ref, p.shape, r.shape, affine_atol_mm)
    if spacing is None:
        if affine is None:
            raise InvalidSeriesError(
                "no affine on the inputs and no spacing given; pass spacing=(sx, sy, sz) in mm"
            )
        spacing_mm = tuple(float(s) for s in spacing_from_affine(affine))
        voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    else:
        spacing_mm = tuple(float(s) for s in spacing)
        voxel_ml = math.prod(spacing_mm) / 1000.0
    if len(spacing_mm) != 3 or any(s <= 0 for s in spacing_mm):
        raise InvalidSeriesError(f"spacing {spacing_mm} mm; expected three positive values")
    groups = _groups(labels, p, r)
    results: list[CaseMetric] = []
    dice_metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    for name, values in groups.items():
        mp = np.isin(p, values)
        mr = np.isin(r, values)
        n_p, n_r = int(mp.sum()), int(mr.sum())
        if n_p == 0 and n_r == 0:
            dice, hd95, nsd = 1.0, 0.0, 1.0
        elif n_p == 0 or n_r == 0:
            dice, hd95, nsd = 0.0, math.inf, 0.0
        else:
            yp = torch.from_numpy(mp)[None, None].float()
            yr = torch.from_numpy(mr)[None, None].float()
            dice_scores: Any = dice_metric(yp, yr)
            dice = float(dice_scores[0, 0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MONAI warns on all-inside edges etc.
                hd95 = float(
                    compute_hausdorff_distance(
                        yp, yr, include_background=True, percentile=95, spacing=list(spacing_mm)
                    )[0, 0]
                )
                nsd = float(
                    compute_surface_dice(
                        yp,
                        yr,
                        class_thresholds=[float(tolerance_mm)],
                        include_background=True,
                        spacing=list(spacing_mm),
                    )[0, 0]
                )
        results.append(
            CaseMetric(
                case=case,
                label=name,
                dice=dice,
                hd95_mm=hd95,
                surface_dice=nsd,
                pred_voxels=n_p,
                ref_voxels=n_r,
                volume_pred_ml=n_p * voxel_ml,
                volume_ref_ml=n_r * voxel_ml,
            )
        )
    return results


def evaluate(
    pred_paths: str | Path | Sequence[str | Path],
    ref_paths: str | Path | Sequence[str | Path],
    *,
    options: EvaluationOptions | None = None,
) -> list[CaseMetric]:
    """Evaluate predictions against references, per case and class.

    Parameters
    ----------
    pred_paths, ref_paths
        Either one file or folder each (paired by :func:`match_cases`), or two
        equally long sequences of files paired in order.
    options
        See :class:`EvaluationOptions`.

    Returns
    -------
    list[CaseMetric]
        All rows, cases in order, classes within a case in label order.

    Examples
    --------
    A tumour mask against itself:

    >>> from monai_tumor.config import data_root
    >>> from monai_tumor.evaluation import evaluate
    >>> mask = data_root() / "sts" / "STS_001" / "CT" / "nifti" / "mask" / "mask.nii.gz"
    >>> [(m.label, m.dice, m.hd95_mm) for m in evaluate(mask, mask)]
    [('1', 1.0, 0.0)]
    """
    opts = options or EvaluationOptions()
    if isinstance(pred_paths, (str, Path)) and isinstance(ref_paths, (str, Path)):
        pairs = match_cases(pred_paths, ref_paths, ref_name=opts.ref_name)
    elif isinstance(pred_paths, (str, Path)) or isinstance(ref_paths, (str, Path)):
        raise ConfigError("give either one path each or two lists of paths of equal length")
    else:
        if len(pred_paths) != len(ref_paths):
            raise ConfigError(
                f"{len(pred_paths)} predictions but {len(ref_paths)} references; "
                "pair them one to one"
            )
        pairs = [
            (_case_name(Path(p)), Path(p), Path(r))
            for p, r in zip(pred_paths, ref_paths, strict=True)
        ]
    grid = None
    if opts.ref_series is not None:
        from monai_tumor.ingest.reader import read_series

        grid = read_series(opts.ref_series)
    rows: list[CaseMetric] = []
    for case, p_path, r_path in pairs:
        pred = load_prediction(p_path)
        ref = load_reference(r_path, grid if grid is not None else pred, options=opts)
        try:
            case_rows = evaluate_case(
                pred,
                ref,
                labels=opts.labels,
                tolerance_mm=opts.tolerance_mm,
                affine_atol_mm=opts.affine_atol_mm,
                case=case,
            )
        except InvalidSeriesError as exc:
            if exc.path is not None:
                raise
            # name the pair: in a folder of cases "the prediction ..." alone says not which
            raise InvalidSeriesError(f"against {r_path}: {exc.reason}", path=p_path) from exc
        rows.extend(case_rows)
    return rows


def write_metrics_csv(rows: Sequence[CaseMetric], path: str | Path) -> Path:
    """Write rows to ``path`` atomically with the columns :data:`CSV_COLUMNS`."""
    from monai_tumor.export.atomic import atomic_path

    out = Path(path)
    with atomic_path(out) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_row())
    return out
