"""Moran's I and Geary's C vectorised (monai_tumor.radiomics.spatial) against MIRP's own."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_tumor.radiomics.spatial import faster_mirp_spatial, moran_geary

mirp_data = pytest.importorskip("mirp._features.morph_3d_data")


def _region(seed: int, n: int, spacing: tuple[float, float, float]) -> tuple[Any, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(
        {
            "z": rng.integers(0, 30, n),
            "y": rng.integers(0, 30, n),
            "x": rng.integers(0, 30, n),
            "g": rng.integers(1, 33, n).astype(np.float64),
        }
    ).drop_duplicates(subset=["z", "y", "x"])
    holder = mirp_data.Data3DSpatial()
    holder.spacing = spacing
    return holder, data.reset_index(drop=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 300),
    spacing=st.tuples(*[st.sampled_from([0.5, 0.97, 1.0, 2.5, 3.0])] * 3),
)
def test_bit_for_bit_mirps_values(seed: int, n: int, spacing: tuple[float, float, float]) -> None:
    holder, data = _region(seed, n, spacing)
    if len(data) < 2:
        return
    expected = mirp_data.Data3DSpatial._spatial_distribution(holder, data)
    positions = np.multiply(data[["z", "y", "x"]].values, spacing)
    assert moran_geary(positions, data.g) == expected  # exact equality, not approx


def test_equal_intensities_give_one() -> None:
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert moran_geary(positions, np.full(3, 7.0)) == (1.0, 1.0)


def test_mirps_monte_carlo_estimate_is_unchanged() -> None:
    """A region above MIRP's 1,000-voxel threshold: the same seeded estimate either way."""
    holder, data = _region(3, 1600, (1.0, 1.0, 2.0))
    original = mirp_data.Data3DSpatial._spatial_distribution

    def estimate() -> tuple[float, float]:
        import hashlib

        rng = np.random.default_rng(int(hashlib.sha1(b"lesion").hexdigest(), 16))
        values = [
            holder._spatial_distribution(data.loc[rng.choice(len(data), 100, False)])
            for _ in range(20)
        ]
        return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))

    plain = estimate()
    with faster_mirp_spatial() as swapped:
        assert swapped
        assert mirp_data.Data3DSpatial._spatial_distribution is not original
        with faster_mirp_spatial():  # nested blocks share the swap
            pass
        assert mirp_data.Data3DSpatial._spatial_distribution is not original
        fast = estimate()
    assert mirp_data.Data3DSpatial._spatial_distribution is original
    assert fast == plain
