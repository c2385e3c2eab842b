"""Plausibility review of a segmentation (monai_tumor.postprocess.review)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_tumor.errors import BundleError
from monai_tumor.postprocess.review import (
    ReviewSpec,
    input_statistics,
    read_review_spec,
    review_segmentation,
    rim_fraction,
)

NAMES = ("flair", "t1c")


def _ball_image(spacing: float = 1.0, size: int = 41, radius: float = 15.0) -> MetaTensor:
    """Two channels: a bright ball ("brain") on a 0 background, spacing in mm."""
    grid = np.indices((size, size, size)).astype(np.float64) - size // 2
    dist = np.sqrt((grid**2).sum(0)) * spacing
    brain = dist <= radius
    rng = np.random.default_rng(0)
    img = np.stack([np.where(brain, rng.normal(100, 10, brain.shape), 0.0)] * 2)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    return MetaTensor(torch.from_numpy(img).float(), affine=torch.from_numpy(affine))


def _label(mask: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.from_numpy(mask.astype(np.uint8))[None])


def _shells(image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[1]
    grid = np.indices((size,) * 3).astype(np.float64) - size // 2
    dist = np.sqrt((grid**2).sum(0)) * float(image.affine[0, 0])
    return dist, dist <= 15.0


@pytest.mark.parametrize("spacing", [1.0, 0.5])
def test_rim_fraction_of_a_shell_and_a_core(spacing: float) -> None:
    image = _ball_image(spacing=spacing, size=int(41 / spacing) | 1)
    dist, brain = _shells(image)
    shell = brain & (dist > 13.0)  # the outer 2 mm
    core = dist <= 6.0
    assert rim_fraction(image, _label(shell), rim_mm=3.0) == pytest.approx(1.0)
    assert rim_fraction(image, _label(core), rim_mm=3.0) == 0.0
    assert rim_fraction(image, _label(np.zeros_like(core)), rim_mm=3.0) == 0.0
    half = shell | core
    expected = shell.sum() / half.sum()
    assert rim_fraction(image, _label(half), rim_mm=3.0) == pytest.approx(expected, abs=0.01)


def _rim_fraction_whole_volume(image: MetaTensor, label: MetaTensor, rim_mm: float) -> float:
    """The definition: a distance transform over the whole (padded) volume."""
    from scipy import ndimage

    lab = label.numpy()[0] > 0
    img = image.numpy()
    brain = (img > img.reshape(img.shape[0], -1).min(1)[:, None, None, None]).any(0)
    spacing = tuple(float(v) for v in np.abs(np.diag(image.affine.numpy())[:3]))
    padded = np.pad(brain, 1, constant_values=False)
    depth = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    return float((lab & brain & (depth <= rim_mm)).sum()) / max(1, int(lab.sum()))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    spacing=st.tuples(*[st.sampled_from([0.5, 0.9, 1.0, 2.0, 3.3])] * 3),
    rim_mm=st.sampled_from([0.0, 1.0, 2.5, 3.0, 7.0]),
)
def test_rim_fraction_on_the_label_box_equals_the_whole_volume_transform(
    seed: int, spacing: tuple[float, float, float], rim_mm: float
) -> None:
    """Cropping the distance transform to the label's box changes no labelled voxel's answer."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 24, 3))
    brain = np.zeros(shape, dtype=bool)
    lo = [int(rng.integers(-2, n // 2)) for n in shape]  # brains cut by the border, too
    hi = [int(rng.integers(n // 2 + 1, n + 3)) for n in shape]
    brain[tuple(slice(max(a, 0), b) for a, b in zip(lo, hi, strict=True))] = True
    brain &= rng.random(shape) > 0.05  # holes: outside voxels inside the brain
    img = np.stack([np.where(brain, rng.normal(100, 10, shape), -3.0)] * 2)
    affine = torch.from_numpy(np.diag([*spacing, 1.0]))
    image = MetaTensor(torch.from_numpy(img).float(), affine=affine)
    label = np.zeros(shape, dtype=bool)
    centre = [int(rng.integers(0, n)) for n in shape]
    half = [int(rng.integers(0, 5)) for _ in shape]
    label[tuple(slice(max(c - h, 0), c + h + 1) for c, h in zip(centre, half, strict=True))] = True
    label &= rng.random(shape) > 0.3
    fast = rim_fraction(image, _label(label), rim_mm=rim_mm)
    assert fast == _rim_fraction_whole_volume(image, _label(label), rim_mm)


def test_input_statistics_equal_the_float64_definition() -> None:
    """Converting only the brain's voxels to float64 changes no statistic."""
    image = _ball_image(spacing=0.9)
    arr = image.numpy().astype(np.float64)
    brain = (arr > arr.reshape(2, -1).min(1)[:, None, None, None]).any(0)
    stats = input_statistics(image, NAMES)
    for c, name in enumerate(NAMES):
        values = arr[c][brain]
        z = (values - values.mean()) / values.std()
        p01, p99 = np.percentile(z, [1.0, 99.0])
        assert stats[f"{name}_p01_z"] == p01 and stats[f"{name}_p99_z"] == p99


def test_input_statistics_ignore_intensity_scale() -> None:
    image = _ball_image()
    stats = input_statistics(image, NAMES)
    scaled = MetaTensor(image.as_tensor() * 37.0 - 5.0, affine=image.affine)
    assert input_statistics(scaled, NAMES) == pytest.approx(stats, rel=1e-5)
    _, brain = _shells(image)
    assert stats["brain_volume_ml"] == pytest.approx(brain.sum() / 1000.0)
    assert stats["flair_p01_z"] < -2.0 < 2.0 < stats["t1c_p99_z"]


SPEC = ReviewSpec(
    rim_mm=3.0,
    max_rim_fraction=0.5,
    min_tta_dice={"WT": 0.8},
    intensity_ranges={"brain_volume_ml": (5.0, 30.0), "flair_p99_z": (1.0, 4.0)},
)


def test_review_passes_a_plausible_result() -> None:
    image = _ball_image()
    dist, _ = _shells(image)
    result = review_segmentation(
        image,
        _label(dist <= 6.0),
        spec=SPEC,
        input_names=NAMES,
        tta_agreement={"passes": 8, "TC": 0.9, "WT": 0.95, "ET": 0.7},
    )
    assert not result.review and result.reasons == ()
    assert result.measures["rim_fraction"] == 0.0
    assert result.measures["tta_dice_WT"] == 0.95
    assert result.to_dict()["review"] is False


@pytest.mark.parametrize("shell_mm", [6.0, 13.0])
def test_review_measures_are_the_public_functions(shell_mm: float) -> None:
    """review_segmentation finds the brain once for both checks: the same numbers."""
    image = _ball_image(spacing=1.5)
    dist, brain = _shells(image)
    label = _label(brain & (dist > shell_mm))
    result = review_segmentation(image, label, spec=SPEC, input_names=NAMES)
    assert result.measures["rim_fraction"] == rim_fraction(image, label, rim_mm=SPEC.rim_mm)
    stats = input_statistics(image, NAMES)
    assert {k: result.measures[k] for k in stats} == stats


def test_review_flags_each_failed_check_with_its_reason() -> None:
    image = _ball_image()
    dist, brain = _shells(image)
    result = review_segmentation(
        image,
        _label(brain & (dist > 13.0)),
        spec=SPEC,
        input_names=NAMES,
        tta_agreement={"passes": 8, "WT": 0.4},
    )
    assert result.review
    assert len(result.reasons) == 2
    assert "outer rim" in result.reasons[0] and "100%" in result.reasons[0]
    assert "disagree on WT" in result.reasons[1] and "0.40" in result.reasons[1]
    skull = torch.from_numpy(np.random.default_rng(1).uniform(20.0, 40.0, image.shape[1:]))
    head = MetaTensor(  # not skull-stripped: the background is tissue too
        torch.where(image.as_tensor() > 0, image.as_tensor(), skull.float()), affine=image.affine
    )
    flagged = review_segmentation(head, _label(dist <= 6.0), spec=SPEC, input_names=NAMES)
    assert flagged.review
    assert any("not measured" in r for r in flagged.reasons)
    assert any("brain_volume_ml" in r and "training range" in r for r in flagged.reasons)


def test_read_review_spec_validates(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    spec = read_review_spec(
        {
            "rim_mm": 2,
            "max_rim_fraction": 0.4,
            "min_tta_dice": {"WT": 0.7},
            "intensity_ranges": {"brain_volume_ml": [800, 2200]},
        },
        path=path,
    )
    assert spec == ReviewSpec(2.0, 0.4, {"WT": 0.7}, {"brain_volume_ml": (800.0, 2200.0)})
    assert read_review_spec({}, path=path) == ReviewSpec()
    bad: object
    for bad in (
        [],
        {"rim_mm": 0},
        {"max_rim_fraction": "high"},
        {"min_tta_dice": [0.7]},
        {"intensity_ranges": {"brain_volume_ml": [2, 1]}},
        {"intensity_ranges": {"brain_volume_ml": 3}},
    ):
        with pytest.raises(BundleError, match=r"monai_tumor\.review") as info:
            read_review_spec(bad, path=path)
        assert str(path) in str(info.value)


@pytest.mark.realdata
def test_rim_outline_on_a_real_case_is_flagged_and_the_reference_is_not(data_dir: Path) -> None:
    """The failure the 0.1.1 model showed on Brats18_2013_11_1: the brain's bright rim."""
    case = "Brats18_2013_11_1"
    folder = data_dir / "brats2018" / case
    vols = [nib.Nifti1Image.from_filename(folder / f"{case}_{m}.nii.gz") for m in ("flair", "t1ce")]
    image = MetaTensor(
        torch.from_numpy(np.stack([np.asarray(v.dataobj, dtype=np.float32) for v in vols])),
        affine=torch.from_numpy(vols[0].affine),
    )
    ref = np.asarray(nib.Nifti1Image.from_filename(folder / f"{case}_seg.nii.gz").dataobj) > 0
    spec = ReviewSpec(rim_mm=3.0, max_rim_fraction=0.35)
    assert not review_segmentation(image, _label(ref), spec=spec, input_names=NAMES).review
    brain = (image.numpy() > 0).any(0)
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(brain)
    posterior = np.zeros_like(brain)
    posterior[:, : brain.shape[1] // 3, :] = True  # RAS grid: low j is posterior
    outline = brain & (depth <= 4) & posterior
    result = review_segmentation(image, _label(outline), spec=spec, input_names=NAMES)
    assert result.review and "outer rim" in result.reasons[0]
