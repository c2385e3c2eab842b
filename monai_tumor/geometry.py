"""The one owner of geometry in monai_tumor.

Every affine, LPS/RAS conversion, slice ordering and patient-coordinate
computation in the package lives here; everything else calls these functions.
A second copy of orientation code elsewhere is a bug.

Conventions
-----------
* **Patient coordinates** are DICOM's LPS (x to the patient's Left, y to
  Posterior, z to Superior), in millimetres, unless a name says ``ras``.
* **Voxel arrays** are indexed ``[i, j, k]`` = ``[column, row, slice]``, the
  order used by nibabel, dcm2niix and MONAI (``MetaTensor`` spatial dims).
  A DICOM frame (``pixel_array``, indexed ``[row, column]``) is transposed to
  ``[column, row]`` before stacking.
* **Affines** are 4x4 and map ``(i, j, k, 1)`` to ``(x, y, z, 1)``. An affine
  called ``*_lps`` maps to LPS; one called ``*_ras`` (what MONAI and nibabel
  store) maps to RAS. They differ by ``diag(-1, -1, 1, 1)`` on the left.
* **Slice order** is along the slice normal ``n = row_cosines x column_cosines``,
  ascending ``dot(position, n)``. Never InstanceNumber, never file names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

__all__ = [
    "LPS_TO_RAS",
    "Orientation",
    "SliceStack",
    "affine_from_dicom",
    "affine_from_itk",
    "axis_codes",
    "foreground_box",
    "frame_to_voxel",
    "gantry_tilt_degrees",
    "in_plane_offsets",
    "lps_to_ras",
    "orientation_of",
    "patient_to_voxel",
    "ras_to_lps",
    "residual_tolerance",
    "slice_normal",
    "sort_along_normal",
    "spacing_from_affine",
    "subsampled_affine",
    "voxel_to_patient",
]

FloatArray = npt.NDArray[np.float64]

#: Flips x and y: maps LPS to RAS and back (it is its own inverse).
LPS_TO_RAS: FloatArray = np.diag([-1.0, -1.0, 1.0, 1.0])


class Orientation(str, Enum):
    """Plane of a slice, from its direction cosines."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    OBLIQUE = "oblique"


