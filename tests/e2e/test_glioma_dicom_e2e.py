"""End to end on DICOM: BraTS cases as MR studies -> glioma bundle -> Dice and review.

The case ``brats_2013_pat0003_1`` (intensities z-scored by its site) is written as a DICOM
MR study (FLAIR, T1c and two distractor series, tests/support/brats_dicom.py), scanned, the
bundle's ``configs/series_selection.json`` picks the series, they are read from the files
the index lists and stacked with ``load_inputs``, and the bundle segments them in-process.
``Brats18_2013_11_1`` (raw scanner intensities) goes through the whole batch as a
two-series study. Each label map must lie on the NIfTI grid (affine within 1e-3 mm, checked
by ``evaluate_case``) and its TC/WT/ET Dice against the ground truth must be within 0.02 of
the model card's figures for the released ensemble (``metadata.json``
``eval_metrics.released_ensemble_per_case``), which were measured on the NIfTI files: the
DICOM path gives what ``monai.bundle run`` gives. A study covering only a slab of the brain
must come out ``done`` with the review flag set.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_tumor.evaluation.metrics import evaluate_case
from monai_tumor.inference.bundle import load_bundle
from monai_tumor.ingest.index import SeriesIndex
from monai_tumor.ingest.reader import read_series
from monai_tumor.ingest.scan import scan_export
from monai_tumor.ingest.selection import load_inputs, select_series
from monai_tumor.pipeline.batch import BatchOptions, run_batch
from monai_tumor.pipeline.records import SeriesRecord, SeriesStatus
from tests.support.brats_dicom import BratsStudy, brats_case_dir, write_brats_study

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "brats_glioma_mri"
CASE = "brats_2013_pat0003_1"
#: Regions as the model card defines them (the prediction has no label 3).
REGIONS = {"TC": (1, 3, 4), "WT": (1, 2, 3, 4), "ET": (4,)}

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def study(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BratsStudy:
    return write_brats_study(
        brats_case_dir(data_dir, CASE), tmp_path_factory.mktemp("glioma_e2e"), seed=7
    )


def test_case_through_dicom_matches_the_model_card(study: BratsStudy, tmp_path: Path) -> None:
    scan = scan_export(study.root, index_path=tmp_path / "index.sqlite", progress=False)
    (patient,) = scan.patients
    (scanned_study,) = patient.studies
    selection = select_series(scanned_study.series, BUNDLE / "configs" / "series_selection.json")
    assert selection.selected == {"flair": study.flair.series_uid, "t1c": study.t1c.series_uid}

    bundle = load_bundle(BUNDLE, device="cpu", num_threads=2)
    names = tuple(bundle.info.input_names)
    with SeriesIndex(scan.index_path) as index:
        volumes = {
            name: read_series(index.files_for_series(selection.selected[name])) for name in names
        }
    image = load_inputs(volumes, reference="flair", order=names)
    label = bundle.segment(image)

    assert isinstance(label, MetaTensor) and label.dtype == torch.uint8
    assert tuple(label.shape) == (1, 240, 240, 155)
    assert label.meta["SeriesInstanceUID"] == study.flair.series_uid
    assert set(np.unique(label.numpy()).tolist()) <= {0, 1, 2, 4}

    reference_nifti = nib.Nifti1Image.from_filename(study.label_nifti)
    reference = MetaTensor(
        torch.from_numpy(np.rint(np.asarray(reference_nifti.dataobj)).astype(np.int16))[None],
        affine=torch.as_tensor(reference_nifti.affine, dtype=torch.float64),
    )
    # evaluate_case refuses grids whose shape or affine (1e-3 mm) differ
    metrics = {m.label: m.dice for m in evaluate_case(label, reference, labels=REGIONS, case=CASE)}
    card = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    expected = card["eval_metrics"]["released_ensemble_per_case"][CASE]
    for region in REGIONS:
        assert abs(metrics[region] - expected[region]) <= 0.02, (region, metrics, expected)


OTHER_SITE_CASE = "Brats18_2013_11_1"


@pytest.fixture(scope="module")
def other_site_study(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BratsStudy:
    """A BraTS 2018 case (raw intensities) as a two-series MR study: FLAIR and T1c only."""
    return write_brats_study(
        brats_case_dir(data_dir, OTHER_SITE_CASE),
        tmp_path_factory.mktemp("glioma_other_site"),
        seed=7,
        distractors=(),
    )


def _batch(study: BratsStudy, tmp_path: Path) -> tuple[Path, Path, SeriesRecord]:
    """Run the batch on ``study``; return its output folder, the series' folder and record."""
    out = tmp_path / "out"
    result = run_batch(
        study.root,
        out,
        bundle=BUNDLE,
        options=BatchOptions(workers=1, device="cpu", index_path=tmp_path / "index.sqlite"),
    )
    (record,) = [r for r in result.records if r.status is SeriesStatus.DONE]
    assert record.series_instance_uid == study.flair.series_uid
    assert record.folder is not None
    return out, out / record.folder, record


