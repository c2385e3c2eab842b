"""infer_one end to end: the nodule bundle on a real CT series, DICOM and NIfTI give one mask."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_tumor.export.seg import read_back_seg
from monai_tumor.pipeline.infer import InferOptions, infer_one
from monai_tumor.pipeline.outputs import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[2]
NODULE = REPO / "bundles" / "lung_nodule_ct"


@pytest.mark.realdata
@pytest.mark.slow
def test_nodule_bundle_dicom_and_nifti_give_the_same_mask(data_dir: Path, tmp_path: Path) -> None:
    case = data_dir / "sts" / "STS_002" / "CT"
    dicom_out, nifti_out = tmp_path / "dicom", tmp_path / "nifti"
    options = InferOptions(device="cpu", seeds_from=case / "dicom" / "mask" / "RS.dcm")
    result = infer_one(case / "dicom" / "image", bundle=NODULE, out_dir=dicom_out, options=options)
    assert result.status == "done" and result.reason == "SEG written"
    files = sorted((case / "dicom" / "image").iterdir())
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    mask = np.asarray(nib.Nifti1Image.from_filename(dicom_out / "mask.nii.gz").dataobj)
    assert mask.any()
    np.testing.assert_array_equal(read_back_seg(dicom_out / "seg.dcm", datasets), mask)
    # The NIfTI copy of the same series, seeded at the same LPS point from a CSV.
    seed = json.loads((dicom_out / MANIFEST_NAME).read_text())["provenance"]["seeds"][0]
    csv_path = tmp_path / "seeds.csv"
    x, y, z = seed["point_lps_mm"]
    csv_path.write_text(f"x,y,z,label\n{x},{y},{z},gtv\n")
    result = infer_one(
        case / "nifti" / "image" / "image.nii.gz",
        bundle=NODULE,
        out_dir=nifti_out,
        options=InferOptions(device="cpu", seeds_csv=csv_path),
    )
    assert result.status == "done" and "NIfTI" in result.reason
    nifti_mask = nib.Nifti1Image.from_filename(nifti_out / "mask.nii.gz")
    np.testing.assert_allclose(
        nifti_mask.affine,
        nib.Nifti1Image.from_filename(dicom_out / "mask.nii.gz").affine,
        atol=1e-4,
    )
    np.testing.assert_array_equal(np.asarray(nifti_mask.dataobj), mask)


@pytest.mark.realdata
def test_console_infer_computes_features_in_workers_with_the_same_values(
    data_dir: Path, tmp_path: Path
) -> None:
    """`monai-tumor infer` (feature workers started at start-up) and the library in one
    process write the same features, in the same order, for the same glioma."""
    import os
    import subprocess
    import sys

    from monai_tumor.pipeline.infer import InferOptions, infer_one

    case = data_dir / "brats" / "validation" / "brats_2013_pat0003_1"
    inputs = [case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"]
    bundle = REPO / "bundles" / "brats_glioma_mri"
    script = "import sys\nfrom monai_tumor.cli.main import main\nmain(sys.argv[1:])\n"
    entry = tmp_path / "entry.py"
    entry.write_text(
        "if __name__ == '__main__':\n" + "".join(f"    {line}\n" for line in script.splitlines()),
        encoding="utf-8",
    )
    console = tmp_path / "console"
    run = subprocess.run(
        [sys.executable, str(entry), "infer", *map(str, inputs), "--bundle", str(bundle),
         "--out", str(console), "--device", "cpu"],
        capture_output=True, text=True, env=dict(os.environ), check=False, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    library = tmp_path / "library"
    infer_one(inputs, bundle=bundle, out_dir=library, options=InferOptions(device="cpu"))
    assert (console / "features.csv").read_bytes() == (library / "features.csv").read_bytes()
    first, second = (json.loads((d / "lesions.json").read_text()) for d in (console, library))
    assert [les["radiomics"] for les in first["lesions"]] == [
        les["radiomics"] for les in second["lesions"]
    ]
    log = (console / "monai-tumor.log").read_text(encoding="utf-8")
    assert "radiomics features in 2 worker processes" in log


@pytest.mark.realdata
@pytest.mark.slow
def test_a_scan_that_ends_inside_the_tumour_is_flagged(data_dir: Path, tmp_path: Path) -> None:
    """A real glioma whose scan range stops half-way through the tumour (the case's top
    slices dropped, as in a limited-coverage MR): the result is not a plain done."""
    case = data_dir / "brats" / "validation" / "brats_2013_pat0003_1"
    reference = np.asarray(nib.Nifti1Image.from_filename(case / "OTMultiClass.nii.gz").dataobj)
    slices = np.flatnonzero(reference.any(axis=(0, 1)))
    stop = int(slices[len(slices) // 2])  # the scan ends in the tumour's middle slice
    inputs = []
    for name in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"):
        image = nib.Nifti1Image.from_filename(case / name)
        cut = image.slicer[:, :, : stop + 1]  # keeps the first slices' positions (affine)
        inputs.append(tmp_path / name)
        nib.save(cut, inputs[-1])
    options = InferOptions(device="cpu", features=False, viewer=None)
    bundle = REPO / "bundles" / "brats_glioma_mri"
    result = infer_one(inputs, bundle=bundle, out_dir=tmp_path / "cut", options=options)
    assert result.status == "done"
    assert any("reaches the image's edge (last slice)" in r for r in result.review), result.review
    lesions = json.loads((tmp_path / "cut" / "lesions.json").read_text())
    assert lesions["lesions"][0]["truncated"] is True
    assert lesions["review"]["review"] is True
    # the whole scan of the same case: the same tumour is not flagged
    whole = infer_one(
        [case / "Flair_subtrMeanDivStd.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz"],
        bundle=bundle,
        out_dir=tmp_path / "whole",
        options=options,
    )
    assert not any("truncated" in r for r in whole.review), whole.review


@pytest.mark.realdata
def test_a_nifti_mask_seeds_the_nodule(data_dir: Path, tmp_path: Path) -> None:
    """`--seeds-from mask.nii.gz`: a reader's NIfTI mask of the nodule gives its seed."""
    lidc = data_dir / "lidc_nodules"
    case = "LIDC-IDRI-0018_R_2"  # a held-out patient of lung_nodule_ct
    reference = lidc / "nodule_mask" / f"{case}.nii.gz"
    result = infer_one(
        lidc / "image" / f"{case}.nii.gz",
        bundle=NODULE,
        out_dir=tmp_path,
        options=InferOptions(device="cpu", seeds_from=reference),
    )
    assert result.status == "done", result.reason
    provenance = json.loads((tmp_path / MANIFEST_NAME).read_text())["provenance"]
    assert [s["source"] for s in provenance["seeds"]] == [reference.name]
    mask = np.asarray(nib.Nifti1Image.from_filename(tmp_path / "mask.nii.gz").dataobj) > 0
    ref = np.asarray(nib.Nifti1Image.from_filename(reference).dataobj) > 0
    assert 2 * (mask & ref).sum() / (mask.sum() + ref.sum()) > 0.8
