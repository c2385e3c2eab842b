"""The VOI that grows with the lesion, and the truncation flag (transforms.voi, lesions)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
from monai.data import MetaTensor

from monai_tumor.errors import UnsupportedInputError
from monai_tumor.geometry import lps_to_ras, ras_to_lps, voxel_to_patient
from monai_tumor.postprocess.lesions import mark_truncated, measure_lesions
from monai_tumor.transforms.voi import (
    DEFAULT_VOI_SPEC,
    CropVOIAroundPoint,
    FieldOfView,
    VOIGrowth,
    border_contact,
    paste_voi_mask,
    segment_growing_voi,
)

_AFFINE_LPS = np.array(
    [[0.8, 0.0, 0.0, -60.0], [0.0, 0.8, 0.0, -50.0], [0.0, 0.0, 1.5, -90.0], [0, 0, 0, 1.0]]
)
_SHAPE = (120, 120, 80)


def _volume(
    center_voxel: tuple[float, float, float], radius_mm: float
) -> tuple[MetaTensor, npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """CT-like volume (-800 HU lung, 40 HU ball) on a 0.8 x 0.8 x 1.5 mm grid."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in _SHAPE], indexing="ij"), axis=-1)
    center = voxel_to_patient(_AFFINE_LPS, np.asarray(center_voxel, dtype=np.float64))
    ball = np.linalg.norm(voxel_to_patient(_AFFINE_LPS, grid) - center, axis=-1) <= radius_mm
    values = np.where(ball, 40.0, -800.0).astype(np.float32)[None]
    image = MetaTensor(torch.as_tensor(values), affine=torch.as_tensor(lps_to_ras(_AFFINE_LPS)))
    return image, ball, center


def _threshold(voi: MetaTensor) -> torch.Tensor:
    """A perfect segmenter for the synthetic ball: soft tissue above -300 HU."""
    return (voi.as_tensor()[:1] > -300).to(torch.uint8)


def _dice(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2.0 * (x & y).sum() / max(x.sum() + y.sum(), 1))


def test_ball_larger_than_the_box_grows_the_box_until_inside() -> None:
    image, ball, center = _volume((60.0, 60.0, 40.0), radius_mm=28.0)
    mask, fov = segment_growing_voi(image, center, _threshold)
    assert fov.runs > 1 and not fov.truncated and fov.reason == ""
    assert all(s > d for s, d in zip(fov.size_mm, DEFAULT_VOI_SPEC.size_mm, strict=True))
    assert _dice(mask[0], ball) > 0.97
    # the fixed first box alone cuts the ball off
    voi = CropVOIAroundPoint()(image, center)
    fixed = paste_voi_mask(_threshold(voi), voi, image)
    assert _dice(fixed[0], ball) < 0.5
    assert border_contact(_threshold(voi), voi).inner_axes == (0, 1, 2)


def test_ball_larger_than_the_limit_is_truncated() -> None:
    image, ball, center = _volume((60.0, 60.0, 40.0), radius_mm=28.0)
    growth = VOIGrowth(max_size_mm=(45.0, 45.0, 30.0), factor=1.5)
    mask, fov = segment_growing_voi(image, center, _threshold, growth=growth)
    assert fov.truncated and fov.size_mm == (45.0, 45.0, 30.0)
    assert "border of the largest volume of interest (45 x 45 x 30 mm)" in fov.reason
    assert fov.voxel is not None and mask[0][fov.voxel] == 1
    assert 0 < int(mask.sum()) < int(ball.sum())


def test_ball_at_the_image_edge_is_truncated_without_growing_past_it() -> None:
    image, ball, center = _volume((60.0, 60.0, 4.0), radius_mm=9.0)  # cut by the first slice
    mask, fov = segment_growing_voi(image, center, _threshold)
    assert fov.truncated and fov.reason == "reaches the edge of the image"
    assert fov.runs == 1 and fov.size_mm == DEFAULT_VOI_SPEC.size_mm
    assert _dice(mask[0], ball) > 0.95


def test_small_nodule_inside_the_box_is_unchanged_and_unflagged() -> None:
    image, ball, center = _volume((55.3, 66.6, 40.2), radius_mm=5.0)
    mask, fov = segment_growing_voi(image, center, _threshold)
    assert fov == FieldOfView(
        size_mm=DEFAULT_VOI_SPEC.size_mm, runs=1, truncated=False, voxel=fov.voxel
    )
    voi = CropVOIAroundPoint()(image, center)
    fixed = paste_voi_mask(_threshold(voi), voi, image)
    assert torch.equal(mask.as_tensor(), fixed.as_tensor())  # voxel for voxel the old result
    assert _dice(mask[0], ball) > 0.9


def test_no_growth_still_reports_contact() -> None:
    image, _, center = _volume((60.0, 60.0, 40.0), radius_mm=28.0)
    _, fov = segment_growing_voi(image, center, _threshold, growth=None)
    assert fov.runs == 1 and fov.truncated
    assert "border of the largest volume of interest (34 x 34 x 20 mm)" in fov.reason


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_growth_needs_a_factor_above_one(factor: float) -> None:
    with pytest.raises(UnsupportedInputError, match="factor must be > 1"):
        VOIGrowth(factor=factor)


