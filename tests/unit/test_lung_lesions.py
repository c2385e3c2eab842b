"""The lung-lesion dataset list and the full-CT VOIs cut from it (training.lung_lesions)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_tumor.training.lung_lesions import (
    FULL_CT_VOI_SPEC,
    build_lung_lesion_split,
    cut_full_ct_vois,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "data" / "datasets" / "lidc_nodules_split.json"
COMMITTED = ROOT / "data" / "datasets" / "lung_lesions_split.json"


@pytest.mark.realdata
def test_split_keeps_the_nodule_split_and_lidc_0001_with_its_voi(
    data_dir: Path, tmp_path: Path
) -> None:
    split = build_lung_lesion_split(data_dir, BASE, crops_per_nodule=2)
    base_fold = json.loads(BASE.read_text(encoding="utf-8"))["folds"][0]
    fold = split["folds"][0]
    assert split["extends"] == BASE.name and fold["nodule_fold"] == 0
    (full,) = split["full_ct"]
    # LIDC-IDRI-0001's VOI is a training case, so its full CT is training data too.
    assert "LIDC-IDRI-0001_R_1" in base_fold["training"]
    assert full["case"] == "LIDC-IDRI-0001" and full["split"] == "training"
    assert fold["training_full_ct"] == ["LIDC-IDRI-0001"] and fold["check"] == ["LUNG1-001"]
    (nodule,) = full["nodules"]
    assert nodule["readers"] == 4 and nodule["volume_ml"] == pytest.approx(6.709, abs=0.01)
    assert len(nodule["crop_centres_lps"]) == 2
    assert not (Path(full["image"]).is_absolute() or Path(split["check"][0]["image"]).is_absolute())

    pairs = cut_full_ct_vois(full, data_dir, tmp_path)
    assert len(pairs) == 2
    for image_path, label_path in pairs:
        image = nib.Nifti1Image.from_filename(image_path)
        label = nib.Nifti1Image.from_filename(label_path)
        assert image.shape == FULL_CT_VOI_SPEC.shape == label.shape
        np.testing.assert_allclose(image.affine, label.affine)
        mask = np.asanyarray(label.dataobj)
        centre = tuple((np.asarray(mask.shape) - 1) // 2)
        # The crop is centred on a point inside the nodule, with lung above and below it.
        assert mask[centre] == 1 or mask[tuple(np.asarray(centre) + 1)] == 1
        assert not mask[:, :, 0].any() and not mask[:, :, -1].any()
        assert np.asanyarray(image.dataobj).min() < -500  # lung around the nodule
    # A rerun keeps the files (resumable).
    before = [p.stat().st_mtime_ns for pair in pairs for p in pair]
    assert cut_full_ct_vois(full, data_dir, tmp_path) == pairs
    assert [p.stat().st_mtime_ns for pair in pairs for p in pair] == before


def test_committed_list_extends_the_nodule_split() -> None:
    split = json.loads(COMMITTED.read_text(encoding="utf-8"))
    base = json.loads(BASE.read_text(encoding="utf-8"))
    assert split["extends"] == BASE.name
    training = set(base["folds"][split["folds"][0]["nodule_fold"]]["training"])
    training_patients = {c["patient"] for c in base["cases"] if c["case"] in training}
    for full in split["full_ct"]:
        assert (full["split"] == "training") == (full["patient"] in training_patients)
        for nodule in full["nodules"]:
            assert len(nodule["crop_centres_lps"]) == 16
