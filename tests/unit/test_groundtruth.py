"""RTSTRUCT and DICOM SEG ground truth mapped onto image grids."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from monai_tumor.errors import IngestError, InvalidSeriesError, UnsupportedInputError
from monai_tumor.geometry import lps_to_ras, patient_to_voxel, ras_to_lps, voxel_to_patient
from monai_tumor.ingest.groundtruth import list_rois, rtstruct_to_mask, seg_to_mask
from monai_tumor.ingest.reader import read_series

STS_SERIES = [(p, m) for p in ("STS_001", "STS_002", "STS_003") for m in ("CT", "MR_T1", "PET")]
RTSTRUCT_CLASS = UID("1.2.840.10008.5.1.4.1.1.481.3")


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


# --------------------------------------------------------------------------- synthetic RTSTRUCT


def _reference(shape: tuple[int, int, int] = (20, 16, 5), for_uid: str = "1.2.3") -> MetaTensor:
    """A small axial grid: 1 mm pixels, 2 mm slices, LPS origin (-10, -8, 50)."""
    lps = np.diag([1.0, 1.0, 2.0, 1.0])
    lps[:3, 3] = [-10.0, -8.0, 50.0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return MetaTensor(
        torch.zeros((1, *shape)), affine=torch.as_tensor(ras), meta={"FrameOfReferenceUID": for_uid}
    )


def _write_rtstruct(
    path: Path,
    contours: list[list[tuple[float, float, float]]],
    *,
    name: str = "GTV",
    for_uid: str = "1.2.3",
) -> Path:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = RTSTRUCT_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    roi = pydicom.Dataset()
    roi.ROINumber = 1
    roi.ROIName = name
    roi.ReferencedFrameOfReferenceUID = for_uid
    ds.StructureSetROISequence = DicomSequence([roi])
    items = []
    for pts in contours:
        c = pydicom.Dataset()
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(pts)
        c.ContourData = [f"{v:.4f}" for p in pts for v in p]
        items.append(c)
    rc = pydicom.Dataset()
    rc.ReferencedROINumber = 1
    rc.ContourSequence = DicomSequence(items)
    ds.ROIContourSequence = DicomSequence([rc])
    ds.save_as(path, enforce_file_format=True)
    return path


def _square(
    x0: float, y0: float, x1: float, y1: float, z: float
) -> list[tuple[float, float, float]]:
    return [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)]


def test_rtstruct_inner_contour_cuts_a_hole(tmp_path: Path) -> None:
    ref = _reference()
    # slice k=2 is at z = 54 mm; LPS x = i - 10, y = j - 8
    path = _write_rtstruct(
        tmp_path / "rs.dcm",
        [_square(-8.5, -6.5, 2.5, 3.5, 54.0), _square(-5.5, -3.5, -1.5, 0.5, 54.0)],
    )
    mask = rtstruct_to_mask(path, ref, roi="gtv")
    arr = mask[0].numpy().astype(bool)
    expected = np.zeros(arr.shape, dtype=bool)
    expected[2:13, 2:12, 2] = True  # x -8..2 -> i 2..12, y -6..3 -> j 2..11
    expected[5:9, 5:9, 2] = False  # hole: x -5..-2 -> i 5..8, y -3..0 -> j 5..8
    np.testing.assert_array_equal(arr, expected)
    assert mask.meta["roi_name"] == "GTV"
    assert mask.meta["contours_drawn"] == 2
    np.testing.assert_allclose(mask.affine.numpy(), ref.affine.numpy())


def test_rtstruct_off_slice_contour_policies(tmp_path: Path) -> None:
    ref = _reference()
    path = _write_rtstruct(tmp_path / "rs.dcm", [_square(-8.5, -6.5, 2.5, 3.5, 54.5)])  # k = 2.25
    with pytest.raises(InvalidSeriesError, match="from slice 2"):
        rtstruct_to_mask(path, ref, roi="GTV")
    with pytest.warns(UserWarning, match="skipped"):
        skipped = rtstruct_to_mask(path, ref, roi="GTV", off_slice="skip")
    assert int(skipped.sum()) == 0
    with pytest.warns(UserWarning, match="drawn on slice 2"):
        snapped = rtstruct_to_mask(path, ref, roi="GTV", off_slice="nearest")
    assert int(snapped[0, :, :, 2].sum()) == 11 * 10


def test_rtstruct_roi_lookup_and_frame_of_reference(tmp_path: Path) -> None:
    path = _write_rtstruct(tmp_path / "rs.dcm", [_square(-8.5, -6.5, 2.5, 3.5, 54.0)], name="GTV_1")
    assert [r.name for r in list_rois(path)] == ["GTV_1"]
    with pytest.raises(IngestError, match="no ROI named 'CTV'"):
        rtstruct_to_mask(path, _reference(), roi="CTV")
    assert int(rtstruct_to_mask(path, _reference(), roi=re.compile("^GTV")).sum()) == 110
    with pytest.raises(InvalidSeriesError, match="frame of reference"):
        rtstruct_to_mask(path, _reference(for_uid="9.9"), roi="GTV_1")


def test_rtstruct_rejects_other_dicom(tmp_path: Path) -> None:
    path = _write_rtstruct(tmp_path / "rs.dcm", [])
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(UnsupportedInputError, match="expected a RT Structure Set"):
        list_rois(tmp_path / "ct.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(IngestError):
        list_rois(tmp_path / "junk.dcm")


def _rotation(a: float, b: float, c: float) -> npt.NDArray[np.float64]:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1.0]])
    ry = np.array([[cb, 0, sb], [0, 1.0, 0], [-sb, 0, cb]])
    rx = np.array([[1.0, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    angles=st.tuples(*[st.floats(-np.pi, np.pi) for _ in range(3)]),
    spacing=st.tuples(*[st.floats(0.3, 4.0) for _ in range(3)]),
    flips=st.tuples(*[st.sampled_from([-1.0, 1.0]) for _ in range(3)]),
    origin=st.tuples(*[st.floats(-500, 500) for _ in range(3)]),
    box=st.tuples(
        st.integers(0, 10),
        st.integers(0, 10),
        st.integers(1, 8),
        st.integers(1, 8),
        st.integers(0, 5),
    ),
)
def test_rtstruct_square_lands_on_its_voxels_for_any_orientation(
    tmp_path: Path,
    angles: tuple[float, float, float],
    spacing: tuple[float, float, float],
    flips: tuple[float, float, float],
    origin: tuple[float, float, float],
    box: tuple[int, int, int, int, int],
) -> None:
    """A contour drawn around voxels (i0..i1, j0..j1) of slice k, in any oblique grid."""
    lps = np.eye(4)
    lps[:3, :3] = _rotation(*angles) @ np.diag(np.multiply(spacing, flips))
    lps[:3, 3] = origin
    shape = (20, 20, 6)
    ref = MetaTensor(torch.zeros((1, *shape)), affine=torch.as_tensor(lps_to_ras(lps)))
    i0, j0, width, height, k = box
    i1, j1 = i0 + width - 1, j0 + height - 1
    corners = np.array(
        [[i0 - 0.4, j0 - 0.4], [i1 + 0.4, j0 - 0.4], [i1 + 0.4, j1 + 0.4], [i0 - 0.4, j1 + 0.4]]
    )
    world = voxel_to_patient(lps, np.column_stack([corners, np.full(4, float(k))]))
    path = _write_rtstruct(tmp_path / "rs.dcm", [[tuple(p) for p in world]])
    mask = rtstruct_to_mask(path, ref, roi="GTV")[0].numpy()
    expected = np.zeros(shape, dtype=np.uint8)
    expected[i0 : i1 + 1, j0 : j1 + 1, k] = 1
    np.testing.assert_array_equal(mask, expected)


# --------------------------------------------------------------------------- real RTSTRUCT


@pytest.mark.realdata
@pytest.mark.parametrize(("patient", "modality"), STS_SERIES)
def test_sts_rtstruct_matches_nifti_mask(data_dir: Path, patient: str, modality: str) -> None:
    folder = data_dir / "sts" / patient / modality
    ref = read_series(folder / "dicom" / "image")
    mask = rtstruct_to_mask(folder / "dicom" / "mask" / "RS.dcm", ref, roi=re.compile(r"^GTV_Mass"))
    gt_img = nib.Nifti1Image.from_filename(folder / "nifti" / "mask" / "mask.nii.gz")
    gt = np.asarray(gt_img.dataobj) > 0.5
    got = mask[0].numpy().astype(bool)
    assert got.shape == gt.shape
    np.testing.assert_allclose(mask.affine.numpy(), gt_img.affine, atol=1e-3)
    # measured: Dice 1.0 (identical masks) on all 9 series
    assert dice(got, gt) == 1.0


@pytest.mark.realdata
def test_lung1_gtv_is_inside_the_body(data_dir: Path) -> None:
    folder = data_dir / "lung1" / "LUNG1-001"
    ref = read_series(folder / "image")
    rs = folder / "mask_rtstruct" / "1-1.dcm"
    assert {r.name for r in list_rois(rs)} == {"GTV-1", "Spinal-Cord", "Lung-Left", "Lung-Right"}
    gtv = rtstruct_to_mask(rs, ref, roi="GTV-1")[0].numpy().astype(bool)
    assert gtv.any()
    hu = ref[0].numpy()
    for k in np.flatnonzero(gtv.any(axis=(0, 1))):
        # body on this slice: largest connected region above -500 HU, lungs (holes) filled
        labels, _ = ndimage.label(hu[:, :, k] > -500)
        body = ndimage.binary_fill_holes(labels == np.argmax(np.bincount(labels[labels > 0])))
        assert np.count_nonzero(gtv[:, :, k] & ~body) == 0, f"GTV leaves the body on slice {k}"
    # and the tumour is mostly soft tissue, not air. Measured: 0.94 of GTV voxels > -500 HU;
    # with the column axis mirrored 0.13, with the row axis mirrored 0.68.
    assert float(np.mean(hu[gtv] > -500)) > 0.8


# --------------------------------------------------------------------------- DICOM SEG


def _nrrd_in_reference(
    path: Path, reference: MetaTensor
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int16]]:
    """Reference voxel indices of every non-zero NRRD voxel, through world (LPS) space."""
    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior"
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], dtype=np.float64).T
    affine[:3, 3] = np.asarray(header["space origin"], dtype=np.float64)
    idx = np.argwhere(data != 0)
    world = voxel_to_patient(affine, idx)
    ijk = patient_to_voxel(ras_to_lps(reference.affine.numpy()), world)
    np.testing.assert_allclose(ijk, np.rint(ijk), atol=1e-3)
    return np.rint(ijk).astype(np.int64), data[tuple(idx.T)]


def _mask_from(ijk: npt.NDArray[np.int64], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    out = np.zeros(shape, dtype=bool)
    out[tuple(ijk.T)] = True
    return out


@pytest.fixture(scope="module")
def ct3(data_dir: Path) -> MetaTensor:
    return read_series(data_dir / "dcmqi_seg" / "ct-3slice")


@pytest.mark.realdata
def test_liver_seg_equals_nrrd_in_world_space(data_dir: Path, ct3: MetaTensor) -> None:
    mask = seg_to_mask(data_dir / "dcmqi_seg" / "liver.dcm", ct3)
    assert mask.shape == ct3.shape
    assert mask.meta["segment_labels"] == ["Liver"]
    ijk, _ = _nrrd_in_reference(data_dir / "dcmqi_seg" / "liver_seg.nrrd", ct3)
    expected = _mask_from(ijk, tuple(ct3.shape[1:]))
    np.testing.assert_array_equal(mask[0].numpy().astype(bool), expected)
    assert int(expected.sum()) == 107_098


@pytest.mark.realdata
@pytest.mark.parametrize("change", ["flip_column_and_slice", "swap_column_and_row"])
def test_liver_seg_follows_a_reoriented_reference(
    data_dir: Path, ct3: MetaTensor, change: str
) -> None:
    """Reorder the reference's voxels (same world): the mask must follow the world."""
    n_i, _, n_k = ct3.shape[1:]
    path = data_dir / "dcmqi_seg" / "liver.dcm"
    straight = seg_to_mask(path, ct3)[0].numpy()
    if change == "flip_column_and_slice":
        index_map = np.diag([-1.0, 1.0, -1.0, 1.0])
        index_map[0, 3], index_map[2, 3] = n_i - 1, n_k - 1
        data = torch.flip(ct3.as_tensor(), dims=(1, 3))
        expected = straight[::-1, :, ::-1]
    else:
        index_map = np.eye(4)[[1, 0, 2, 3]]
        data = ct3.as_tensor().permute(0, 2, 1, 3)
        expected = straight.transpose(1, 0, 2)
    moved = MetaTensor(
        data,
        affine=torch.as_tensor(ct3.affine.numpy() @ index_map),
        meta={"FrameOfReferenceUID": ct3.meta["FrameOfReferenceUID"]},
    )
    np.testing.assert_array_equal(seg_to_mask(path, moved)[0].numpy(), expected)


