"""Tests for monai_tumor.transforms.voi: cut a VOI around an LPS point, paste a mask back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from monai.transforms import LoadImage

from monai_tumor.errors import UnsupportedInputError
from monai_tumor.geometry import lps_to_ras, patient_to_voxel, ras_to_lps, voxel_to_patient
from monai_tumor.transforms.voi import (
    DEFAULT_VOI_SPEC,
    VOI_META_KEY,
    CropVOIAroundPoint,
    CropVOIAroundPointd,
    VOISpec,
    paste_voi_mask,
    voi_center_lps,
)


def _rotation(angle_deg: float) -> npt.NDArray[np.float64]:
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _affine_lps(
    spacing: tuple[float, float, float], flips: tuple[int, int, int], angle_deg: float
) -> npt.NDArray[np.float64]:
    """Voxel-to-LPS affine: axis flips, an in-plane rotation (oblique), an origin offset."""
    aff = np.eye(4)
    aff[:3, :3] = _rotation(angle_deg) @ np.diag(np.asarray(flips) * np.asarray(spacing))
    aff[:3, 3] = [31.5, -47.25, -102.0]
    return aff


def _sphere_volume(
    affine_lps: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
    center_lps: npt.NDArray[np.float64],
    radius_mm: float,
) -> tuple[MetaTensor, npt.NDArray[np.bool_]]:
    """CT-like volume (-800 HU lung, 60 HU sphere) with a voxel-to-RAS affine, plus the mask."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = voxel_to_patient(affine_lps, grid)
    mask = np.linalg.norm(world - center_lps, axis=-1) <= radius_mm
    values = np.where(mask, 60.0, -800.0).astype(np.float32)[None]
    img = MetaTensor(torch.as_tensor(values), affine=torch.as_tensor(lps_to_ras(affine_lps)))
    return img, mask


def _dice(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2.0 * (x & y).sum() / max(x.sum() + y.sum(), 1))


def test_spec_shape_matches_bundle_patch() -> None:
    assert DEFAULT_VOI_SPEC.shape == (48, 48, 16)
    assert VOISpec(size_mm=(10.0, 10.0, 5.0), spacing_mm=(1.0, 1.0, 2.5)).shape == (10, 10, 2)


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, 1, 1), (-1, -1, 1), (1, -1, -1)])
@pytest.mark.parametrize("angle_deg", [0.0, 17.0])
def test_sphere_voi_is_centred_and_pastes_back(
    flips: tuple[int, int, int], angle_deg: float
) -> None:
    affine_lps = _affine_lps((0.8, 0.9, 2.5), flips, angle_deg)
    shape = (96, 90, 36)
    point = voxel_to_patient(affine_lps, np.array([51.3, 40.6, 17.4]))
    img, mask = _sphere_volume(affine_lps, shape, point, radius_mm=6.0)

    voi = CropVOIAroundPoint()(img, point)

    assert tuple(voi.shape) == (1, *DEFAULT_VOI_SPEC.shape)
    # the VOI centre is the voxel nearest the point: within half a VOI voxel per axis
    offset = patient_to_voxel(ras_to_lps(voi.affine.numpy()), point) - (
        (np.asarray(DEFAULT_VOI_SPEC.shape) - 1) / 2.0
    )
    assert np.all(np.abs(offset) <= 0.5 + 1e-6)
    assert np.linalg.norm(voi_center_lps(voi) - point) < 1.0
    # the sphere's centroid in the VOI is the point (LPS), so no axis is flipped or shifted
    fg = np.argwhere(voi[0].numpy() > -370.0)
    centroid_lps = voxel_to_patient(ras_to_lps(voi.affine.numpy()), fg.mean(axis=0))
    np.testing.assert_allclose(centroid_lps, point, atol=0.6)
    assert voi.meta[VOI_META_KEY]["source_spatial_shape"] == list(shape)

    pasted = paste_voi_mask((voi[0] > -370.0).to(torch.uint8), voi, img)
    assert tuple(pasted.shape) == (1, *shape)
    assert pasted.dtype == torch.uint8
    np.testing.assert_allclose(pasted.affine.numpy(), img.affine.numpy())
    assert _dice(pasted[0].numpy(), mask) > 0.9


def test_same_spacing_round_trip_is_voxel_exact() -> None:
    spec = VOISpec(size_mm=(24.0, 24.0, 20.0), spacing_mm=(0.8, 0.8, 2.5))
    affine_lps = _affine_lps((0.8, 0.8, 2.5), (-1, 1, 1), 0.0)
    shape = (64, 60, 30)
    point = voxel_to_patient(affine_lps, np.array([30.0, 28.0, 14.0]))
    img, mask = _sphere_volume(affine_lps, shape, point, radius_mm=7.0)

    voi = CropVOIAroundPoint(spec=spec)(img, point)
    pasted = paste_voi_mask((voi > -370.0).to(torch.uint8), voi.meta, img)

    np.testing.assert_array_equal(pasted[0].numpy().astype(bool), mask)


