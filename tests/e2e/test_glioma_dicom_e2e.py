"""End to end on DICOM: a held-out BraTS case as an MR study -> glioma bundle -> Dice.

The held-out case ``brats_2013_pat0003_1`` is written as a DICOM MR study (FLAIR,
T1c and two distractor series, tests/support/brats_dicom.py), scanned, the bundle's
``configs/series_selection.json`` picks the series, they are read from the
files the index lists and stacked with ``load_inputs``, and the bundle segments
them in-process. The label map must lie on the NIfTI grid (affine within
1e-3 mm, checked by ``evaluate_case``) and its TC/WT/ET Dice against the
ground truth must be within 0.02 of the model card's per-case figures
(``metadata.json`` ``eval_metrics.fold0_held_out_per_case``), which were
measured on the NIfTI files.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def test_held_out_case_through_dicom_matches_the_model_card(
    study: BratsStudy, tmp_path: Path
) -> None:
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
    expected = card["eval_metrics"]["fold0_held_out_per_case"][CASE]
    for region in REGIONS:
        assert abs(metrics[region] - expected[region]) <= 0.02, (region, metrics, expected)