@pytest.mark.realdata
def test_seg_without_plane_positions_is_refused(data_dir: Path, tmp_path: Path) -> None:
    ds = pydicom.dcmread(data_dir / "dcmqi_seg" / "liver.dcm")
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.PlanePositionSequence
    ds.save_as(tmp_path / "no_positions.dcm")
    with pytest.raises(IngestError, match=r"no_positions\.dcm"):
        seg_to_mask(tmp_path / "no_positions.dcm", _reference())


@pytest.mark.realdata
def test_partial_overlaps_seg_per_segment(data_dir: Path, ct3: MetaTensor) -> None:
    root = data_dir / "dcmqi_seg"
    mask = seg_to_mask(root / "partial_overlaps.dcm", ct3)
    assert mask.meta["segment_numbers"] == [1, 2, 3, 4, 5]
    assert mask.meta["segment_labels"] == ["GREEN", "ORANGE", "PURPLE", "LIGHT_BLUE", "DARK_BLUE"]
    checked = set()
    for part in ("partial_overlaps-1.nrrd", "partial_overlaps-2.nrrd", "partial_overlaps-3.nrrd"):
        ijk, values = _nrrd_in_reference(root / part, ct3)
        for value in np.unique(values):
            expected = _mask_from(ijk[values == value], tuple(ct3.shape[1:]))
            channel = mask.meta["segment_numbers"].index(int(value))
            np.testing.assert_array_equal(mask[channel].numpy().astype(bool), expected)
            checked.add(int(value))
    assert checked == {1, 2, 3, 4, 5}
    with pytest.raises(UnsupportedInputError, match="more than one segment"):
        seg_to_mask(root / "partial_overlaps.dcm", ct3, as_label_map=True)
    picked = seg_to_mask(root / "partial_overlaps.dcm", ct3, segments=["purple", 2])
    assert picked.meta["segment_numbers"] == [3, 2]
    np.testing.assert_array_equal(picked[0].numpy(), mask[2].numpy())


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["sparse-labelmap-noppv", "sparse-labelmap-ppv5"])
def test_sparse_labelmap_seg(data_dir: Path, name: str) -> None:
    root = data_dir / "dcmqi_seg"
    ref = read_series(root / "24x38x3" / "image")
    labels = seg_to_mask(root / f"{name}.dcm", ref, as_label_map=True)
    assert labels.meta["segment_labels"] == ["Liver"]
    ijk, values = _nrrd_in_reference(root / f"{name.replace('-', '_')}_seg.nrrd", ref)
    # the NRRD fills the slice the SEG leaves out with its padding value 5
    expected = _mask_from(ijk[values == 1], tuple(ref.shape[1:]))
    np.testing.assert_array_equal(labels[0].numpy() == 1, expected)
    assert set(np.unique(labels.numpy())) == {0, 1}