def test_mark_truncated_flags_the_lesion_holding_the_voxel() -> None:
    image, _, _ = _volume((60.0, 60.0, 40.0), radius_mm=1.0)
    mask = torch.zeros((1, *_SHAPE), dtype=torch.uint8)
    mask[0, 10:20, 10:20, 0:5] = 1  # large lesion at the image edge
    mask[0, 90:94, 90:94, 50:53] = 1  # small lesion inside
    label = MetaTensor(mask, affine=image.affine)
    lesions = measure_lesions(label, image)
    records = [
        {"truncated": True, "reason": "reaches the edge of the image", "voxel": [12, 15, 0]},
        {"truncated": False, "reason": "", "voxel": [91, 91, 51]},
    ]
    marked = mark_truncated(lesions, label, records)
    assert [(les.truncated, les.truncation_reason) for les in marked] == [
        (True, "reaches the edge of the image"),
        (False, ""),
    ]
    assert marked[0].to_dict()["truncated"] is True
    assert mark_truncated(lesions, label, []) == lesions


def test_recentring_gives_the_centre_mask_from_any_inner_point() -> None:
    """A 16 mm ball fits the 34 x 34 x 20 mm box only when the box is centred on it."""
    image, ball, center = _volume((60.0, 60.0, 40.0), radius_mm=8.0)
    from_centre, fov_centre = segment_growing_voi(image, center, _threshold, growth=None)
    assert not fov_centre.truncated and _dice(from_centre[0], ball) > 0.95
    off = center + np.array([3.0, -2.0, 6.5])  # inside the ball, near its edge in z
    assert np.linalg.norm(off - center) < 8.0
    cut, fov_cut = segment_growing_voi(image, off, _threshold, growth=None)
    assert fov_cut.truncated and _dice(cut[0], ball) < 0.95
    moved, fov = segment_growing_voi(image, off, _threshold, growth=None, recentre=3)
    assert not fov.truncated and 1 < fov.runs <= 4
    # The same mask up to the partial-volume voxels of a grid shifted by under a voxel.
    assert _dice(moved[0], from_centre[0]) > 0.97
    assert _dice(moved[0], ball) > 0.95


def test_recentring_leaves_a_centred_nodule_alone() -> None:
    image, _, center = _volume((55.3, 66.6, 40.2), radius_mm=5.0)
    once, _ = segment_growing_voi(image, center, _threshold)
    again, fov = segment_growing_voi(image, center, _threshold, recentre=3)
    assert fov.runs == 1 and torch.equal(once.as_tensor(), again.as_tensor())


def test_coarse_growth_shows_the_network_one_patch_at_its_spacing() -> None:
    image, ball, center = _volume((60.0, 60.0, 40.0), radius_mm=28.0)
    seen: list[tuple[tuple[int, ...], tuple[float, ...]]] = []

    def network(voi: MetaTensor) -> torch.Tensor:
        spacing = np.linalg.norm(np.asarray(voi.affine)[:3, :3], axis=0)
        seen.append((tuple(voi.shape[1:]), tuple(np.round(spacing, 4))))
        return _threshold(voi)

    growth = VOIGrowth(coarse=True)
    mask, fov = segment_growing_voi(image, center, network, growth=growth)
    assert fov.runs > 1 and not fov.truncated
    assert all(s > d for s, d in zip(fov.size_mm, DEFAULT_VOI_SPEC.size_mm, strict=True))
    first = (DEFAULT_VOI_SPEC.shape, tuple(round(v, 4) for v in DEFAULT_VOI_SPEC.spacing_mm))
    assert set(seen) == {first}  # every run: 48 x 48 x 16 voxels "at" 0.703 x 0.703 x 1.25 mm
    assert _dice(mask[0], ball) > 0.9


def test_recentring_never_walks_off_the_seed_to_an_unflagged_sub_blob() -> None:
    """A network that labels only a small blob 12 mm from the seed inside a large tumour.

    Re-centred on that blob the box would no longer touch it, and the result would pass as a
    complete lesion; the seed is not in that mask, so the first (flagged) box stands.
    """
    image, _, center = _volume((60.0, 60.0, 40.0), radius_mm=28.0)
    blob_centre = center + np.array([12.0, 0.0, 0.0])

    def sub_blob(voi: MetaTensor) -> torch.Tensor:
        shape = voi.shape[1:]
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
        lps = voxel_to_patient(np.asarray(ras_to_lps(np.asarray(voi.affine))), grid)
        inside = np.linalg.norm(lps - blob_centre, axis=-1) <= 6.0
        return torch.as_tensor(inside[None].astype(np.uint8))

    fixed, fov_fixed = segment_growing_voi(image, center, sub_blob, growth=None)
    assert fov_fixed.truncated
    moved, fov = segment_growing_voi(image, center, sub_blob, growth=None, recentre=3)
    assert fov.runs > 1 and fov.truncated and fov.reason == fov_fixed.reason
    assert torch.equal(moved.as_tensor(), fixed.as_tensor())
