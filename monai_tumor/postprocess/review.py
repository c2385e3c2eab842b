"""Plausibility review of one segmentation: results that cannot be right are flagged.

A model can return a confident, well-formed label map that is wrong (a bright rim of the
brain outlined as tumour, a scan from a site unlike the training data). The checks here
use only the input image, the label map and what the bundle's inferer measured, and set a
``review`` flag with its reasons; the batch pipeline writes them to ``summary.*``,
``index.html`` and ``lesions.json`` (the segmentation itself is kept).

Checks (each runs only when the bundle's ``metadata.json`` ``monai_tumor.review`` block sets
its threshold, see ``docs/bundle_format.md``):

``rim``
    Fraction of the segmented voxels lying within ``rim_mm`` of the outside of the brain
    (the brain is every voxel where some input channel exceeds that channel's minimum, the
    background of skull-stripped MRI). A tumour hugging the outer rim of the brain is far
    more often the bright cortex rim or a skull-stripping remnant than a tumour.
``tta``
    The smallest Dice, per region, between one test-time-augmentation pass and their
    consensus, as recorded by the bundle's inferer in the prediction's meta
    (``"tta_agreement"``): passes that disagree mean the input is outside what the model
    learnt.
``intensity``
    Statistics of the input, robust to how a site scales intensities: the brain volume (mL)
    and, per channel, the 1st and 99th percentile of the intensities z-scored inside the
    brain. Each must lie within the range the bundle declares (measured on its training data,
    widened); a head that was not skull-stripped or a mislabelled sequence falls outside.

All geometry (voxel spacing) comes from :mod:`monai_tumor.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_tumor.errors import BundleError
from monai_tumor.geometry import foreground_box, spacing_from_affine

__all__ = [
    "TTA_AGREEMENT_KEY",
    "ReviewResult",
    "ReviewSpec",
    "input_statistics",
    "read_review_spec",
    "review_prediction",
    "review_segmentation",
    "rim_fraction",
]

#: Meta key of a prediction under which a bundle's inferer records TTA agreement per region.
TTA_AGREEMENT_KEY = "tta_agreement"


@dataclass(frozen=True)
class ReviewSpec:
    """Thresholds of the plausibility checks (``metadata.json`` ``monai_tumor.review``).

    Attributes
    ----------
    rim_mm
        Thickness of the brain's outer rim (mm).
    max_rim_fraction
        Largest plausible fraction of the segmented voxels inside the rim; ``None`` skips
        the check.
    min_tta_dice
        Per region name (``"WT"`` ...), the smallest plausible Dice between a TTA pass and
        the consensus.
    intensity_ranges
        Per statistic of :func:`input_statistics` (``"brain_volume_ml"``,
        ``"<input>_p01_z"``, ``"<input>_p99_z"``), the plausible ``(low, high)``.
    """

    rim_mm: float = 3.0
    max_rim_fraction: float | None = None
    min_tta_dice: Mapping[str, float] = field(default_factory=dict)
    intensity_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ReviewResult:
    """Outcome of :func:`review_segmentation`.

    Attributes
    ----------
    review
        True if any check failed: a person should look before the result is used.
    reasons
        One sentence per failed check (what was measured, what is plausible).
    measures
        Every measured value (rim fraction, TTA Dice per region, input statistics).
    """

    review: bool
    reasons: tuple[str, ...]
    measures: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"review": bool, "reasons": [...], "measures": {...}}``."""
        return {
            "review": self.review,
            "reasons": list(self.reasons),
            "measures": {k: round(float(v), 4) for k, v in self.measures.items()},
        }


def _number(raw: Any, where: str, path: Path) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not np.isfinite(raw):
        raise BundleError(f"{where} must be a finite number, found {raw!r}", path=path)
    return float(raw)