def _summary_rows(out: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``done`` row of ``summary.json`` and of ``summary.csv``."""
    summary = json.loads((out / "summary.json").read_text())
    (row,) = [r for r in summary["series"] if r["status"] == "done"]
    with open(out / "summary.csv", newline="") as handle:
        (csv_row,) = [r for r in csv.DictReader(handle) if r["status"] == "done"]
    return row, csv_row


def test_case_from_another_site_through_the_batch_matches_the_model_card(
    other_site_study: BratsStudy, tmp_path: Path
) -> None:
    """Raw scanner intensities, BraTS 2018 site: the tumour, not the brain's rim, no review."""
    assert set(other_site_study.series) == {"flair", "t1c"}
    out, folder, record = _batch(other_site_study, tmp_path)
    assert record.review is False, record.review_reasons
    mask_nifti = nib.Nifti1Image.from_filename(folder / "mask.nii.gz")
    label = MetaTensor(
        torch.from_numpy(np.asarray(mask_nifti.dataobj).astype(np.int16))[None],
        affine=torch.as_tensor(mask_nifti.affine, dtype=torch.float64),
    )
    reference_nifti = nib.Nifti1Image.from_filename(other_site_study.label_nifti)
    reference = MetaTensor(
        torch.from_numpy(np.rint(np.asarray(reference_nifti.dataobj)).astype(np.int16))[None],
        affine=torch.as_tensor(reference_nifti.affine, dtype=torch.float64),
    )
    metrics = {
        m.label: m.dice
        for m in evaluate_case(label, reference, labels=REGIONS, case=OTHER_SITE_CASE)
    }
    card = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    expected = card["eval_metrics"]["released_ensemble_per_case"][OTHER_SITE_CASE]
    for region in REGIONS:
        assert abs(metrics[region] - expected[region]) <= 0.02, (region, metrics, expected)
    lesions = json.loads((folder / "lesions.json").read_text())
    limit = card["monai_tumor"]["review"]
    assert lesions["review"]["review"] is False
    assert lesions["review"]["measures"]["rim_fraction"] <= limit["max_rim_fraction"]
    row, csv_row = _summary_rows(out)
    assert row["review"] is False and csv_row["review"] == "false"


def test_study_covering_a_slab_of_the_brain_is_flagged_for_review(
    data_dir: Path, tmp_path: Path
) -> None:
    """30 of 155 slices: the brain volume is far below any training case; done, but flagged."""
    study = write_brats_study(
        brats_case_dir(data_dir, OTHER_SITE_CASE),
        tmp_path / "study",
        seed=7,
        distractors=(),
        slices=(60, 90),
    )
    out, folder, record = _batch(study, tmp_path)
    assert record.review is True
    assert any("brain_volume_ml" in reason for reason in record.review_reasons)
    lesions = json.loads((folder / "lesions.json").read_text())
    low = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["monai_tumor"]["review"][
        "intensity_ranges"
    ]["brain_volume_ml"][0]
    assert lesions["review"]["review"] is True
    assert lesions["review"]["measures"]["brain_volume_ml"] < low
    row, csv_row = _summary_rows(out)
    assert row["review"] is True and row["review_reasons"] == list(record.review_reasons)
    assert csv_row["review"] == "true" and "brain_volume_ml" in csv_row["review_reasons"]
    html_text = (out / "index.html").read_text()
    assert "REVIEW" in html_text and "needs review: 1" in html_text
