"""The BraTS-as-DICOM fixture (tests/support/brats_dicom.py): read-back, scan and series selection.

A BraTS case written as a DICOM MR study must read back (monai_tumor.ingest.reader)
to the NIfTI voxels within the documented rescale quantisation and to the NIfTI
affine within 1e-4 mm, and the glioma bundle's selection rules must choose the
FLAIR and T1c series, not the FLAIR reformat or the localizer.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_tumor.errors import UnsupportedInputError
from monai_tumor.geometry import Orientation, patient_to_voxel, voxel_to_patient
from monai_tumor.ingest.enums import ImageKind
from monai_tumor.ingest.reader import read_series
from monai_tumor.ingest.scan import ScanResult, scan_export
from monai_tumor.ingest.selection import SelectionStatus, load_inputs, select_series
from monai_tumor.ingest.series import SeriesInfo
from tests.support.brats_dicom import BratsStudy, brats_case_dir, write_brats_study
from tests.support.dicom_factory import random_rotation

RULES = Path(__file__).resolve().parents[2] / "bundles" / "brats_glioma_mri" / "configs"
RULES_FILE = RULES / "series_selection.json"
CASE = "brats_2013_pat0003_1"


def _nifti(path: Path) -> npt.NDArray[np.float32]:
    return np.asarray(nib.Nifti1Image.from_filename(path).dataobj, dtype=np.float32)


@pytest.fixture(scope="module")
def study(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BratsStudy:
    return write_brats_study(
        brats_case_dir(data_dir, CASE), tmp_path_factory.mktemp("brats_dicom"), seed=3
    )


@pytest.fixture(scope="module")
def volumes(study: BratsStudy) -> dict[str, MetaTensor]:
    return {role: read_series(list(study.series[role].files)) for role in ("flair", "t1c")}


@pytest.fixture(scope="module")
def scanned(study: BratsStudy, tmp_path_factory: pytest.TempPathFactory) -> ScanResult:
    index = tmp_path_factory.mktemp("brats_index") / "index.sqlite"
    return scan_export(study.root, index_path=index, progress=False)


def _by_uid(scan: ScanResult) -> dict[str, SeriesInfo]:
    return {s.series_instance_uid: s for s in scan.series}


# ----------------------------------------------------------------------------- read back


@pytest.mark.realdata
@pytest.mark.parametrize("role", ["flair", "t1c"])
def test_series_reads_back_to_the_nifti(
    study: BratsStudy, volumes: dict[str, MetaTensor], role: str
) -> None:
    series = study.series[role]
    img = volumes[role]
    reference = _nifti(series.source_nifti)
    error = np.abs(img[0].numpy() - reference)
    assert img.shape == (1, *reference.shape) == (1, 240, 240, 155)
    assert float(error.max()) <= series.tolerance
    # the constant background (the series minimum) is the intercept, read back exactly
    background = reference == reference.min()
    assert np.array_equal(img[0].numpy()[background], reference[background])
    affine = img.affine.numpy()
    assert np.abs(affine - nib.Nifti1Image.from_filename(series.source_nifti).affine).max() <= 1e-4
    assert img.meta["SeriesInstanceUID"] == series.series_uid
    assert img.meta["StudyInstanceUID"] == study.study_uid
    assert img.meta["FrameOfReferenceUID"] == study.frame_of_reference_uid
    assert img.meta["SeriesDescription"] == series.description
    # files are returned in slice order k: the reader's per-slice SOP UIDs follow them
    first, last = (pydicom.dcmread(series.files[i], stop_before_pixels=True) for i in (0, -1))
    assert img.meta["sop_instance_uids"][0] == first.SOPInstanceUID
    assert img.meta["sop_instance_uids"][-1] == last.SOPInstanceUID


@pytest.mark.realdata
def test_written_headers_are_those_of_a_real_mr_study(study: BratsStudy) -> None:
    flair = pydicom.dcmread(study.flair.files[0], stop_before_pixels=True)
    t1c = pydicom.dcmread(study.t1c.files[0], stop_before_pixels=True)
    assert flair.SOPClassUID == t1c.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert flair.StudyInstanceUID == t1c.StudyInstanceUID
    assert flair.FrameOfReferenceUID == t1c.FrameOfReferenceUID
    assert flair.SeriesInstanceUID != t1c.SeriesInstanceUID
    assert "ContrastBolusAgent" in t1c and "ContrastBolusAgent" not in flair
    assert (flair.BitsAllocated, flair.PixelRepresentation) == (16, 0)
    # names say nothing about the series, and series share folders
    assert all(p.suffix == "" for p in study.files)
    folders = {p.parent for p in study.flair.files} & {p.parent for p in study.t1c.files}
    assert folders


@pytest.mark.realdata
def test_flair_reformat_lands_on_the_same_world_points(study: BratsStudy) -> None:
    """Every voxel of the coronal MPR sits where its FLAIR voxel is (geometry of the fixture)."""
    mpr = read_series(list(study.series["flair_mpr"].files))
    flair_affine = nib.Nifti1Image.from_filename(study.flair.source_nifti).affine
    assert study.series["flair_mpr"].affine_ras is not None
    assert np.abs(mpr.affine.numpy() - study.series["flair_mpr"].affine_ras).max() <= 1e-4
    rng = np.random.default_rng(0)
    idx = rng.integers(0, mpr.shape[1:], size=(500, 3))
    world = voxel_to_patient(mpr.affine.numpy(), idx)
    back = patient_to_voxel(flair_affine, world)
    assert np.abs(back - np.rint(back)).max() < 1e-4
    flair = _nifti(study.flair.source_nifti)
    b = np.rint(back).astype(int)
    values = mpr[0].numpy()[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert np.abs(values - flair[b[:, 0], b[:, 1], b[:, 2]]).max() <= study.flair.tolerance


# ----------------------------------------------------------------------------- scan + selection


@pytest.mark.realdata
def test_scan_sees_one_study_with_four_series(study: BratsStudy, scanned: ScanResult) -> None:
    assert len(scanned.patients) == 1 and len(scanned.patients[0].studies) == 1
    assert scanned.patients[0].studies[0].study_instance_uid == study.study_uid
    found = _by_uid(scanned)
    assert set(found) == set(study.series_uids.values())
    flair, mpr, loc = (found[study.series_uids[r]] for r in ("flair", "flair_mpr", "localizer"))
    assert (flair.number_of_slices, flair.orientation, flair.uniform) == (
        155,
        Orientation.AXIAL,
        True,
    )
    assert flair.slice_spacing == pytest.approx(1.0)
    assert (mpr.image_kind, mpr.orientation, mpr.number_of_slices) == (
        ImageKind.DERIVED,
        Orientation.CORONAL,
        240,
    )
    assert (loc.image_kind, loc.number_of_stacks) == (ImageKind.LOCALIZER, 3)
    assert not scanned.skipped


@pytest.mark.realdata
def test_bundle_rules_pick_flair_and_t1c(study: BratsStudy, scanned: ScanResult) -> None:
    result = select_series(scanned.series, RULES_FILE)
    assert result.ok
    assert result.selected == {"flair": study.flair.series_uid, "t1c": study.t1c.series_uid}
    rejected = {r.series_uid: r.reason for r in result.inputs["flair"].rejected}
    assert "DERIVED" in rejected[study.series_uids["flair_mpr"]]
    assert "LOCALIZER" in rejected[study.series_uids["localizer"]]


@pytest.mark.realdata
def test_the_reformat_is_a_real_trap(study: BratsStudy, scanned: ScanResult) -> None:
    """Without the exclusions the FLAIR rule would take the MPR (more slices)."""
    rules: dict[str, Any] = json.loads(RULES_FILE.read_text())
    for selection in rules["selections"]:
        selection.pop("exclude")
    result = select_series(scanned.series, rules)
    assert result.selected["flair"] == study.series_uids["flair_mpr"]


@pytest.mark.realdata
@pytest.mark.parametrize("drop", ["flair", "t1c"])
def test_study_missing_a_sequence_is_refused(
    study: BratsStudy, scanned: ScanResult, drop: str
) -> None:
    remaining = [s for s in scanned.series if s.series_instance_uid != study.series_uids[drop]]
    result = select_series(remaining, RULES_FILE)
    assert result.missing == (drop,)
    assert result.inputs[drop].status is SelectionStatus.MISSING
    with pytest.raises(UnsupportedInputError, match=drop):
        result.raise_if_missing()


@pytest.mark.realdata
def test_load_inputs_stacks_the_nifti_channels(
    study: BratsStudy, scanned: ScanResult, volumes: dict[str, MetaTensor]
) -> None:
    chosen = select_series(scanned.series, RULES_FILE).selected
    by_uid = {volumes[r].meta["SeriesInstanceUID"]: volumes[r] for r in volumes}
    image = load_inputs(
        {name: by_uid[uid] for name, uid in chosen.items()},
        reference="flair",
        order=["flair", "t1c"],
    )
    assert isinstance(image, MetaTensor)
    assert tuple(image.shape) == (2, 240, 240, 155)
    assert image.meta["channel_names"] == ["flair", "t1c"]
    assert (
        np.abs(
            image.affine.numpy() - nib.Nifti1Image.from_filename(study.flair.source_nifti).affine
        ).max()
        <= 1e-4
    )
    for c, role in enumerate(("flair", "t1c")):
        reference = _nifti(study.series[role].source_nifti)
        assert float(np.abs(image[c].numpy() - reference).max()) <= study.series[role].tolerance


# ----------------------------------------------------------------------------- any geometry


def _write_case(folder: Path, shape: tuple[int, int, int], affine_ras: npt.NDArray[Any]) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for name in ("Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"):
        data = rng.normal(size=shape).astype(np.float32) * 3
        nib.save(nib.Nifti1Image(data, affine_ras), folder / name)
    # the reference label map every BraTS case folder holds (brats/ layout)
    label = np.zeros(shape, dtype=np.float32)
    nib.save(nib.Nifti1Image(label, affine_ras), folder / "OTMultiClass.nii.gz")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rot=st.tuples(*[st.floats(0, 0.999)] * 3),
    spacing=st.tuples(*[st.floats(0.4, 3.0)] * 3),
    origin=st.tuples(*[st.floats(-200, 200)] * 3),
    shape=st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(2, 6)),
)
def test_any_right_handed_affine_round_trips(
    rot: tuple[float, float, float],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> None:
    """Oblique affines: the written study reads back to the NIfTI affine and voxels."""
    affine = np.eye(4)
    affine[:3, :3] = random_rotation(*rot) * np.asarray(spacing)
    affine[:3, 3] = origin
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case_0001"
        _write_case(case, shape, affine)
        written = write_brats_study(case, Path(tmp) / "out", distractors=("flair_mpr",))
        for role, series in written.series.items():
            img = read_series(list(series.files))
            assert series.affine_ras is not None
            assert np.abs(img.affine.numpy() - series.affine_ras).max() <= 1e-4
            if role != "flair_mpr":
                assert np.abs(img.affine.numpy() - affine).max() <= 1e-4
                reference = _nifti(series.source_nifti)
                assert float(np.abs(img[0].numpy() - reference).max()) <= series.tolerance


def test_left_handed_affine_is_refused(tmp_path: Path) -> None:
    """A slice axis against row x column would read back reordered: the fixture says so."""
    affine = np.diag([1.0, 1.0, -1.0, 1.0])  # RAS, slices towards inferior: LPS det < 0
    _write_case(tmp_path / "case_0002", (3, 3, 3), affine)
    with pytest.raises(ValueError, match="not along"):
        write_brats_study(tmp_path / "case_0002", tmp_path / "out", distractors=())


def test_slices_option_writes_a_sub_volume(tmp_path: Path) -> None:
    affine = np.array([[-0.9, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 1.5, -30.0], [0, 0, 0, 1]])
    _write_case(tmp_path / "case_0003", (5, 4, 9), affine)
    written = write_brats_study(
        tmp_path / "case_0003", tmp_path / "out", distractors=(), slices=(2, 6)
    )
    for series in written.series.values():
        img = read_series(list(series.files))
        reference = _nifti(series.source_nifti)[:, :, 2:6]
        assert img.shape == (1, 5, 4, 4)
        assert float(np.abs(img[0].numpy() - reference).max()) <= series.tolerance
        shifted = affine.copy()
        shifted[:3, 3] = voxel_to_patient(affine, [0, 0, 2])
        assert np.abs(img.affine.numpy() - shifted).max() <= 1e-4


def test_uids_and_names_are_reproducible(tmp_path: Path) -> None:
    _write_case(tmp_path / "case_0004", (3, 3, 2), np.eye(4))

    def write(out: str, patient_id: str) -> BratsStudy:
        return write_brats_study(
            tmp_path / "case_0004", tmp_path / out, patient_id=patient_id, distractors=()
        )

    first, again, other = write("a", "P1"), write("b", "P1"), write("c", "P2")
    assert first.series_uids == again.series_uids
    assert first.study_uid == again.study_uid
    assert [p.relative_to(first.root) for p in first.files] == [
        p.relative_to(again.root) for p in again.files
    ]
    assert not set(first.series_uids.values()) & set(other.series_uids.values())
    assert first.study_uid != other.study_uid
