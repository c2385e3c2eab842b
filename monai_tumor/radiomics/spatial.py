"""Moran's I and Geary's C of a lesion, vectorised, for MIRP's morphology features.

MIRP computes the IBSI morphological features Moran's I and Geary's C (IBSI tags
``morph_moran_i``, ``morph_geary_c``) with an inverse-distance weight for every pair of
voxels. For regions of 1,000 voxels or more it estimates them by Monte Carlo: batches of
100 random voxels (4,950 pairs each) until the standard error of the mean is small, which
for a glioma of 150,000 voxels takes about 200 batches. In MIRP 2.7 each pair's distance
is a Python ``lambda`` call (about a million calls for that glioma: most of the seconds its
features cost). :func:`moran_geary` computes the same sums with numpy array operations, in
the same order of operations, so the values are bit for bit MIRP's
(``tests/unit/test_radiomics_spatial.py`` checks it against MIRP's own method), and
:func:`faster_mirp_spatial` lets MIRP use it while features are computed.

This is the IBSI definition (Zwanenburg et al., IBSI reference manual, sections 3.1.18-19),
not a copy of MIRP's code: with pairs ``i > j``, weights ``w = 1 / |p_i - p_j|`` (mm) and
deviations ``d = g - mean(g)``::

    moran_i = n * sum(w * d_i * d_j) / (sum(w) * sum(d ** 2))
    geary_c = (n - 1) * sum(w * (d_i - d_j) ** 2) / (2 * sum(w) * sum(d ** 2))

(both 1 when the intensities are all equal).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MIRP_VERSIONS", "faster_mirp_spatial", "moran_geary", "supported_mirp"]

#: MIRP releases whose ``Data3DSpatial._spatial_distribution`` :func:`moran_geary` was
#: checked against; with any other version MIRP runs its own code, unchanged.
MIRP_VERSIONS = ("2.7.",)

#: MIRP's own method for regions this large (a loop over voxels, never reached by its
#: Monte Carlo estimate of 100-voxel batches); :func:`moran_geary` handles smaller ones.
_MIRP_PAIRWISE_LIMIT = 2000

_lock = threading.Lock()
_active = 0
_original: Callable[..., tuple[float, float]] | None = None


def moran_geary(
    positions_mm: npt.NDArray[np.floating[Any]], intensities: Any
) -> tuple[float, float]:
    """Return Moran's I and Geary's C of voxels at ``positions_mm`` with ``intensities``.

    Parameters
    ----------
    positions_mm
        ``(n, 3)`` voxel positions in mm (any fixed axis order), ``n >= 2``.
    intensities
        ``n`` grey levels (a pandas Series or an array; its mean is taken with
        ``np.mean``, as MIRP takes it).

    Returns
    -------
    tuple of float
        ``(moran_i, geary_c)``; ``(1.0, 1.0)`` when all intensities are equal.
    """
    n_v = len(positions_mm)
    # pairs (i, j) with i > j, ordered by j then i (the order MIRP sums them in)
    j_idx, i_idx = np.triu_indices(n_v, k=1)
    diff = positions_mm[i_idx, :] - positions_mm[j_idx, :]
    w_ij = 1.0 / np.sqrt(np.sum(diff**2.0, axis=1))
    gl_dev = np.asarray(intensities) - np.mean(intensities)
    denom = np.sum(w_ij) * np.sum(gl_dev**2.0)
    if not denom > 0.0:
        return 1.0, 1.0
    moran = n_v * np.sum(np.multiply(np.multiply(w_ij, gl_dev[i_idx]), gl_dev[j_idx])) / denom
    geary = (n_v - 1.0) * np.sum(np.multiply(w_ij, (gl_dev[i_idx] - gl_dev[j_idx]) ** 2.0))
    return moran, geary / (2.0 * denom)


def _vectorised(self: Any, data: Any) -> tuple[float, float]:
    if len(data) >= _MIRP_PAIRWISE_LIMIT and _original is not None:
        return _original(self, data)
    positions = np.multiply(data[["z", "y", "x"]].values, self.spacing)
    return moran_geary(positions, data.g)


def supported_mirp() -> bool:
    """Whether the installed MIRP is one whose private parts this package relies on.

    :data:`MIRP_VERSIONS`: the swapped spatial method here, and the numpy image classes of
    :func:`monai_tumor.radiomics.extract.compute_features_in_memory`.
    """
    try:
        version = importlib_metadata.version("mirp")
    except importlib_metadata.PackageNotFoundError:
        return False
    return version.startswith(MIRP_VERSIONS)


def _mirp_spatial_class() -> type | None:
    if not supported_mirp():
        return None
    try:
        from mirp._features.morph_3d_data import Data3DSpatial
    except ImportError:
        return None
    return Data3DSpatial if hasattr(Data3DSpatial, "_spatial_distribution") else None


@contextmanager
def faster_mirp_spatial() -> Iterator[bool]:
    """Let MIRP compute Moran's I and Geary's C with :func:`moran_geary` inside the block.

    MIRP keeps the computation in a private method of its morphology data class, so this
    swaps that method for the duration of the block (nested and concurrent blocks share
    one swap, undone when the last one ends; the values are identical either way). With a
    MIRP version other than :data:`MIRP_VERSIONS` nothing is swapped.

    Yields
    ------
    bool
        Whether MIRP uses the vectorised computation in the block.
    """
    global _active, _original
    cls = _mirp_spatial_class()
    if cls is None:
        yield False
        return
    with _lock:
        if _active == 0:
            _original = getattr(cls, "_spatial_distribution")  # noqa: B009 (private to MIRP)
            setattr(cls, "_spatial_distribution", _vectorised)  # noqa: B010
        _active += 1
    try:
        yield True
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _original is not None:
                setattr(cls, "_spatial_distribution", _original)  # noqa: B010
                _original = None
