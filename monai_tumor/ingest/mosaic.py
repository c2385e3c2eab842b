"""Siemens mosaic images: one DICOM frame holding a grid of slices.

Siemens stores an EPI/DWI volume as a single frame tiled with the slices; the
count is in the private CSA header and ImagePositionPatient refers to the
corner of the whole mosaic, not of the first slice. nibabel's
``MosaicWrapper`` knows both (CSA parsing and the position correction), so the
geometry comes from it; this module only converts it to the package's
conventions (voxel axes ``[column, row, slice]``, one :class:`FrameInfo` per
slice) and re-tiles the pixels we decoded ourselves, exactly as nibabel's
``MosaicWrapper.get_unscaled_data`` does.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from monai_tumor.errors import InvalidSeriesError
from monai_tumor.ingest.multiframe import FrameInfo
from monai_tumor.ingest.native_header import IMAGE_TYPE, raw_ascii

with warnings.catch_warnings():
    # nibabel warns at import that its DICOM readers are experimental; only the
    # mosaic geometry is used, and it is tested against dcm2niix's output.
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import dicomwrappers

__all__ = ["is_mosaic", "mosaic_frames", "untile"]


def is_mosaic(ds: Dataset) -> bool:
    """Whether a dataset is a Siemens mosaic (ImageType contains MOSAIC)."""
    image_type = raw_ascii(ds, IMAGE_TYPE)
    return "MOSAIC" in (v.strip().upper() for v in image_type.split("\\"))


def mosaic_frames(ds: Dataset, path: Path, frame: FrameInfo) -> tuple[list[FrameInfo], int]:
    """Split a mosaic's single frame into one FrameInfo per slice.

    Parameters
    ----------
    ds
        The mosaic dataset (CSA header included).
    path
        Its file (for messages).
    frame
        The FrameInfo of the whole mosaic frame (rescale and spacing are shared).

    Returns
    -------
    tuple
        The slice frames (positions in LPS mm; frame_number stays 1, the one
        stored frame they all come from) and the number of tiles per mosaic row.

    Raises
    ------
    InvalidSeriesError
        The CSA header does not give the number of images in the mosaic.
    """
    try:
        wrapper: Any = dicomwrappers.MosaicWrapper(ds)
        affine = np.asarray(wrapper.affine, dtype=np.float64)  # LPS, voxel [row, col, slice]
        n_slices, tiles = int(wrapper.n_mosaic), int(wrapper.mosaic_size)
    except Exception as exc:  # nibabel raises WrapperError, KeyError, ValueError ...
        raise InvalidSeriesError(
            f"Siemens mosaic without a usable CSA header ({exc}); cannot split it into "
            "slices. Convert it with dcm2niix, or read with ReadOptions(mosaic=False) to get "
            "the raw tiled frame",
            path=path,
        ) from exc
    rows, cols = frame.rows // tiles, frame.columns // tiles
    origin, step = affine[:3, 3], affine[:3, 2]
    frames = [
        replace(
            frame,
            ipp=(
                float(origin[0] + k * step[0]),
                float(origin[1] + k * step[1]),
                float(origin[2] + k * step[2]),
            ),
            rows=rows,
            columns=cols,
        )
        for k in range(n_slices)
    ]
    return frames, tiles


def untile(tiled: npt.NDArray[np.generic], tiles: int, n_slices: int) -> npt.NDArray[np.generic]:
    """Cut a ``(1, R, C)`` mosaic frame into ``(n_slices, R // tiles, C // tiles)``.

    Tiles are read row by row (left to right, top to bottom), as in
    nibabel's ``MosaicWrapper.get_unscaled_data``.
    """
    _, big_rows, big_cols = tiled.shape
    rows, cols = big_rows // tiles, big_cols // tiles
    v4 = tiled[0].reshape(tiles, rows, tiles, cols).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(v4.reshape(tiles * tiles, rows, cols)[:n_slices])
