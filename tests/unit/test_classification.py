"""Classifier scored on the segmentation bundle's masks (evaluation.classification)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_tumor.errors import MonaiTumorError
from monai_tumor.evaluation.classification import (
    ClassifiedNodule,
    classify_nodule,
    main,
    summarise,
)
from monai_tumor.inference import load_bundle
from monai_tumor.inference.bundle import LoadedBundle
from monai_tumor.inference.classifier import LoadedClassifier, load_classifier

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
# held-out patients of the project's split (data/datasets/lidc_nodules_split.json, fold 0)
MALIGNANT = "LIDC-IDRI-0018_R_2"
BENIGN = "LIDC-IDRI-0018_R_1"


@pytest.fixture(scope="module")
def models() -> tuple[LoadedBundle, LoadedClassifier]:
    return (
        load_bundle(BUNDLES / "lung_nodule_ct", device="cpu"),
        load_classifier(BUNDLES / "lung_nodule_malignancy", device="cpu"),
    )


def _voi(data_dir: Path, case: str) -> tuple[Path, Path]:
    lidc = data_dir / "lidc_nodules"
    return lidc / "image" / f"{case}.nii.gz", lidc / "nodule_mask" / f"{case}.nii.gz"


@pytest.mark.parametrize(("case", "malignant"), [(MALIGNANT, 1), (BENIGN, 0)])
def test_both_masks_of_a_real_nodule_are_classified(
    data_dir: Path, models: tuple[LoadedBundle, LoadedClassifier], case: str, malignant: int
) -> None:
    segmenter, classifier = models
    image, reference = _voi(data_dir, case)
    got = classify_nodule(
        image,
        reference,
        segmenter=segmenter,
        classifier=classifier,
        malignant=malignant,
        patient="LIDC-IDRI-0018",
    )
    assert got.case == case and got.malignant == malignant
    assert got.lesions_segmented == 1
    assert got.dice > 0.7
    assert got.probability_segmented is not None
    # the radiologists' label is on the right side of 0.5 for both masks of these nodules
    for p in (got.probability_reference, got.probability_segmented):
        assert 0.0 < p < 1.0
        assert (p > 0.5) == bool(malignant)


@pytest.mark.parametrize("defect", ["empty", "off_grid"])
def test_a_bad_reference_mask_is_refused_by_name(
    data_dir: Path,
    models: tuple[LoadedBundle, LoadedClassifier],
    tmp_path: Path,
    defect: str,
) -> None:
    image, reference = _voi(data_dir, MALIGNANT)
    ref = nib.load(reference)
    assert isinstance(ref, nib.Nifti1Image)
    data = np.asarray(ref.dataobj)
    affine = ref.affine.copy()
    if defect == "empty":
        data = np.zeros_like(data)
    else:
        affine[:3, 3] += 5.0
    bad = tmp_path / f"{defect}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), bad)
    segmenter, classifier = models
    message = "reference mask is empty" if defect == "empty" else "not on the grid"
    with pytest.raises(MonaiTumorError, match=rf"{defect}\.nii\.gz: .*{message}"):
        classify_nodule(
            image, bad, segmenter=segmenter, classifier=classifier, malignant=1, patient="P"
        )


def _nodule(
    i: int, malignant: int, p_ref: float, p_seg: float | None, dice: float = 0.8
) -> ClassifiedNodule:
    return ClassifiedNodule(
        case=f"C{i}",
        patient=f"P{i}",
        malignant=malignant,
        dice=dice if p_seg is not None else 0.0,
        probability_reference=p_ref,
        probability_segmented=p_seg,
        lesions_segmented=0 if p_seg is None else 1,
    )


def test_summary_scores_the_found_nodules_and_counts_the_missed() -> None:
    nodules = [
        _nodule(0, 1, 0.9, 0.8),
        _nodule(1, 1, 0.7, None),  # missed by the segmentation
        _nodule(2, 0, 0.2, 0.3),
        _nodule(3, 0, 0.8, 0.1),  # the reference mask ranks it above a malignant one
        _nodule(4, 1, 0.6, 0.9),
    ]
    got = summarise(nodules, n_boot=50)
    assert got["missed"] == 1
    assert got["reference"]["n"] == 5 and got["segmented"]["n"] == 4
    assert got["paired_reference"]["n"] == 4
    assert got["segmented"]["auc"] == 1.0
    assert got["paired_reference"]["auc"] == 0.75
    assert got["mean_abs_probability_change"] == pytest.approx((0.1 + 0.1 + 0.7 + 0.3) / 4)
    assert got["dice_mean"] == pytest.approx(0.8 * 4 / 5)


def test_summary_of_one_class_is_an_error() -> None:
    with pytest.raises(MonaiTumorError, match="one class only"):
        summarise([_nodule(0, 1, 0.9, 0.8), _nodule(1, 1, 0.4, 0.5)], n_boot=50)


def test_main_writes_the_nodule_table_and_metrics(data_dir: Path, tmp_path: Path) -> None:
    """The first six held-out nodules of the split hold both classes."""
    main(["--out", str(tmp_path), "--limit", "6"])
    with (tmp_path / "nodules.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert {r["malignant"] for r in rows} == {"0", "1"}
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["reference"]["n"] == 6 and metrics["missed"] == 0
    assert 0.0 <= metrics["segmented"]["auc"] <= 1.0
    # written atomically: nothing else is left in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "nodules.csv"]
