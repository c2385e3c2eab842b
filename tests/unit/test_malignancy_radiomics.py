"""`training.malignancy_radiomics`: resumable per-nodule cache, CV and held-out scoring."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_tumor.training.malignancy_radiomics import (
    NoduleFeatures,
    evaluate_radiomics_baseline,
    mask_volume_mm3,
    radiomics_table,
)

CASES = ("LIDC-IDRI-0001_R_1", "LIDC-IDRI-0003_R_2", "LIDC-IDRI-0003_R_3", "LIDC-IDRI-0007_R_1")


def test_mask_volume(tmp_path: Path) -> None:
    data = np.zeros((6, 6, 4), dtype=np.uint8)
    data[1:3, 1:4, 1:2] = 1
    path = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-0.5, 0.5, 2.0, 1.0])), str(path))
    assert mask_volume_mm3(path) == pytest.approx(6 * 0.5 * 0.5 * 2.0)


@pytest.mark.realdata
def test_table_is_cached_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    split = {
        "cases": [
            {
                "case": c,
                "patient": c[:14],
                "image": f"lidc_nodules/image/{c}.nii.gz",
                "label": f"lidc_nodules/nodule_mask/{c}.nii.gz",
            }
            for c in CASES
        ],
        "folds": [{"validation": ["LIDC-IDRI-0007_R_1"]}],
    }
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(split), encoding="utf-8")
    calls: list[str] = []

    def volume_only(image: Path, mask: Path) -> dict[str, float]:
        calls.append(mask.name)
        return {"mask_volume_mm3": mask_volume_mm3(mask)}

    cache = tmp_path / "cache"
    first = radiomics_table(
        split_file, data_root=data_dir, cache=cache, compute=volume_only, limit=2
    )
    assert len(first.cases) == 2 and len(calls) == 2
    table = radiomics_table(split_file, data_root=data_dir, cache=cache, compute=volume_only)
    assert table.cases == CASES and len(calls) == 4  # the first two came from the cache
    assert table.columns == ("mask_volume_mm3",) and np.all(table.x > 0)
    assert table.held_out.tolist() == [False, False, False, True]
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{c}.json" for c in CASES)


def test_evaluate_scores_cv_and_held_out() -> None:
    rng = np.random.default_rng(0)
    n = 120
    y = np.tile([0, 1], n // 2).astype(np.int64)
    informative = y + rng.normal(0, 0.7, n)
    x = np.stack([informative, rng.normal(size=n), np.full(n, 3.0)], axis=1)
    x[5, 1] = np.nan  # a missing value is imputed
    patients = tuple(f"p{i // 2}" for i in range(n))
    held = np.array([int(p[1:]) % 4 == 0 for p in patients])
    table = NoduleFeatures(
        x=x,
        columns=("informative", "noise", "constant"),
        cases=tuple(f"c{i}" for i in range(n)),
        patients=patients,
        y=y,
        held_out=held,
        seconds=np.ones(n),
    )
    results = evaluate_radiomics_baseline(table, n_boot=100)
    assert results["features"] == ["informative", "noise"]  # the constant column is dropped
    for model in ("radiomics_logistic", "radiomics_boosting"):
        assert results[f"cv_{model}"]["n"] == int((~held).sum())
        assert results[f"heldout_{model}"]["n"] == int(held.sum())
        assert results[f"heldout_{model}"]["auc"] > 0.75
        assert len(results[f"heldout_{model}_predictions"]) == int(held.sum())