def read_review_spec(raw: Any, *, path: str | Path) -> ReviewSpec:
    """Validate a ``monai_tumor.review`` block of a bundle's metadata.

    Parameters
    ----------
    raw
        The block: ``{"rim_mm": 3, "max_rim_fraction": 0.5, "min_tta_dice": {"WT": 0.8},
        "intensity_ranges": {"brain_volume_ml": [900, 2100], ...}}`` (every key optional).
    path
        The metadata file, named in errors.

    Returns
    -------
    ReviewSpec

    Raises
    ------
    BundleError
        If a value has the wrong type or a range is empty.
    """
    where = "monai_tumor.review"
    p = Path(path)
    if not isinstance(raw, Mapping):
        raise BundleError(f"{where} must be an object, found {raw!r}", path=p)
    rim_mm = _number(raw.get("rim_mm", 3.0), f"{where}.rim_mm", p)
    if rim_mm <= 0:
        raise BundleError(f"{where}.rim_mm must be positive, found {rim_mm}", path=p)
    max_rim = raw.get("max_rim_fraction")
    max_rim_fraction = None if max_rim is None else _number(max_rim, f"{where}.max_rim_fraction", p)
    tta_raw = raw.get("min_tta_dice", {})
    if not isinstance(tta_raw, Mapping):
        raise BundleError(f"{where}.min_tta_dice must be an object, found {tta_raw!r}", path=p)
    tta = {str(k): _number(v, f"{where}.min_tta_dice.{k}", p) for k, v in tta_raw.items()}
    ranges_raw = raw.get("intensity_ranges", {})
    if not isinstance(ranges_raw, Mapping):
        raise BundleError(
            f"{where}.intensity_ranges must be an object, found {ranges_raw!r}", path=p
        )
    ranges: dict[str, tuple[float, float]] = {}
    for name, bounds in ranges_raw.items():
        key = f"{where}.intensity_ranges.{name}"
        if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
            raise BundleError(f"{key} must be [low, high], found {bounds!r}", path=p)
        low, high = _number(bounds[0], key, p), _number(bounds[1], key, p)
        if not low < high:
            raise BundleError(f"{key} must have low < high, found {bounds!r}", path=p)
        ranges[str(name)] = (low, high)
    return ReviewSpec(
        rim_mm=rim_mm,
        max_rim_fraction=max_rim_fraction,
        min_tta_dice=tta,
        intensity_ranges=ranges,
    )


def _array(x: MetaTensor | torch.Tensor | npt.ArrayLike) -> npt.NDArray[Any]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _brain(image: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    flat = image.reshape(image.shape[0], -1)
    mins = flat.min(axis=1).reshape(-1, *([1] * (image.ndim - 1)))
    return np.asarray((image > mins).any(axis=0))


def _spacing(image: MetaTensor) -> tuple[float, float, float]:
    sx, sy, sz = spacing_from_affine(np.asarray(image.affine, dtype=np.float64))
    return float(sx), float(sy), float(sz)


def rim_fraction(
    image: MetaTensor, label: MetaTensor | torch.Tensor, *, rim_mm: float = 3.0
) -> float:
    """Fraction of the labelled voxels within ``rim_mm`` of the outside of the brain.

    Parameters
    ----------
    image
        The model input ``(C, I, J, K)`` with its affine (skull-stripped MRI channels).
    label
        Label map ``(1, I, J, K)`` on the same grid; every value > 0 counts.
    rim_mm
        Rim thickness (mm), measured with the voxel spacing of ``image``.

    Returns
    -------
    float
        In [0, 1]; 0 for an empty label map.
    """
    return _rim_fraction(_array(label)[0] > 0, _brain(_array(image)), _spacing(image), rim_mm)


def _rim_fraction(
    lab: npt.NDArray[np.bool_],
    brain: npt.NDArray[np.bool_],
    spacing: tuple[float, float, float],
    rim_mm: float,
) -> float:
    label_box = foreground_box(lab)
    if label_box is None:
        return 0.0
    total = int(lab[label_box].sum())
    # Distance of a brain voxel to the nearest voxel outside it (mm), where everything
    # beyond the volume's border counts as outside (a brain cut by the field of view has a
    # rim there too). Only the labelled voxels' distances up to rim_mm matter, and an
    # outside voxel within rim_mm of one lies within ceil(rim_mm / spacing) voxels of the
    # label's bounding box along every axis: the transform runs on that box grown by one
    # more voxel, not on the whole volume (a nearer outside voxel is always inside the
    # box, so the rim test gives the same answer for every labelled voxel).
    lo, hi = [], []
    for axis, (along, step) in enumerate(zip(label_box, spacing, strict=True)):
        margin = math.ceil(rim_mm / step) + 1
        lo.append(max(-1, along.start - margin))  # -1, n: the outside beyond the border
        hi.append(min(lab.shape[axis] + 1, along.stop + margin))
    src = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, lab.shape, strict=True))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo, strict=True))
    shape = tuple(b - a for a, b in zip(lo, hi, strict=True))
    region = np.zeros(shape, dtype=bool)
    region[dst] = brain[src]
    if region.all():  # no outside voxel near any labelled voxel
        return 0.0
    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    rim = region[dst] & (depth[dst] <= rim_mm)
    return float((lab[src] & rim).sum()) / total


def input_statistics(image: MetaTensor, input_names: Sequence[str]) -> dict[str, float]:
    """Scale-free statistics of a model input, compared with the training data's.

    Parameters
    ----------
    image
        ``(C, I, J, K)`` with its affine; channel ``c`` is input ``input_names[c]``.
    input_names
        Channel names (``("flair", "t1c")``).

    Returns
    -------
    dict
        ``brain_volume_ml`` and, per channel, ``<name>_p01_z`` and ``<name>_p99_z``: the 1st
        and 99th percentiles of the brain voxels z-scored with their own mean and standard
        deviation (unchanged by any increasing linear rescaling of the channel).
    """
    arr = _array(image)
    return _input_statistics(arr, _brain(arr), _spacing(image), input_names)


