"""Tests for monai_tumor.postprocess.lesions: analytic shapes on any grid, real masks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from scipy.spatial.transform import Rotation

from monai_tumor.errors import MonaiTumorError
from monai_tumor.geometry import lps_to_ras, voxel_to_patient
from monai_tumor.postprocess.lesions import (
    LESIONS_SCHEMA,
    lesions_report,
    mark_image_edge,
    measure_lesions,
)


def _tensor(
    arr: npt.NDArray[np.generic], affine_lps: npt.NDArray[np.float64], **meta: object
) -> MetaTensor:
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(arr)[None]),
        affine=torch.as_tensor(lps_to_ras(affine_lps)),
        meta=dict(meta),
    )


def _grid(
    rotation: npt.NDArray[np.float64],
    spacing: tuple[float, float, float],
    centre_lps: npt.ArrayLike,
    half_extent_mm: float,
) -> tuple[npt.NDArray[np.float64], tuple[int, int, int]]:
    """LPS affine and shape of a grid centred on ``centre_lps`` covering a cube."""
    sp = np.asarray(spacing, dtype=np.float64)
    shape = tuple(int(np.ceil(2 * half_extent_mm / s)) + 5 for s in sp)
    aff = np.eye(4)
    aff[:3, :3] = rotation @ np.diag(sp)
    aff[:3, 3] = np.asarray(centre_lps, dtype=np.float64) - aff[:3, :3] @ (
        (np.array(shape) - 1) / 2
    )
    return aff, (shape[0], shape[1], shape[2])


def _ellipsoid(
    affine_lps: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
    centre_lps: npt.ArrayLike,
    semi_axes_mm: tuple[float, float, float],
) -> npt.NDArray[np.uint8]:
    """Voxels whose centre lies in a patient-axis-aligned ellipsoid (x, y, z semi-axes)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    p = voxel_to_patient(affine_lps, idx) - np.asarray(centre_lps)
    r = ((p / np.asarray(semi_axes_mm)) ** 2).sum(axis=-1)
    return (r <= 1.0).astype(np.uint8)


def _ct(
    mask: npt.NDArray[np.uint8], aff: npt.NDArray[np.float64], **meta: object
) -> tuple[MetaTensor, MetaTensor]:
    image = np.where(mask > 0, 40.0, -1000.0).astype(np.float32)
    return _tensor(mask, aff, **meta), _tensor(image, aff, Modality="CT", **meta)


AXES = (12.0, 8.0, 20.0)  # x, y, z semi-axes (mm): 3D diameter 40, axial diameter 24


@settings(max_examples=20, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180)] * 3),
    spacing=st.tuples(st.floats(0.6, 1.5), st.floats(0.6, 1.5), st.floats(0.8, 3.0)),
    centre=st.tuples(*[st.floats(-300, 300)] * 3),
    axial=st.booleans(),
)
def test_ellipsoid_measures_are_grid_independent(
    angles: tuple[float, float, float],
    spacing: tuple[float, float, float],
    centre: tuple[float, float, float],
    axial: bool,
) -> None:
    # Axial grids: only an in-plane rotation; otherwise any rotation (oblique).
    rot = Rotation.from_euler("z" if axial else "zyx", angles[0] if axial else angles, degrees=True)
    aff, shape = _grid(rot.as_matrix(), spacing, centre, max(AXES) + 2)
    mask, image = _ct(_ellipsoid(aff, shape, centre, AXES), aff)
    (lesion,) = measure_lesions(mask, image)

    diag = float(np.linalg.norm(spacing))
    analytic_ml = 4.0 / 3.0 * np.pi * np.prod(AXES) / 1000.0
    assert lesion.volume_ml == pytest.approx(analytic_ml, rel=0.06)
    # Voxel centres lie inside the shape; near a tip (curvature radius >= half a voxel
    # diagonal here) some voxel centre lies within one diagonal of the surface.
    assert 2 * AXES[2] - 2 * diag <= lesion.diameter_3d_mm <= 2 * AXES[2] + 1e-6
    assert 2 * AXES[0] - 2 * diag - 0.5 <= lesion.diameter_axial_mm <= 2 * AXES[0] + 1e-6
    np.testing.assert_allclose(lesion.centroid_lps_mm, centre, atol=0.5 * max(spacing))
    assert lesion.intensity_unit == "HU"
    assert lesion.intensity_mean == pytest.approx(40.0)