def _as_iop(iop: Sequence[float] | npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    arr = np.asarray(iop, dtype=np.float64).reshape(6)
    row, col = arr[:3], arr[3:]
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def slice_normal(iop: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """Return the unit slice normal of an ImageOrientationPatient.

    Parameters
    ----------
    iop
        ImageOrientationPatient (0020,0037): six direction cosines, the row
        direction (increasing column index) then the column direction
        (increasing row index), in LPS.

    Returns
    -------
    numpy.ndarray
        Shape ``(3,)``, unit vector ``row x column`` in LPS.
    """
    row, col = _as_iop(iop)
    n = np.cross(row, col)
    return n / np.linalg.norm(n)


def orientation_of(
    iop: Sequence[float] | npt.ArrayLike, *, tolerance_degrees: float = 10.0
) -> Orientation:
    """Classify a slice plane as axial, coronal, sagittal or oblique.

    Parameters
    ----------
    iop
        ImageOrientationPatient (LPS direction cosines).
    tolerance_degrees
        Largest angle between the slice normal and a patient axis for the plane
        to count as that axis' plane; beyond it the plane is oblique.

    Returns
    -------
    Orientation
        The plane whose normal is nearest the slice normal.
    """
    n = np.abs(slice_normal(iop))
    axis = int(np.argmax(n))
    if np.degrees(np.arccos(np.clip(n[axis], -1.0, 1.0))) > tolerance_degrees:
        return Orientation.OBLIQUE
    return (Orientation.SAGITTAL, Orientation.CORONAL, Orientation.AXIAL)[axis]


@dataclass(frozen=True)
class SliceStack:
    """Slices of one stack ordered along their normal, measured against a uniform grid.

    Attributes
    ----------
    order
        Indices into the input positions, sorted by ascending distance along
        the slice normal.
    distances
        Signed distances (mm) of the sorted slices along the normal.
    normal
        Unit slice normal (LPS).
    steps
        Differences between consecutive sorted distances (mm), length ``n-1``.
    spacing
        Slice spacing (mm) of the best-fitting uniform grid (least squares of the
        sorted distances against their grid indices); ``0.0`` for a single slice.
    uniform
        True when the slices fill consecutive grid positions (no gap, no
        duplicate) and every slice lies within ``tolerance`` of the grid.
    duplicates
        Pairs of input indices whose positions coincide (step below ``tolerance_mm``).
    gaps
        Indices ``g`` (into the sorted steps) where the step spans two or more
        grid spacings: a slice is missing after sorted slice ``g``.
    grid_index
        Grid position of each sorted slice (``0`` for the first); consecutive
        integers for a complete stack.
    origin
        Distance (mm) along the normal of grid position 0 on the fitted grid.
    residuals
        Distance (mm) of each sorted slice from its grid position,
        ``distances - (origin + spacing * grid_index)``.
    max_residual_mm
        Largest absolute residual (mm): how far the stored positions stray from
        a uniform stack (rounding of stored positions shows up here).
    tolerance
        Largest residual (mm) still accepted as uniform.
    """

    order: npt.NDArray[np.intp]
    distances: FloatArray
    normal: FloatArray
    steps: FloatArray
    spacing: float
    uniform: bool
    duplicates: tuple[tuple[int, int], ...]
    gaps: tuple[int, ...]
    grid_index: npt.NDArray[np.intp]
    origin: float
    residuals: FloatArray
    max_residual_mm: float
    tolerance: float


def residual_tolerance(
    spacing: float,
    *,
    tolerance_mm: float = 0.01,
    relative_tolerance: float = 0.1,
    max_residual_mm: float = 0.5,
) -> float:
    """Largest distance (mm) of a slice from the uniform grid still counted as uniform.

    ``max(tolerance_mm, min(relative_tolerance * spacing, max_residual_mm))``:
    a fraction of the slice spacing, at most ``max_residual_mm``, at least the
    floor ``tolerance_mm`` (float noise on sub-millimetre stacks).

    Parameters
    ----------
    spacing
        Slice spacing in mm.
    tolerance_mm, relative_tolerance, max_residual_mm
        Floor (mm), fraction of the spacing, cap (mm).

    Returns
    -------
    float
        Tolerance in mm.

    Notes
    -----
    A missing slice is always caught while ``relative_tolerance < 0.5``: the
    two slices on either side of the hole are two spacings apart but one grid
    step apart on any grid without the hole, so one of them lies at least half
    a spacing from it.
    """
    return max(tolerance_mm, min(relative_tolerance * spacing, max_residual_mm))


def _fit_grid(
    dist: FloatArray, steps: FloatArray, tolerance_mm: float
) -> tuple[npt.NDArray[np.intp], float, float]:
    """Grid index of each sorted distance, and the least-squares grid (origin, spacing).

    Each step is counted in units of the nominal step (the median of the steps
    shorter than 1.5 times the shortest one, so that gaps do not pull it up even
    in a short stack), rounded per step (not from the first slice), so rounding
    of the stored positions cannot accumulate into a wrong index over hundreds
    of slices.
    """
    real = steps[steps >= tolerance_mm]
    if real.size == 0:
        return np.zeros(dist.size, dtype=np.intp), float(dist[0]), 0.0
    nominal = float(np.median(real[real <= 1.5 * real.min()]))
    increments = np.where(steps >= tolerance_mm, np.maximum(np.rint(steps / nominal), 1), 0)
    index = np.concatenate([[0], np.cumsum(increments)]).astype(np.intp)
    if index[-1] == 0:
        return index, float(dist[0]), 0.0
    slope, intercept = np.polyfit(index.astype(np.float64), dist, 1)
    # Rounded to 1e-12 mm: an exactly uniform stack keeps its exact spacing
    # (1.0, not 1.0000000000000002, the least-squares rounding error) without
    # moving any slice measurably.
    return index, float(intercept), round(float(slope), 12)


def sort_along_normal(
    positions: npt.ArrayLike,
    iop: Sequence[float] | npt.ArrayLike,
    *,
    tolerance_mm: float = 0.01,
    relative_tolerance: float = 0.1,
    max_residual_mm: float = 0.5,
) -> SliceStack:
    """Order slices along the slice normal and measure them against a uniform grid.

    Uniformity is each slice's distance from the best-fitting uniform grid,
    not the spread of step-to-step differences: positions stored rounded
    (e.g. to 0.01 mm, steps of 3.19 to 3.29 mm around 3.27 mm) lie within a few
    hundredths of a millimetre of the grid and are uniform; a missing slice
    (a step of about twice the spacing) is a gap.

    Parameters
    ----------
    positions
        ImagePositionPatient of each slice, shape ``(n, 3)``, LPS mm.
    iop
        The stack's shared ImageOrientationPatient.
    tolerance_mm
        Steps below this (mm) mark duplicate positions; also the smallest
        residual tolerance.
    relative_tolerance, max_residual_mm
        A slice may lie up to ``relative_tolerance * spacing``, at most
        ``max_residual_mm``, from the grid (see :func:`residual_tolerance`).

    Returns
    -------
    SliceStack
        The order, distances, grid spacing and residuals, and any duplicates
        or gaps found.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    normal = slice_normal(iop)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    sorted_dist = dist[order]
    steps = np.diff(sorted_dist)
    duplicates = tuple(
        (int(order[i]), int(order[i + 1])) for i in np.flatnonzero(steps < tolerance_mm)
    )
    index, origin, spacing = _fit_grid(sorted_dist, steps, tolerance_mm)
    residuals = sorted_dist - (origin + spacing * index)
    max_residual = float(np.max(np.abs(residuals))) if residuals.size else 0.0
    tol = residual_tolerance(
        spacing,
        tolerance_mm=tolerance_mm,
        relative_tolerance=relative_tolerance,
        max_residual_mm=max_residual_mm,
    )
    increments = np.diff(index)
    gaps = tuple(int(i) for i in np.flatnonzero(increments > 1))
    uniform = bool(not duplicates and not gaps and max_residual <= tol)
    return SliceStack(
        order=order,
        distances=sorted_dist,
        normal=normal,
        steps=steps,
        spacing=spacing,
        uniform=uniform,
        duplicates=duplicates,
        gaps=gaps,
        grid_index=index,
        origin=origin,
        residuals=residuals,
        max_residual_mm=max_residual,
        tolerance=tol,
    )


def gantry_tilt_degrees(positions: npt.ArrayLike, iop: Sequence[float] | npt.ArrayLike) -> float:
    """Angle between the slice normal and the line through the slice positions.

    Zero for an ordinary stack; non-zero for CT acquired with a tilted gantry,
    where each slice is shifted within its plane relative to the previous one.

    Parameters
    ----------
    positions
        ImagePositionPatient of each slice, shape ``(n, 3)``, LPS mm, any order.
    iop
        The stack's shared ImageOrientationPatient.

    Returns
    -------
    float
        Angle in degrees (``0.0`` for fewer than two distinct positions).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    stack = sort_along_normal(pos, iop)
    first, last = pos[stack.order[0]], pos[stack.order[-1]]
    travel = last - first
    length = float(np.linalg.norm(travel))
    if length < 1e-6:
        return 0.0
    cosine = abs(float(travel @ stack.normal)) / length
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def in_plane_offsets(positions: npt.ArrayLike, iop: Sequence[float] | npt.ArrayLike) -> FloatArray:
    """In-plane displacement of each slice from the straight stack through the first.

    For a straight (untilted) stack every slice position lies on the line
    through ``positions[0]`` along the slice normal, and all offsets are zero.
    With gantry tilt they grow linearly with the distance along the normal.

    Parameters
    ----------
    positions
        ImagePositionPatient of each slice, shape ``(n, 3)``, LPS mm.
    iop
        The stack's shared ImageOrientationPatient.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, mm: the offset of ``positions[m] - positions[0]``
        along the row direction (increasing column index) and along the column
        direction (increasing row index). The component along the normal is
        removed. Offsets are relative to ``positions[0]`` in the given order.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    row, col = _as_iop(iop)
    rel = pos - pos[0]
    return np.stack([rel @ row, rel @ col], axis=-1)


def affine_from_dicom(
    iop: Sequence[float] | npt.ArrayLike,
    first_position: Sequence[float] | npt.ArrayLike,
    pixel_spacing: Sequence[float] | npt.ArrayLike,
    slice_step: Sequence[float] | npt.ArrayLike | float,
    *,
    ras: bool = True,
) -> FloatArray:
    """Build the voxel-to-patient affine of a slice stack.

    Parameters
    ----------
    iop
        ImageOrientationPatient (LPS direction cosines).
    first_position
        ImagePositionPatient of the first slice in sorted order (LPS mm): the
        centre of voxel ``[0, 0, 0]``.
    pixel_spacing
        PixelSpacing (0028,0030) as stored: ``[row spacing, column spacing]``
        in mm (distance between rows, then between columns).
    slice_step
        Either a scalar slice spacing in mm along the slice normal, or the
        3-vector (LPS mm) from one slice's position to the next's. The vector
        form keeps gantry tilt exact (the affine is then sheared).
    ras
        Return the RAS affine (MONAI/nibabel convention) if True, else LPS.

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` affine mapping ``[column, row, slice]`` indices to mm.
    """
    row, col = _as_iop(iop)
    ps = np.asarray(pixel_spacing, dtype=np.float64).reshape(2)
    step = np.asarray(slice_step, dtype=np.float64)
    step_vec = slice_normal(iop) * float(step) if step.ndim == 0 else step.reshape(3)
    aff = np.eye(4)
    aff[:3, 0] = row * ps[1]
    aff[:3, 1] = col * ps[0]
    aff[:3, 2] = step_vec
    aff[:3, 3] = np.asarray(first_position, dtype=np.float64).reshape(3)
    return lps_to_ras(aff) if ras else aff


def affine_from_itk(
    direction: npt.ArrayLike,
    spacing: npt.ArrayLike,
    origin: npt.ArrayLike,
    *,
    ras: bool = True,
) -> FloatArray:
    """Build a voxel-to-world affine from ITK/SimpleITK image geometry.

    ITK (and SimpleITK, dcm2niix's JSON, MHA/NRRD headers read through ITK)
    describe an image in LPS with a direction matrix whose columns are the
    unit directions of the voxel axes ``[i, j, k]`` (x fastest, the same order
    as this package's ``[column, row, slice]``).

    Parameters
    ----------
    direction
        ``GetDirection()``: 9 values (row-major 3x3) or a ``(3, 3)`` matrix, LPS.
    spacing
        ``GetSpacing()``: voxel size along i, j, k in mm.
    origin
        ``GetOrigin()``: LPS mm of the centre of voxel ``[0, 0, 0]``.
    ras
        Return the RAS affine if True (default), else LPS.

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` affine mapping ``[i, j, k]`` to mm.
    """
    dir_m = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = dir_m * np.asarray(spacing, dtype=np.float64).reshape(1, 3)
    aff[:3, 3] = np.asarray(origin, dtype=np.float64).reshape(3)
    return lps_to_ras(aff) if ras else aff


def lps_to_ras(affine: npt.ArrayLike) -> FloatArray:
    """Convert an affine mapping to LPS into one mapping to RAS.

    Parameters
    ----------
    affine
        ``(4, 4)`` voxel-to-LPS affine.

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` voxel-to-RAS affine (same voxel axes).
    """
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def ras_to_lps(affine: npt.ArrayLike) -> FloatArray:
    """Convert an affine mapping to RAS into one mapping to LPS.

    Parameters
    ----------
    affine
        ``(4, 4)`` voxel-to-RAS affine.

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` voxel-to-LPS affine (same voxel axes).
    """
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def spacing_from_affine(affine: npt.ArrayLike) -> FloatArray:
    """Voxel size in mm along each voxel axis (column norms of the 3x3 part).

    Parameters
    ----------
    affine
        ``(4, 4)`` voxel-to-world affine (LPS or RAS; norms are the same).

    Returns
    -------
    numpy.ndarray
        Shape ``(3,)``, mm.
    """
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def subsampled_affine(affine: npt.ArrayLike, steps: Sequence[int]) -> FloatArray:
    """Affine of the grid ``volume[::s0, ::s1, ::s2]`` taken from a grid with ``affine``.

    Voxel ``(i, j, k)`` of the subsampled grid is voxel ``(s0 i, s1 j, s2 k)`` of the
    original one, so both grids share voxel 0's centre and the same world convention
    (LPS or RAS, as ``affine``); only the voxel size grows.

    Parameters
    ----------
    affine
        ``(4, 4)`` voxel-to-world affine of the original grid.
    steps
        Positive integer step along each voxel axis ``(s0, s1, s2)``.

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` voxel-to-world affine of the subsampled grid.

    Raises
    ------
    ValueError
        A step is not a positive integer, or there are not three of them.
    """
    step = [int(s) for s in steps]
    if len(step) != 3 or any(s < 1 or s != t for s, t in zip(step, steps, strict=True)):
        raise ValueError(f"expected three positive integer steps, got {tuple(steps)}")
    return np.asarray(affine, dtype=np.float64) @ np.diag([*map(float, step), 1.0])


def voxel_to_patient(affine: npt.ArrayLike, indices: npt.ArrayLike) -> FloatArray:
    """Map voxel indices to world coordinates.

    Parameters
    ----------
    affine
        ``(4, 4)`` voxel-to-world affine; the output is in the same world
        convention (LPS or RAS) as the affine.
    indices
        Shape ``(..., 3)`` voxel indices ``[i, j, k]`` (may be fractional).

    Returns
    -------
    numpy.ndarray
        Shape ``(..., 3)`` world coordinates in mm.
    """
    aff = np.asarray(affine, dtype=np.float64)
    idx = np.asarray(indices, dtype=np.float64)
    return idx @ aff[:3, :3].T + aff[:3, 3]


def patient_to_voxel(affine: npt.ArrayLike, points: npt.ArrayLike) -> FloatArray:
    """Map world coordinates to (fractional) voxel indices.

    Parameters
    ----------
    affine
        ``(4, 4)`` voxel-to-world affine (LPS or RAS, matching ``points``).
    points
        Shape ``(..., 3)`` world coordinates in mm.

    Returns
    -------
    numpy.ndarray
        Shape ``(..., 3)`` fractional voxel indices ``[i, j, k]``.
    """
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    pts = np.asarray(points, dtype=np.float64)
    return pts @ inv[:3, :3].T + inv[:3, 3]


def frame_to_voxel(frame: npt.ArrayLike) -> npt.NDArray[np.generic]:
    """Turn a DICOM frame ``[row, column]`` into voxel order ``[column, row]``.

    Parameters
    ----------
    frame
        A 2D pixel array as pydicom returns it, or a stack ``(n, rows, cols)``.

    Returns
    -------
    numpy.ndarray
        ``(cols, rows)`` or ``(cols, rows, n)``: the voxel axis order used
        throughout the package.
    """
    arr = np.asarray(frame)
    if arr.ndim == 2:
        return arr.T
    if arr.ndim == 3:
        return np.transpose(arr, (2, 1, 0))
    raise ValueError(f"expected a 2D frame or a (n, rows, cols) stack, got shape {arr.shape}")


def axis_codes(affine: npt.ArrayLike, *, ras: bool = True) -> str:
    """Three-letter orientation code of the voxel axes, e.g. ``"LPS"``.

    Parameters
    ----------
    affine
        ``(4, 4)`` voxel-to-world affine.
    ras
        Whether the affine maps to RAS (True) or LPS (False).

    Returns
    -------
    str
        For each voxel axis, the patient direction it increases towards
        (nibabel's ``aff2axcodes`` convention: letters name where the axis points).
    """
    import nibabel.orientations as nio

    aff = np.asarray(affine, dtype=np.float64)
    if not ras:
        aff = lps_to_ras(aff)
    return "".join(str(c) for c in nio.aff2axcodes(aff))


def foreground_box(mask: npt.ArrayLike) -> tuple[slice, ...] | None:
    """Return the index bounding box of a mask's non-zero voxels, or None if it has none.

    One ``np.any`` projection per axis: no index array of the foreground (as
    ``np.nonzero`` would build) and no copy of the grid, which matters for a small lesion
    on a 512 x 512 x 400 CT.

    Parameters
    ----------
    mask
        Array of any number of dimensions; non-zero (True) voxels are the foreground.

    Returns
    -------
    tuple of slice or None
        One ``slice(first, last + 1)`` per axis, or None for an empty mask.
    """
    m = np.asarray(mask)
    box = []
    for axis in range(m.ndim):
        hits = np.flatnonzero(np.any(m, axis=tuple(a for a in range(m.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
