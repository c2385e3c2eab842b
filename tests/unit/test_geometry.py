"""Properties of monai_tumor.geometry (hypothesis) and a few fixed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_tumor import geometry
from tests.support.dicom_factory import lps_affine, random_rotation

unit = st.floats(0.0, 0.999, allow_nan=False)
spacing = st.floats(0.2, 6.0, allow_nan=False)
coord = st.floats(-500.0, 500.0, allow_nan=False)
SETTINGS = settings(max_examples=40, deadline=None)


def _random_affine(
    a: float, b: float, c: float, sx: float, sy: float, sz: float, o: tuple[float, float, float]
) -> np.ndarray:
    rot = random_rotation(a, b, c)
    aff = np.eye(4)
    aff[:3, :3] = rot * np.array([sx, sy, sz])
    aff[:3, 3] = o
    return aff


@SETTINGS
@given(unit, unit, unit, spacing, spacing, spacing, st.tuples(coord, coord, coord))
def test_lps_ras_is_an_involution(a, b, c, sx, sy, sz, o) -> None:
    aff = _random_affine(a, b, c, sx, sy, sz, o)
    np.testing.assert_array_equal(geometry.lps_to_ras(geometry.lps_to_ras(aff)), aff)
    np.testing.assert_array_equal(geometry.ras_to_lps(geometry.lps_to_ras(aff)), aff)
    ras = geometry.lps_to_ras(aff)
    # x and y flip sign, z is kept.
    np.testing.assert_array_equal(ras[:2], -aff[:2])
    np.testing.assert_array_equal(ras[2:], aff[2:])


@SETTINGS
@given(
    unit,
    unit,
    unit,
    spacing,
    spacing,
    spacing,
    st.tuples(coord, coord, coord),
    st.lists(st.tuples(coord, coord, coord), min_size=1, max_size=5),
)
def test_voxel_patient_round_trip(a, b, c, sx, sy, sz, o, idx) -> None:
    aff = _random_affine(a, b, c, sx, sy, sz, o)
    ijk = np.array(idx)
    xyz = geometry.voxel_to_patient(aff, ijk)
    np.testing.assert_allclose(geometry.patient_to_voxel(aff, xyz), ijk, atol=1e-8)
    np.testing.assert_allclose(xyz, (aff @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3], atol=1e-9)


@SETTINGS
@given(
    unit,
    unit,
    unit,
    spacing,
    st.integers(2, 30),
    st.randoms(use_true_random=False),
    st.tuples(coord, coord, coord),
)
def test_sort_along_normal_is_permutation_invariant(a, b, c, step, n, rnd, o) -> None:
    rot = random_rotation(a, b, c)
    iop = [*rot[:, 0], *rot[:, 1]]
    positions = np.array(o) + np.arange(n)[:, None] * (rot[:, 2] * step)
    perm = list(range(n))
    rnd.shuffle(perm)
    shuffled = positions[perm]
    stack = geometry.sort_along_normal(shuffled, iop)
    np.testing.assert_allclose(shuffled[stack.order], positions, atol=1e-9)
    reference = geometry.sort_along_normal(positions, iop)
    np.testing.assert_allclose(stack.distances, reference.distances, atol=1e-9)
    assert stack.uniform and not stack.gaps and not stack.duplicates
    assert stack.spacing == pytest.approx(step, rel=1e-9)


@SETTINGS
@given(unit, unit, unit, spacing, st.integers(2, 20), st.tuples(coord, coord, coord))
def test_straight_stack_has_no_tilt(a, b, c, step, n, o) -> None:
    rot = random_rotation(a, b, c)
    iop = [*rot[:, 0], *rot[:, 1]]
    positions = np.array(o) + np.arange(n)[:, None] * (rot[:, 2] * step)
    assert geometry.gantry_tilt_degrees(positions, iop) < 1e-5
    np.testing.assert_allclose(geometry.in_plane_offsets(positions, iop), 0.0, atol=1e-9)


@SETTINGS
@given(unit, unit, unit, spacing, st.floats(1.0, 30.0), st.integers(2, 20))
def test_tilt_angle_and_offsets_are_measured(a, b, c, step, tilt, n) -> None:
    rot = random_rotation(a, b, c)
    iop = [*rot[:, 0], *rot[:, 1]]
    t = np.radians(tilt)
    direction = np.cos(t) * rot[:, 2] + np.sin(t) * rot[:, 1]  # tilt towards the column axis
    positions = np.arange(n)[:, None] * (direction * step)
    assert geometry.gantry_tilt_degrees(positions, iop) == pytest.approx(tilt, abs=1e-6)
    offsets = geometry.in_plane_offsets(positions, iop)
    np.testing.assert_allclose(offsets[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(offsets[:, 1], np.arange(n) * step * np.sin(t), atol=1e-9)


@SETTINGS
@given(unit, unit, unit, spacing, spacing, spacing, st.tuples(coord, coord, coord))
def test_affine_from_dicom_matches_definition(a, b, c, dr, dc, dz, o) -> None:
    rot = random_rotation(a, b, c)
    iop = [*rot[:, 0], *rot[:, 1]]
    lps = geometry.affine_from_dicom(iop, o, (dr, dc), dz, ras=False)
    np.testing.assert_allclose(
        lps, lps_affine(iop=iop, pixel_spacing=(dr, dc), slice_step=dz, origin=o)
    )
    np.testing.assert_allclose(geometry.spacing_from_affine(lps), [dc, dr, dz])
    np.testing.assert_allclose(
        geometry.affine_from_dicom(iop, o, (dr, dc), dz), geometry.lps_to_ras(lps)
    )
    # Pixel [col 1, row 0] is one column spacing along the row direction (PS3.3 C.7.6.2.1.1).
    np.testing.assert_allclose(
        geometry.voxel_to_patient(lps, [1, 0, 0]), np.array(o) + rot[:, 0] * dc
    )
    # ITK's description of the same grid gives the same affine.
    itk = geometry.affine_from_itk(rot.ravel(), (dc, dr, dz), o, ras=False)
    np.testing.assert_allclose(itk, lps, atol=1e-12)


def test_orientation_and_axis_codes() -> None:
    assert geometry.orientation_of([1, 0, 0, 0, 1, 0]) is geometry.Orientation.AXIAL
    assert geometry.orientation_of([1, 0, 0, 0, 0, -1]) is geometry.Orientation.CORONAL
    assert geometry.orientation_of([0, 1, 0, 0, 0, -1]) is geometry.Orientation.SAGITTAL
    assert geometry.orientation_of([1, 0, 0, 0, 0.7071, 0.7071]) is geometry.Orientation.OBLIQUE
    axial = geometry.affine_from_dicom([1, 0, 0, 0, 1, 0], [0, 0, 0], [1, 1], 1)
    assert geometry.axis_codes(axial) == "LPS"
    assert geometry.axis_codes(geometry.ras_to_lps(axial), ras=False) == "LPS"


def test_sort_along_normal_finds_gaps_and_duplicates() -> None:
    z = np.array([0.0, 2.0, 4.0, 8.0, 10.0, 10.0])
    positions = np.c_[np.zeros(6), np.zeros(6), z][::-1]
    stack = geometry.sort_along_normal(positions, [1, 0, 0, 0, 1, 0])
    assert stack.spacing == pytest.approx(2.0)
    assert stack.gaps == (2,)
    assert len(stack.duplicates) == 1
    assert not stack.uniform


def test_frame_to_voxel_transposes_rows_and_columns() -> None:
    frame = np.arange(6).reshape(2, 3)  # 2 rows, 3 columns
    assert geometry.frame_to_voxel(frame).shape == (3, 2)
    assert geometry.frame_to_voxel(frame)[2, 1] == frame[1, 2]
    stack = np.stack([frame, frame + 10])
    assert geometry.frame_to_voxel(stack)[2, 1, 1] == 15


@SETTINGS
@given(
    unit,
    unit,
    unit,
    spacing,
    spacing,
    spacing,
    st.tuples(coord, coord, coord),
    st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 20)),
)
def test_subsampled_affine_maps_to_the_original_voxel(a, b, c, sx, sy, sz, o, steps, idx) -> None:
    aff = _random_affine(a, b, c, sx, sy, sz, o)
    sub = geometry.subsampled_affine(aff, steps)
    np.testing.assert_allclose(
        geometry.voxel_to_patient(sub, idx),
        geometry.voxel_to_patient(aff, np.multiply(idx, steps)),
        atol=1e-9,
    )
    np.testing.assert_allclose(
        geometry.spacing_from_affine(sub), np.multiply([sx, sy, sz], steps), rtol=1e-9
    )


@pytest.mark.parametrize("steps", [(0, 1, 1), (1, 2), (1.5, 1, 1)])
def test_subsampled_affine_refuses_bad_steps(steps) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        geometry.subsampled_affine(np.eye(4), steps)


def _rounded_stack(
    a: float, b: float, c: float, step: float, n: int, o: tuple[float, float, float], quantum: float
) -> tuple[np.ndarray, list[float], np.ndarray]:
    """A uniform oblique stack whose stored positions are rounded to ``quantum`` mm."""
    rot = random_rotation(a, b, c)
    iop = [*rot[:, 0], *rot[:, 1]]
    exact = np.array(o) + np.arange(n)[:, None] * (rot[:, 2] * step)
    return np.round(exact / quantum) * quantum, iop, exact


#: Orientation (3 angles), spacing, slice count, origin, rounding as a share of the tolerance.
ROUNDED_STACKS = (
    unit,
    unit,
    unit,
    st.floats(0.5, 6.0, allow_nan=False),
    st.integers(4, 300),
    st.tuples(coord, coord, coord),
    st.floats(0.0, 0.8, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(*ROUNDED_STACKS)
def test_rounded_positions_of_a_uniform_stack_are_uniform(a, b, c, step, n, o, fraction) -> None:
    # Rounding each coordinate to q moves a slice by at most q*sqrt(3)/2 along the
    # normal; q is drawn so that this stays within `fraction` of the tolerance.
    tol = geometry.residual_tolerance(step)
    quantum = max(fraction * tol / np.sqrt(3) / 1.2, 1e-6)
    positions, iop, _ = _rounded_stack(a, b, c, step, n, o, quantum)
    stack = geometry.sort_along_normal(positions, iop)
    assert stack.uniform, (stack.max_residual_mm, stack.tolerance, stack.gaps)
    assert not stack.gaps and not stack.duplicates
    np.testing.assert_array_equal(stack.grid_index, np.arange(n))
    assert stack.spacing == pytest.approx(step, abs=2 * quantum)
    assert stack.max_residual_mm <= stack.tolerance


@settings(max_examples=200, deadline=None)
@given(*ROUNDED_STACKS, st.data())
def test_one_removed_slice_is_refused(a, b, c, step, n, o, fraction, data) -> None:
    tol = geometry.residual_tolerance(step)
    quantum = max(fraction * tol / np.sqrt(3) / 1.2, 1e-6)
    positions, iop, _ = _rounded_stack(a, b, c, step, n, o, quantum)
    removed = data.draw(st.integers(1, n - 2), label="removed")
    kept = np.delete(positions, removed, axis=0)
    stack = geometry.sort_along_normal(kept[::-1], iop)
    assert not stack.uniform
    assert stack.gaps == (removed - 1,)


def test_ge_pet_rounding_is_uniform_and_a_missing_slice_is_not() -> None:
    # The case reported from a GE PET export: 267 slices, 3.27 mm, positions stored
    # to 0.1 mm along z so that the steps range over 3.2..3.3 mm.
    z = np.round(-881.3 + 3.27 * np.arange(267), 1)
    positions = np.c_[np.full(267, -21.09), np.full(267, -86.72), z]
    stack = geometry.sort_along_normal(positions, [1, 0, 0, 0, 1, 0])
    assert stack.steps.min() < 3.25 and stack.steps.max() > 3.29
    assert stack.uniform and stack.max_residual_mm <= 0.06
    assert stack.spacing == pytest.approx(3.27, abs=1e-3)
    missing = geometry.sort_along_normal(np.delete(positions, 100, axis=0), [1, 0, 0, 0, 1, 0])
    assert not missing.uniform and missing.gaps == (99,)


def test_residual_tolerance_is_a_capped_fraction_of_the_spacing() -> None:
    assert geometry.residual_tolerance(3.27) == pytest.approx(0.327)
    assert geometry.residual_tolerance(8.0) == pytest.approx(0.5)
    assert geometry.residual_tolerance(0.05) == pytest.approx(0.01)


@given(
    st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 0.3),
)
def test_foreground_box_is_the_bounding_box_of_the_nonzero_voxels(shape, seed, density) -> None:
    mask = np.random.default_rng(seed).random(shape) < density
    box = geometry.foreground_box(mask)
    hits = np.argwhere(mask)
    if hits.size == 0:
        assert box is None
        return
    first, last = hits.min(0), hits.max(0)
    assert box == tuple(slice(int(a), int(b) + 1) for a, b in zip(first, last, strict=True))
    assert np.count_nonzero(mask[box]) == np.count_nonzero(mask)