def test_axial_grid_uses_slices_and_oblique_uses_planes_of_constant_z() -> None:
    centre = (10.0, -20.0, 30.0)
    aff_ax, shape_ax = _grid(np.eye(3), (0.8, 0.8, 2.0), centre, 22)
    rot = Rotation.from_euler("x", 90, degrees=True).as_matrix()  # coronal-like grid
    aff_co, shape_co = _grid(rot, (0.8, 0.8, 2.0), centre, 22)
    results = []
    for aff, shape in ((aff_ax, shape_ax), (aff_co, shape_co)):
        mask, image = _ct(_ellipsoid(aff, shape, centre, AXES), aff)
        (lesion,) = measure_lesions(mask, image)
        results.append(lesion)
    diag = float(np.linalg.norm([0.8, 0.8, 2.0]))
    for lesion in results:
        assert 24.0 - 2 * diag <= lesion.diameter_axial_mm <= 24.0
        assert 40.0 - 2 * diag <= lesion.diameter_3d_mm <= 40.0
    assert results[0].volume_ml == pytest.approx(results[1].volume_ml, rel=0.03)


def test_components_sorted_numbered_filtered_and_labels() -> None:
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    arr = np.zeros((40, 40, 20), dtype=np.uint8)
    arr[2:6, 2:6, 2:4] = 1  # 32 voxels, 64 mm3
    arr[20:30, 20:30, 5:10] = 2  # 500 voxels
    arr[10, 35, 15] = 4  # single voxel
    arr[11, 36, 16] = 4  # touches the previous one at a corner: same lesion (26-connected)
    mask, image = _ct(arr, aff)
    lesions = measure_lesions(mask, image)
    assert [les.index for les in lesions] == [1, 2, 3]
    assert [les.voxel_count for les in lesions] == [500, 32, 2]
    assert lesions[0].volume_ml == pytest.approx(500 * 2 / 1000)
    assert lesions[2].diameter_3d_mm == pytest.approx(np.sqrt(1 + 1 + 4))
    assert lesions[1].diameter_3d_mm == pytest.approx(np.sqrt(9 + 9 + 4))
    assert lesions[1].diameter_axial_mm == pytest.approx(np.sqrt(18))
    assert lesions[0].bbox_voxel == ((20, 20, 5), (29, 29, 9))
    assert (lesions[0].first_slice, lesions[0].last_slice) == (5, 9)

    (only2,) = measure_lesions(mask, image, label=2)
    assert only2.voxel_count == 500 and only2.label == 2
    assert len(measure_lesions(mask, image, min_volume_ml=0.05)) == 2
    assert measure_lesions(_tensor(np.zeros_like(arr), aff), image) == []


def test_single_voxel_and_line() -> None:
    aff = np.diag([0.7, 0.9, 3.0, 1.0])
    arr = np.zeros((10, 10, 10), dtype=np.uint8)
    arr[5, 5, 5] = 1
    arr[1, 1, 0:8] = 1  # a line along k, 8 voxels
    mask, image = _ct(arr, aff)
    line, dot = measure_lesions(mask, image)
    assert dot.diameter_3d_mm == 0.0 and dot.diameter_axial_mm == 0.0
    assert dot.volume_ml == pytest.approx(0.7 * 0.9 * 3.0 / 1000)
    assert line.diameter_3d_mm == pytest.approx(7 * 3.0)
    assert line.diameter_axial_mm == 0.0


def test_centroid_is_lps_and_slice_uids_come_from_meta() -> None:
    # RAS-ordered voxel axes: i increases towards patient Right, j Anterior.
    aff_ras = np.diag([1.0, 1.0, 1.0, 1.0])
    arr = np.zeros((10, 10, 4), dtype=np.uint8)
    arr[8, 1, 1:3] = 1
    uids = [f"1.2.3.{k}" for k in range(4)]
    mask = MetaTensor(
        torch.from_numpy(arr[None]),
        affine=torch.as_tensor(aff_ras),
        meta={"sop_instance_uids": uids},
    )
    image = MetaTensor(
        torch.zeros(1, 10, 10, 4), affine=torch.as_tensor(aff_ras), meta={"Modality": "MR"}
    )
    (lesion,) = measure_lesions(mask, image)
    # RAS (8, 1, 1.5) is LPS (-8, -1, 1.5): patient right, anterior.
    assert lesion.centroid_lps_mm == pytest.approx((-8.0, -1.0, 1.5))
    assert lesion.first_slice_sop_instance_uid == "1.2.3.1"
    assert lesion.last_slice_sop_instance_uid == "1.2.3.2"
    assert lesion.intensity_unit == "arbitrary"