def _input_statistics(
    arr: npt.NDArray[Any],
    brain: npt.NDArray[np.bool_],
    spacing: tuple[float, float, float],
    input_names: Sequence[str],
) -> dict[str, float]:
    # brain: the same voxels in the input's dtype as in float64
    stats = {"brain_volume_ml": float(brain.sum()) * spacing[0] * spacing[1] * spacing[2] / 1000.0}
    for c, name in enumerate(input_names):
        values = arr[c][brain].astype(np.float64)  # only the brain's voxels, to float64
        if values.size < 2:
            stats[f"{name}_p01_z"] = 0.0
            stats[f"{name}_p99_z"] = 0.0
            continue
        std = float(values.std()) or 1.0
        z = (values - float(values.mean())) / std
        p01, p99 = np.percentile(z, [1.0, 99.0])
        stats[f"{name}_p01_z"] = float(p01)
        stats[f"{name}_p99_z"] = float(p99)
    return stats


def review_segmentation(
    image: MetaTensor,
    label: MetaTensor,
    *,
    spec: ReviewSpec,
    input_names: Sequence[str],
    tta_agreement: Mapping[str, Any] | None = None,
) -> ReviewResult:
    """Run the plausibility checks of ``spec`` on one segmentation.

    Parameters
    ----------
    image
        The model input ``(C, I, J, K)`` (channels in ``input_names`` order).
    label
        The label map ``(1, I, J, K)`` on the same grid.
    spec
        Thresholds (:func:`read_review_spec` of the bundle's metadata).
    input_names
        Channel names, used in statistic names.
    tta_agreement
        Per region the smallest Dice between a TTA pass and the consensus (the bundle
        inferer's ``"tta_agreement"`` meta); ``None`` when the inferer did not record it,
        in which case the TTA check cannot run and says so if the spec asks for it.

    Returns
    -------
    ReviewResult
    """
    reasons: list[str] = []
    measures: dict[str, float] = {}
    arr, spacing = _array(image), _spacing(image)
    brain = _brain(arr) if spec.max_rim_fraction is not None or spec.intensity_ranges else None
    if spec.max_rim_fraction is not None and brain is not None:
        fraction = _rim_fraction(_array(label)[0] > 0, brain, spacing, spec.rim_mm)
        measures["rim_fraction"] = fraction
        if fraction > spec.max_rim_fraction:
            reasons.append(
                f"{fraction:.0%} of the segmented voxels lie within {spec.rim_mm:g} mm of the "
                f"brain's outer rim (plausible: at most {spec.max_rim_fraction:.0%}); the "
                "bright rim of the brain may have been segmented instead of a tumour"
            )
    if spec.min_tta_dice:
        if tta_agreement is None:
            reasons.append(
                "test-time augmentation agreement was not measured (the bundle ran without "
                "TTA); the result cannot be checked for stability"
            )
        else:
            for region, minimum in spec.min_tta_dice.items():
                value = tta_agreement.get(region)
                if value is None:
                    continue
                measures[f"tta_dice_{region}"] = float(value)
                if float(value) < minimum:
                    reasons.append(
                        f"test-time augmentation passes disagree on {region} (smallest Dice "
                        f"with their consensus {float(value):.2f}, plausible: at least "
                        f"{minimum:.2f}); the input may be unlike the training data"
                    )
    if spec.intensity_ranges and brain is not None:
        stats = _input_statistics(arr, brain, spacing, input_names)
        measures.update(stats)
        outside = [
            f"{name} {stats[name]:.3g} (training range {low:.3g} to {high:.3g})"
            for name, (low, high) in spec.intensity_ranges.items()
            if name in stats and not low <= stats[name] <= high
        ]
        if outside:
            reasons.append(
                "input intensity statistics far from the training data: "
                + "; ".join(outside)
                + "; check that the series are skull-stripped FLAIR and T1c of the same study"
            )
    return ReviewResult(review=bool(reasons), reasons=tuple(reasons), measures=measures)


def review_prediction(
    image: MetaTensor,
    label: MetaTensor,
    *,
    spec: ReviewSpec | None,
    input_names: Sequence[str],
) -> ReviewResult | None:
    """Review a label map returned by ``LoadedBundle.segment`` (None without a spec).

    The TTA agreement is read from the label's meta (``"tta_agreement"``, put there by
    :meth:`monai_tumor.inference.bundle.LoadedBundle.segment` from the bundle's inferer).
    """
    if spec is None:
        return None
    agreement = label.meta.get(TTA_AGREEMENT_KEY)
    return review_segmentation(
        image,
        label,
        spec=spec,
        input_names=input_names,
        tta_agreement=agreement if isinstance(agreement, Mapping) else None,
    )