@pytest.mark.realdata
def test_seg_refuses_other_frame_of_reference(data_dir: Path, ct3: MetaTensor) -> None:
    other = MetaTensor(ct3.as_tensor(), affine=ct3.affine, meta={"FrameOfReferenceUID": "1.2.3"})
    with pytest.raises(InvalidSeriesError, match="frame of reference"):
        seg_to_mask(data_dir / "dcmqi_seg" / "liver.dcm", other)


@pytest.mark.realdata
def test_seg_off_grid_reference_is_refused(data_dir: Path, ct3: MetaTensor) -> None:
    shifted_affine = ct3.affine.numpy().copy()
    shifted_affine[2, 3] += 0.5  # half a slice
    shifted = MetaTensor(ct3.as_tensor(), affine=torch.as_tensor(shifted_affine))
    with pytest.raises(InvalidSeriesError, match="between reference voxels"):
        seg_to_mask(data_dir / "dcmqi_seg" / "liver.dcm", shifted)


@pytest.mark.realdata
def test_seg_on_another_pixel_spacing_is_refused(data_dir: Path, ct3: MetaTensor) -> None:
    scaled_affine = ct3.affine.numpy() @ np.diag([1.01, 1.01, 1.0, 1.0])  # 1 % larger pixels
    scaled = MetaTensor(ct3.as_tensor(), affine=torch.as_tensor(scaled_affine))
    with pytest.raises(UnsupportedInputError, match="not the reference's"):
        seg_to_mask(data_dir / "dcmqi_seg" / "liver.dcm", scaled)