def test_grid_mismatch_raises() -> None:
    aff = np.eye(4)
    mask, _ = _ct(np.ones((4, 4, 4), dtype=np.uint8), aff)
    with pytest.raises(MonaiTumorError, match="shape"):
        measure_lesions(mask, _tensor(np.zeros((4, 4, 5), dtype=np.float32), aff))
    shifted = aff.copy()
    shifted[0, 3] = 1.0
    with pytest.raises(MonaiTumorError, match="affine"):
        measure_lesions(mask, _tensor(np.zeros((4, 4, 4), dtype=np.float32), shifted))


def test_report_is_json_ready() -> None:
    arr = np.zeros((8, 8, 8), dtype=np.uint8)
    arr[2:5, 2:5, 2:5] = 1
    mask, image = _ct(arr, np.eye(4))
    report = lesions_report(
        measure_lesions(mask, image), provenance={"bundle": "x", "v": np.int64(3)}
    )
    text = json.dumps(report)
    back = json.loads(text)
    assert back["schema"] == LESIONS_SCHEMA
    assert back["lesion_count"] == 1
    assert back["total_volume_ml"] == pytest.approx(0.027)
    assert back["provenance"] == {"bundle": "x", "v": 3}
    lesion = back["lesions"][0]
    assert {"volume_ml", "diameter_3d_mm", "diameter_axial_mm", "centroid_lps_mm"} <= set(lesion)


@pytest.mark.realdata
def test_sts_ct_mask(data_dir: Path) -> None:
    import nibabel as nib

    from monai_tumor.ingest.reader import read_series

    case = data_dir / "sts" / "STS_001" / "CT"
    image = read_series(case / "dicom" / "image")
    nii = nib.Nifti1Image.from_filename(case / "nifti" / "mask" / "mask.nii.gz")
    arr = np.asarray(nii.dataobj)
    np.testing.assert_allclose(nii.affine, image.affine.numpy(), atol=1e-4)
    mask = MetaTensor(
        torch.from_numpy(arr[None]),
        affine=image.affine,
        meta={"sop_instance_uids": image.meta["sop_instance_uids"]},
    )
    (lesion,) = measure_lesions(mask, image)
    voxel_ml = abs(np.linalg.det(nii.affine[:3, :3])) / 1000
    assert lesion.voxel_count == int(arr.sum())
    assert lesion.volume_ml == pytest.approx(arr.sum() * voxel_ml)
    assert 300 < lesion.volume_ml < 450  # a large thigh sarcoma (365 mL)
    assert lesion.diameter_axial_mm <= lesion.diameter_3d_mm
    assert -100 < lesion.intensity_mean < 100  # soft tissue HU


@pytest.mark.realdata
def test_lung1_gtv(data_dir: Path) -> None:
    from monai_tumor.ingest.groundtruth import rtstruct_to_mask
    from monai_tumor.ingest.reader import read_series

    case = data_dir / "lung1" / "LUNG1-001"
    image = read_series(case / "image")
    rtstruct = next((case / "mask_rtstruct").iterdir())
    mask = rtstruct_to_mask(rtstruct, image, roi="GTV-1")
    lesions = measure_lesions(mask, image)
    assert len(lesions) >= 1
    gtv = lesions[0]
    assert 100 < gtv.volume_ml < 250  # 156 mL measured
    assert 60 < gtv.diameter_3d_mm < 130
    # The centroid lies near the mean of the contour points, read straight from the file.
    ds = pydicom.dcmread(rtstruct)
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "GTV-1")
    roi = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
    pts = np.concatenate(
        [np.asarray(c.ContourData, dtype=float).reshape(-1, 3) for c in roi.ContourSequence]
    )
    np.testing.assert_allclose(gtv.centroid_lps_mm, pts.mean(axis=0), atol=10.0)
    assert np.sign(gtv.centroid_lps_mm[0]) == np.sign(pts[:, 0].mean())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 6)),
    density=st.floats(0.0, 0.5),
)
def test_components_of_the_foreground_box_are_those_of_the_grid(
    seed: int, shape: tuple[int, int, int], density: float
) -> None:
    """Labelling only the foreground's bounding box numbers every component as the whole
    grid does (no int32 copy of a whole CT), so lesions and their order are unchanged."""
    from scipy import ndimage

    from monai_tumor.postprocess.lesions import _label_foreground

    binary = np.random.default_rng(seed).random(shape) < density
    full, _ = ndimage.label(binary, structure=np.ones((3, 3, 3), dtype=bool))
    labelled, origin = _label_foreground(binary)
    placed = np.zeros(shape, dtype=full.dtype)
    i, j, k = origin
    placed[i : i + labelled.shape[0], j : j + labelled.shape[1], k : k + labelled.shape[2]] = (
        labelled
    )
    np.testing.assert_array_equal(placed, full)


