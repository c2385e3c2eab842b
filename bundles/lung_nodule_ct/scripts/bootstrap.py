"""Patient-level bootstrap of an ``evaluate.json`` run's mean Dice per nodule.

Depends only on numpy (bundle rule: nothing from the project package). Nodules of one patient
are not independent, so patients, not nodules, are resampled (with replacement); the
interval is the 2.5-97.5 percentile range of the resampled means. With a second run on the
same nodules it also gives the paired difference between the two, resampled the same way.

Usage::

    python bundles/lung_nodule_ct/scripts/bootstrap.py EVAL_DIR [BASELINE_EVAL_DIR] \
        [--by-size MASK_DIR]

where each folder holds the ``mean_dice_raw.csv`` that ``evaluate.json`` writes. With
``--by-size`` the nodules are also grouped by the equivalent-sphere diameter of their
reference mask (the file of the same name in ``MASK_DIR``, e.g. ``lidc_nodules/nodule_mask``):
under 10 mm, 10-30 mm, 30 mm and over, each with its own interval (nibabel reads the masks).
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SIZE_CLASSES_MM",
    "BootstrapResult",
    "bootstrap_mean",
    "equivalent_diameter_mm",
    "main",
    "per_nodule_dice",
    "size_class",
]

#: Size classes of lesions of every size (equivalent-sphere diameter, mm): [low, high).
SIZE_CLASSES_MM: tuple[tuple[str, float, float], ...] = (
    ("< 10 mm", 0.0, 10.0),
    ("10-30 mm", 10.0, 30.0),
    (">= 30 mm", 30.0, float("inf")),
)

_PATIENT = re.compile(r"LIDC-IDRI-\d+")


@dataclass(frozen=True)
class BootstrapResult:
    """Mean per nodule with its patient-level bootstrap interval.

    Attributes
    ----------
    mean
        The observed mean over all nodules.
    low, high
        The 95 % percentile interval of the resampled means.
    nodules, patients
        How many of each.
    """

    mean: float
    low: float
    high: float
    nodules: int
    patients: int


def per_nodule_dice(eval_dir: str | Path) -> dict[str, float]:
    """Read ``mean_dice_raw.csv`` of an ``evaluate.json`` run: Dice by input file.

    Parameters
    ----------
    eval_dir
        The run's ``--output_dir``.

    Returns
    -------
    dict
        Input file name -> Dice.
    """
    with open(Path(eval_dir) / "mean_dice_raw.csv", newline="", encoding="utf-8") as fh:
        return {row["filename"]: float(row["mean"]) for row in csv.DictReader(fh)}


def bootstrap_mean(
    values: Mapping[str, float], *, resamples: int = 10_000, seed: int = 0
) -> BootstrapResult:
    """Resample patients with replacement; the mean per nodule of each resample.

    Parameters
    ----------
    values
        Value by nodule file; the patient is the ``LIDC-IDRI-NNNN`` part of the name.
    resamples
        Number of bootstrap resamples.
    seed
        Seed of the generator (the card's numbers use 0).

    Returns
    -------
    BootstrapResult
        The observed mean and its interval.

    Raises
    ------
    ValueError
        If ``values`` is empty or a file name holds no LIDC patient ID.
    """
    if not values:
        raise ValueError("no values to resample")
    by_patient: dict[str, list[float]] = defaultdict(list)
    for name, value in values.items():
        found = _PATIENT.search(name)
        if found is None:
            raise ValueError(f"{name}: no LIDC-IDRI patient ID in the file name")
        by_patient[found.group(0)].append(value)
    groups: Sequence[list[float]] = [by_patient[p] for p in sorted(by_patient)]
    sums = np.array([sum(g) for g in groups])
    counts = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return BootstrapResult(
        mean=float(sums.sum() / counts.sum()),
        low=float(low),
        high=float(high),
        nodules=int(counts.sum()),
        patients=len(groups),
    )


def equivalent_diameter_mm(mask_file: str | Path) -> float:
    """Diameter of the sphere with the volume of a reference mask (voxels > 0), in mm.

    Parameters
    ----------
    mask_file
        A NIfTI mask; its voxel size comes from the header.

    Returns
    -------
    float
        ``(6 V / pi) ** (1/3)``; 0 for an empty mask.
    """
    import nibabel as nib  # only the --by-size option needs it

    image = nib.Nifti1Image.from_filename(str(mask_file))
    voxel_ml = float(np.prod(image.header.get_zooms()[:3]))
    volume = float(np.count_nonzero(np.asarray(image.dataobj) > 0)) * voxel_ml
    return float((6.0 * volume / np.pi) ** (1.0 / 3.0))


def size_class(diameter_mm: float) -> str:
    """Name of the :data:`SIZE_CLASSES_MM` class holding ``diameter_mm``."""
    for name, low, high in SIZE_CLASSES_MM:
        if low <= diameter_mm < high:
            return name
    raise ValueError(f"diameter {diameter_mm!r} mm is in no size class")


def _by_size(run: Mapping[str, float], mask_dir: Path) -> None:
    classes: dict[str, dict[str, float]] = defaultdict(dict)
    for name, value in run.items():
        mask = mask_dir / Path(name).name
        if not mask.is_file():
            raise FileNotFoundError(f"{mask}: reference mask of {name} not found")
        classes[size_class(equivalent_diameter_mm(mask))][name] = value
    for label, _, _ in SIZE_CLASSES_MM:
        if label not in classes:
            print(f"{label}: no nodule")
            continue
        result = bootstrap_mean(classes[label])
        print(
            f"{label}: mean Dice {result.mean:.4f}, 95 % CI {result.low:.4f}-{result.high:.4f} "
            f"({result.nodules} nodules, {result.patients} patients)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the interval of one run, and of its difference to a baseline run if given."""
    args = list(sys.argv[1:] if argv is None else argv)
    mask_dir: Path | None = None
    if "--by-size" in args:
        at = args.index("--by-size")
        if at + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        mask_dir = Path(args[at + 1])
        del args[at : at + 2]
    if len(args) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    run = per_nodule_dice(args[0])
    result = bootstrap_mean(run)
    print(
        f"mean Dice per nodule {result.mean:.4f}, 95 % CI {result.low:.4f}-{result.high:.4f} "
        f"({result.nodules} nodules, {result.patients} patients resampled)"
    )
    if len(args) == 2:
        base = per_nodule_dice(args[1])
        if set(base) != set(run):
            print(f"{args[1]} holds other nodules than {args[0]}", file=sys.stderr)
            return 2
        diff = bootstrap_mean({name: run[name] - base[name] for name in run})
        print(f"paired difference {diff.mean:+.4f}, 95 % CI {diff.low:+.4f} to {diff.high:+.4f}")
    if mask_dir is not None:
        _by_size(run, mask_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
