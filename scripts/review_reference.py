r"""Measure what the plausibility review compares against, on a bundle's training cases.

For every case of a split file (``data/datasets/brats_split.json``): the input statistics
of :func:`monai_tumor.postprocess.review.input_statistics` (brain volume, per-channel 1st/99th
percentile of the brain z-scores) and the rim fraction of the reference label map; with
``--predictions DIR`` (``<case>.nii.gz`` label maps, e.g. the cross-validation output of the
glioma bundle's ``scripts/crossval.py``) also the rim fraction of each prediction. Writes one
JSON row per case to ``--out`` and prints the ranges (min, max) the thresholds in a bundle's
``metadata.json`` ``monai_tumor.review`` block are derived from.

Usage::

    python scripts/review_reference.py --split data/datasets/brats_split.json \\
        --out review_reference.json [--predictions CV_DIR] [--rim_mm 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_tumor.config import data_root
from monai_tumor.postprocess.review import input_statistics, rim_fraction

NAMES = ("flair", "t1c")


def _volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.Nifti1Image.from_filename(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def measure(
    case: dict[str, Any], root: Path, predictions: Path | None, rim_mm: float
) -> dict[str, Any]:
    """Input statistics and rim fractions (reference, prediction) of one split-file case."""
    vols = [_volume(root / p) for p in case["image"]]
    image = MetaTensor(
        torch.from_numpy(np.stack([v for v, _ in vols])), affine=torch.from_numpy(vols[0][1])
    )
    ref, _ = _volume(root / case["label"])
    row: dict[str, Any] = {"case": case["case"], **input_statistics(image, NAMES)}
    row["rim_fraction_reference"] = rim_fraction(
        image, torch.from_numpy(ref > 0)[None], rim_mm=rim_mm
    )
    if predictions is not None and (predictions / f"{case['case']}.nii.gz").is_file():
        pred, _ = _volume(predictions / f"{case['case']}.nii.gz")
        row["rim_fraction_prediction"] = rim_fraction(
            image, torch.from_numpy(pred > 0)[None], rim_mm=rim_mm
        )
    return row


def main() -> None:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--predictions", type=Path, default=None)
    ap.add_argument("--rim_mm", type=float, default=3.0)
    args = ap.parse_args()
    split = json.loads(args.split.read_text(encoding="utf-8"))
    rows = []
    for case in split["cases"]:
        rows.append(measure(case, data_root(), args.predictions, args.rim_mm))
        print(
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
        )
    args.out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    for key in rows[0]:
        if key != "case":
            values = [r[key] for r in rows if key in r]
            print(f"{key}: min {min(values):.4g} max {max(values):.4g}")


if __name__ == "__main__":
    main()