def test_lesions_at_the_grid_faces_and_outside_voxels_of_truncation_records() -> None:
    from monai_tumor.postprocess.lesions import mark_truncated

    labels = np.zeros((30, 20, 12), dtype=np.uint8)
    labels[0:3, 5:8, 0:2] = 1  # touches three faces of the grid
    labels[20:30, 15:20, 8:12] = 1  # the opposite faces
    mask = _tensor(labels, np.eye(4))
    lesions = measure_lesions(mask, _tensor(labels.astype(np.float32), np.eye(4)))
    assert [les.voxel_count for les in lesions] == [10 * 5 * 4, 3 * 3 * 2]
    assert lesions[1].bbox_voxel == ((0, 5, 0), (2, 7, 1))
    records = [
        {"truncated": True, "voxel": [25, 17, 10], "reason": "edge"},
        {"truncated": True, "voxel": [29, 0, 0], "reason": "outside the foreground box"},
    ]
    marked = mark_truncated(lesions, mask, records)
    assert [les.truncated for les in marked] == [True, False]
    assert marked[0].truncation_reason == "edge"


@pytest.mark.parametrize(
    ("box", "faces"),
    [
        ((slice(0, 3), slice(5, 8), slice(5, 8)), "first column"),
        ((slice(5, 8), slice(17, 20), slice(5, 8)), "last row"),
        ((slice(5, 8), slice(5, 8), slice(9, 12)), "last slice"),
        ((slice(0, 3), slice(0, 3), slice(0, 3)), "first column, first row, first slice"),
    ],
)
def test_a_lesion_at_the_image_edge_is_truncated(box: tuple[slice, ...], faces: str) -> None:
    arr = np.zeros((16, 20, 12), dtype=np.uint8)
    arr[box] = 1
    arr[8:11, 8:11, 4:7] = 1  # inside: not flagged
    mask, image = _ct(arr, np.diag([0.8, 0.8, 2.5, 1.0]))
    marked = mark_image_edge(measure_lesions(mask, image), arr.shape)
    edge = [les for les in marked if les.truncated]
    assert len(edge) == 1 and len(marked) == 2
    assert edge[0].truncation_reason == f"reaches the image's edge ({faces}): the scan ends there"


def test_a_lesion_already_flagged_keeps_its_reason() -> None:
    arr = np.zeros((10, 10, 10), dtype=np.uint8)
    arr[0:3, 4:6, 4:6] = 1
    mask, image = _ct(arr, np.eye(4))
    (les,) = measure_lesions(mask, image)
    cut = replace(les, truncated=True, truncation_reason="reaches the VOI's border")
    assert mark_image_edge([cut], arr.shape) == [cut]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(3, 12), st.integers(3, 12), st.integers(3, 12)),
    data=st.data(),
)
def test_flagged_exactly_when_a_voxel_lies_on_a_face(
    shape: tuple[int, int, int], data: st.DataObject
) -> None:
    lo = [data.draw(st.integers(0, n - 1)) for n in shape]
    hi = [data.draw(st.integers(a, n - 1)) for a, n in zip(lo, shape, strict=True)]
    arr = np.zeros(shape, dtype=np.uint8)
    arr[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = 1
    mask, image = _ct(arr, np.eye(4))
    (les,) = mark_image_edge(measure_lesions(mask, image), shape)
    on_face = any(a == 0 for a in lo) or any(b == n - 1 for b, n in zip(hi, shape, strict=True))
    assert les.truncated is on_face
