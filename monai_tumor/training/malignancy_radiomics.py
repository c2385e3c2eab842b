"""The radiomics baseline of the nodule malignancy bundle: MIRP features + a linear model.

The baseline the bundle card reports beside volume alone and the shipped model: for every
labelled LIDC nodule VOI, IBSI features computed by :mod:`monai_tumor.radiomics` (MIRP) at
the CT settings of ``lung_nodule_ct`` (1 mm isotropic, re-segmentation -1000..400 HU,
fixed bin size 25 HU), then a logistic regression (or gradient boosting) fitted on the
training patients of the project split. Both models are scored by 3-fold cross-validation
over the training patients (patient-grouped folds, the folds of
:mod:`monai_tumor.training.malignancy`) and once on the held-out patients.

Cost: MIRP's morphology family estimates Moran's I and Geary's C (a brute-force or
Monte-Carlo pair sum in pure Python) and dominates its run time on these small VOIs, so the
baseline takes the intensity, histogram and texture families (:data:`BASELINE_FAMILIES`)
and the nodule volume from the mask itself (voxel count times voxel volume,
``mask_volume_mm3``). Each nodule's features are cached as one JSON file in a cache
folder (written atomically): a rerun skips what is done, a crash loses one nodule.

Run: ``python -m monai_tumor.training.malignancy_radiomics --cache DIR --out results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from monai_tumor.errors import RadiomicsError
from monai_tumor.export.atomic import atomic_write_json
from monai_tumor.training.malignancy import (
    FloatArray,
    binary_metrics,
    load_labels,
    patient_folds,
)

__all__ = [
    "BASELINE_FAMILIES",
    "CV_FOLDS",
    "CV_SEED",
    "NoduleFeatures",
    "evaluate_radiomics_baseline",
    "mask_volume_mm3",
    "nodule_features",
    "radiomics_table",
]

logger = logging.getLogger(__name__)

#: MIRP families of the baseline: intensity statistics, intensity histogram, GLCM, GLRLM,
#: GLSZM. Morphology is replaced by the mask volume (see the module docstring).
BASELINE_FAMILIES = ("stat", "ih", "glcm", "glrlm", "glszm")

#: Cross-validation of the malignancy models: 3 patient-grouped folds with this seed
#: (the same folds as :func:`monai_tumor.training.malignancy.main`).
CV_FOLDS = 3
CV_SEED = 20240725


@dataclass(frozen=True)
class NoduleFeatures:
    """Feature table of the labelled nodules, in split order.

    ``x`` is (N, F) float64 (NaN where MIRP gave none), ``columns`` its F feature names,
    ``seconds`` the MIRP time of each nodule measured when its features were computed.
    """

    x: FloatArray
    columns: tuple[str, ...]
    cases: tuple[str, ...]
    patients: tuple[str, ...]
    y: npt.NDArray[np.int64]
    held_out: npt.NDArray[np.bool_]
    seconds: FloatArray


def mask_volume_mm3(mask: str | Path) -> float:
    """Volume of the non-zero voxels of a NIfTI mask in mm³ (count x |det(affine)|)."""
    img = nib.Nifti1Image.from_filename(str(mask))
    voxel = abs(float(np.linalg.det(np.asarray(img.affine)[:3, :3])))
    return float(np.count_nonzero(np.asarray(img.dataobj))) * voxel


def nodule_features(
    image: Path, mask: Path, *, families: Sequence[str] = BASELINE_FAMILIES
) -> dict[str, float]:
    """MIRP features (CT settings of ``lung_nodule_ct``, ``families``) and the mask volume."""
    from monai_tumor.radiomics import RadiomicsSettings, compute_features

    values = compute_features(image, mask, settings=RadiomicsSettings(families=tuple(families)))
    values["mask_volume_mm3"] = mask_volume_mm3(mask)
    return values


def radiomics_table(
    split_file: str | Path,
    *,
    data_root: Path,
    cache: Path,
    compute: Callable[[Path, Path], dict[str, float]] = nodule_features,
    limit: int | None = None,
) -> NoduleFeatures:
    """Features of every labelled VOI of the split, one cached JSON file per nodule.

    Parameters
    ----------
    split_file
        The patient-level split (``data/datasets/lidc_nodules_split.json``); fold 0's
        validation patients are the held-out set.
    data_root
        The shared data folder (``lidc_nodules/`` with the label sheet).
    cache
        Folder of ``<case>.json`` files (``features``, ``seconds``); existing files are
        reused, so an interrupted run resumes.
    compute
        ``(image, mask) -> features`` of one nodule.
    limit
        Compute at most this many missing nodules (to measure the per-nodule cost).

    Raises
    ------
    RadiomicsError
        If a nodule's features cannot be computed (the file is named).
    """
    split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    held = set(split["folds"][0]["validation"])
    labels = load_labels(data_root / "lidc_nodules" / "MetadatabyNoduleMaxVoting.xlsx")
    cases = [c for c in split["cases"] if c["case"] in labels]
    cache.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    computed = 0
    for n, c in enumerate(cases, 1):
        path = cache / f"{c['case']}.json"
        if path.is_file():
            rows[c["case"]] = json.loads(path.read_text(encoding="utf-8"))
            continue
        if limit is not None and computed >= limit:
            continue
        t0 = time.perf_counter()
        values = compute(data_root / c["image"], data_root / c["label"])
        row = {"features": values, "seconds": round(time.perf_counter() - t0, 3)}
        atomic_write_json(path, row)
        rows[c["case"]] = row
        computed += 1
        logger.info("radiomics %s %.1f s (%d/%d)", c["case"], row["seconds"], n, len(cases))
    cases = [c for c in cases if c["case"] in rows]
    if not cases:
        raise RadiomicsError(f"no nodule features in {cache}", path=cache)
    columns = sorted({k for r in rows.values() for k in r["features"]})
    x = np.array(
        [[_number(rows[c["case"]]["features"].get(k)) for k in columns] for c in cases],
        dtype=np.float64,
    )
    return NoduleFeatures(
        x=x,
        columns=tuple(columns),
        cases=tuple(c["case"] for c in cases),
        patients=tuple(c["patient"] for c in cases),
        y=np.array([labels[c["case"]][0] for c in cases], dtype=np.int64),
        held_out=np.array([c["case"] in held for c in cases], dtype=bool),
        seconds=np.array([float(rows[c["case"]]["seconds"]) for c in cases]),
    )


def _number(v: Any) -> float:
    return float(v) if v is not None and math.isfinite(float(v)) else math.nan


def _logistic() -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # ~100 correlated features on ~640 nodules: L2 with C=0.1 (fixed in advance, not tuned)
    return make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(C=0.1, max_iter=5000),
    )


def _boosting() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # handles NaN itself; shallow trees and early stopping off: a fixed, small recipe
    return HistGradientBoostingClassifier(
        max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0, random_state=0
    )


#: The radiomics models compared on cross-validation.
MODELS: dict[str, Callable[[], Any]] = {
    "radiomics_logistic": _logistic,
    "radiomics_boosting": _boosting,
}


def _usable_columns(x: FloatArray) -> npt.NDArray[np.bool_]:
    """Columns with a value for most nodules and some spread (decided on the given rows)."""
    finite = np.isfinite(x)
    enough = finite.mean(axis=0) >= 0.9
    spread = np.array(
        [np.nanstd(col) > 0 if f.any() else False for col, f in zip(x.T, finite.T, strict=True)]
    )
    return enough & spread


def evaluate_radiomics_baseline(table: NoduleFeatures, *, n_boot: int = 2000) -> dict[str, Any]:
    """CV (training patients) and held-out metrics of each radiomics model.

    ``n_boot`` patient-level bootstrap resamples give each AUC interval
    (:func:`~monai_tumor.training.malignancy.binary_metrics`).

    The feature columns are chosen on the training patients only (present for 90 % of them,
    not constant); each model is scored on 3 patient-grouped folds of the training patients,
    then fitted on all of them and scored once on the held-out patients.
    """
    train = np.flatnonzero(~table.held_out)
    test = np.flatnonzero(table.held_out)
    keep = _usable_columns(table.x[train])
    x = table.x[:, keep]
    y_tr, y_te = table.y[train], table.y[test]
    p_tr = [table.patients[i] for i in train]
    p_te = [table.patients[i] for i in test]
    folds = patient_folds(p_tr, n_folds=CV_FOLDS, seed=CV_SEED)
    results: dict[str, Any] = {
        "n_features": int(keep.sum()),
        "features": [c for c, k in zip(table.columns, keep, strict=True) if k],
        "mirp_seconds_per_nodule": {
            "median": round(float(np.median(table.seconds)), 3),
            "mean": round(float(np.mean(table.seconds)), 3),
            "max": round(float(np.max(table.seconds)), 3),
            "total": round(float(np.sum(table.seconds)), 1),
        },
    }
    for name, factory in MODELS.items():
        oof = np.zeros(len(train))
        for val in folds:
            fit = np.setdiff1d(np.arange(len(train)), val)
            oof[val] = factory().fit(x[train[fit]], y_tr[fit]).predict_proba(x[train[val]])[:, 1]
        results[f"cv_{name}"] = binary_metrics(y_tr, oof, p_tr, n_boot=n_boot)
        p_te_model = factory().fit(x[train], y_tr).predict_proba(x[test])[:, 1]
        results[f"heldout_{name}"] = binary_metrics(y_te, p_te_model, p_te, n_boot=n_boot)
        results[f"heldout_{name}_predictions"] = {
            table.cases[i]: round(float(p), 6) for i, p in zip(test, p_te_model, strict=True)
        }
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Fill the per-nodule feature cache, then score the radiomics models (CV, held out)."""
    from monai_tumor.config import data_root

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--split", default="data/datasets/lidc_nodules_split.json")
    ap.add_argument("--cache", required=True, type=Path, help="per-nodule feature folder")
    ap.add_argument("--out", type=Path, help="write the metrics JSON here")
    ap.add_argument("--limit", type=int, help="compute at most this many new nodules")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    table = radiomics_table(args.split, data_root=data_root(), cache=args.cache, limit=args.limit)
    logger.info(
        "%d nodules, MIRP median %.2f s / nodule", len(table.cases), float(np.median(table.seconds))
    )
    if args.out is not None:
        results = evaluate_radiomics_baseline(table)
        atomic_write_json(args.out, results)
        logger.info(
            "%s",
            {k: v["auc"] for k, v in results.items() if isinstance(v, dict) and "auc" in v},
        )


if __name__ == "__main__":
    main()