@settings(max_examples=15, deadline=None)
@given(
    flips=st.tuples(*[st.sampled_from([-1, 1])] * 3),
    angle=st.floats(-40.0, 40.0),
    index=st.tuples(st.floats(2.0, 37.0), st.floats(2.0, 37.0), st.floats(1.0, 14.0)),
)
def test_voi_centre_lands_on_the_point(
    flips: tuple[int, int, int], angle: float, index: tuple[float, float, float]
) -> None:
    """Whatever the source orientation, the VOI centre voxel maps back to the point."""
    affine_lps = _affine_lps((0.9, 0.7, 2.0), flips, angle)
    img = MetaTensor(torch.zeros((1, 40, 40, 16)), affine=torch.as_tensor(lps_to_ras(affine_lps)))
    point = voxel_to_patient(affine_lps, np.asarray(index))
    spec = VOISpec(size_mm=(12.0, 12.0, 8.0), spacing_mm=(1.0, 1.0, 2.0))

    voi = CropVOIAroundPoint(spec=spec)(img, point)

    idx = patient_to_voxel(ras_to_lps(voi.affine.numpy()), point)
    assert np.all(np.abs(idx - (np.asarray(spec.shape) - 1) / 2.0) <= 0.5 + 1e-6)


def test_voi_outside_the_image_is_padded_with_air() -> None:
    affine_lps = _affine_lps((0.7, 0.7, 1.25), (1, 1, 1), 0.0)
    img = MetaTensor(
        torch.full((1, 40, 40, 20), 50.0), affine=torch.as_tensor(lps_to_ras(affine_lps))
    )
    corner = voxel_to_patient(affine_lps, np.array([0.0, 0.0, 0.0]))

    voi = CropVOIAroundPoint()(img, corner)

    assert tuple(voi.shape[1:]) == DEFAULT_VOI_SPEC.shape
    values = set(np.unique(voi.numpy()).tolist())
    assert values == {-1000.0, 50.0}


def test_dictionary_wrapper_crops_image_and_label_alike() -> None:
    affine_lps = _affine_lps((0.8, 0.9, 2.5), (-1, -1, 1), 0.0)
    shape = (80, 80, 30)
    point = voxel_to_patient(affine_lps, np.array([40.2, 38.7, 15.1]))
    img, mask = _sphere_volume(affine_lps, shape, point, radius_mm=5.0)
    label = MetaTensor(torch.as_tensor(mask[None].astype(np.float32)), affine=img.affine)

    out = CropVOIAroundPointd(["image", "label"], mode=("bilinear", "nearest"))(
        {"image": img, "label": label, "point": point}
    )

    np.testing.assert_allclose(out["image"].affine.numpy(), out["label"].affine.numpy())
    assert set(np.unique(out["label"].numpy()).tolist()) <= {0.0, 1.0}
    assert _dice(out["label"][0].numpy(), out["image"][0].numpy() > -370.0) > 0.85


@pytest.mark.parametrize(
    ("image", "point"),
    [
        (torch.zeros((8, 8, 8)), (0.0, 0.0, 0.0)),
        (MetaTensor(torch.zeros((1, 8, 8, 8))), (0.0, float("nan"), 0.0)),
        (MetaTensor(torch.zeros((1, 8, 8, 8))), (1000.0, 1000.0, 1000.0)),
    ],
)
def test_bad_input_raises(image: torch.Tensor, point: tuple[float, float, float]) -> None:
    with pytest.raises(UnsupportedInputError):
        CropVOIAroundPoint()(image, point)  # type: ignore[arg-type]


def test_paste_rejects_mask_without_affine() -> None:
    with pytest.raises(UnsupportedInputError, match="affine"):
        paste_voi_mask(np.zeros((4, 4, 4)), {}, MetaTensor(torch.zeros((1, 8, 8, 8))))


@pytest.mark.realdata
def test_real_ct_voi_round_trip(data_dir: Path) -> None:
    """STS_001 CT (stored L,P,S at 0.98 x 0.98 x 3.27 mm): cut around the tumour centroid."""
    folder = data_dir / "sts" / "STS_001" / "CT" / "nifti"
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    image = loader(folder / "image" / "image.nii.gz")
    label = loader(folder / "mask" / "mask.nii.gz")
    ref = label[0].numpy() > 0
    centroid = voxel_to_patient(ras_to_lps(image.affine.numpy()), np.argwhere(ref).mean(axis=0))
    spec = VOISpec(size_mm=(120.0, 120.0, 120.0), spacing_mm=(0.703125, 0.703125, 1.25))

    voi_img = CropVOIAroundPoint(spec=spec)(image, centroid)
    voi_lbl = CropVOIAroundPoint(spec=VOISpec(spec.size_mm, spec.spacing_mm, 0.0), mode="nearest")(
        label, centroid
    )

    # the voxel at the point has the source's HU value there (no flip, no shift)
    src_idx = np.round(patient_to_voxel(ras_to_lps(image.affine.numpy()), centroid)).astype(int)
    voi_idx = np.round(patient_to_voxel(ras_to_lps(voi_img.affine.numpy()), centroid)).astype(int)
    src_val = float(image[0][tuple(src_idx)])
    assert abs(float(voi_img[0][tuple(voi_idx)]) - src_val) < 60.0
    pasted = paste_voi_mask(voi_lbl, voi_lbl, image)
    assert _dice(pasted[0].numpy(), ref) > 0.95
