"""A MONAI ``ImageReader`` that reads through :func:`monai_tumor.ingest.reader.read_series`.

Use it wherever MONAI loads images, to get the geometry-exact reader (slices
sorted along the normal, per-slice rescale, validated spacing) instead of
MONAI's ``PydicomReader`` (which orders slices by InstanceNumber)::

    LoadImage(reader=DicomSeriesReader(), image_only=True)(folder)
    LoadImaged(keys="image", reader=DicomSeriesReader())({"image": folder})

Both give the same voxels, RAS affine and metadata as ``read_series(folder)``:
shape ``(1, I, J, K)`` with or without ``ensure_channel_first`` (the reader
reports its channel as axis 0, like MONAI's NRRD reader does for vectors).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from monai.data import ImageReader, MetaTensor

from monai_tumor.errors import MonaiTumorError
from monai_tumor.ingest.reader import ReadOptions, is_volume_file, read_series

__all__ = ["DicomSeriesReader"]

PathLike = str | os.PathLike[str]


def _looks_readable(path: Path) -> bool:
    if path.is_dir() or is_volume_file(path):
        return True
    if not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


class _Failed:
    """A read error carried from ``read`` to ``get_data`` (see DicomSeriesReader.read)."""

    def __init__(self, error: MonaiTumorError) -> None:
        self.error = error


class DicomSeriesReader(ImageReader):
    """Read a DICOM series folder (or a list of its files, or a NIfTI/NRRD/MHA file).

    Parameters
    ----------
    options
        Reading policies passed to :func:`read_series`.
    series_uid
        SeriesInstanceUID to read when a folder holds several series.
    stack
        Stack index when a series mixes orientations or frame sizes.

    Notes
    -----
    ``read`` accepts what :func:`read_series` accepts. A sequence whose items are
    all folders or volume files is read as several images and stacked as
    channels (MONAI's multi-file convention); any other sequence is the files
    of one series.
    """

    def __init__(
        self,
        options: ReadOptions | None = None,
        *,
        series_uid: str | None = None,
        stack: int | None = None,
    ) -> None:
        super().__init__()
        self.options = options
        self.series_uid = series_uid
        self.stack = stack

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Return True for folders, DICOM files (by their preamble) and NIfTI/NRRD/MHA files.

        Parameters
        ----------
        filename
            A path or a sequence of paths; every one must qualify.

        Returns
        -------
        bool
            Whether this reader can read the input.
        """
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return bool(names) and all(_looks_readable(Path(n)) for n in names)

    def _read_one(self, source: PathLike | Sequence[PathLike]) -> MetaTensor:
        return read_series(
            source, options=self.options, series_uid=self.series_uid, stack=self.stack
        )

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> Any:
        """Read the input into one MetaTensor or a list of them (one per image).

        Parameters
        ----------
        data
            A folder, a DICOM file, a NIfTI/NRRD/MHA file, or a sequence (see class notes).
        kwargs
            Ignored (accepted for the ``ImageReader`` interface).

        Returns
        -------
        MetaTensor or list of MetaTensor
            ``(1, I, J, K)`` volumes as :func:`read_series` returns them.
        """
        # MONAI's LoadImage catches any exception raised by ``read`` and silently tries
        # its other readers (PydicomReader, which orders slices by InstanceNumber and
        # would happily read a series we refused for missing slices). Our errors are
        # therefore handed over to ``get_data``, which LoadImage calls unguarded, so
        # the user sees the InvalidSeriesError itself.
        try:
            if isinstance(data, (str, os.PathLike)):
                return self._read_one(data)
            items = [Path(p) for p in data]
            if len(items) == 1:
                return self._read_one(items[0])
            if items and all(p.is_dir() or is_volume_file(p) for p in items):
                return [self._read_one(p) for p in items]
            return self._read_one(items)
        except MonaiTumorError as exc:
            return _Failed(exc)

    def get_data(self, img: Any) -> tuple[npt.NDArray[Any], dict[str, Any]]:
        """Return the voxels ``(C, I, J, K)`` and the metadata MONAI expects.

        Parameters
        ----------
        img
            What :meth:`read` returned.

        Returns
        -------
        tuple
            The array (channel first, ``original_channel_dim`` 0) and a dict with
            ``affine``/``original_affine`` (RAS, numpy float64), ``spatial_shape``,
            ``space`` and every DICOM key :func:`read_series` sets.
        """
        if isinstance(img, _Failed):
            raise img.error
        images: list[MetaTensor] = img if isinstance(img, list) else [img]
        arrays: list[npt.NDArray[Any]] = []
        meta: dict[str, Any] = {}
        for i, image in enumerate(images):
            header = {k: v for k, v in image.meta.items() if k != "affine"}
            affine = np.asarray(image.affine.numpy(), dtype=np.float64)
            header["affine"] = affine.copy()
            header["original_affine"] = affine.copy()
            header["spatial_shape"] = np.asarray(image.shape[1:])
            header["original_channel_dim"] = 0
            arrays.append(image.numpy())
            if i == 0:
                meta = header
            elif not np.allclose(header["affine"], meta["affine"], atol=1e-4) or (
                arrays[-1].shape != arrays[0].shape
            ):
                raise ValueError(
                    "images stacked as channels must share their grid; "
                    f"{header.get('filename_or_obj')} differs from {meta.get('filename_or_obj')}"
                )
        if len(arrays) == 1:
            return arrays[0], meta
        # channel-first arrays (original_channel_dim 0): channels concatenate on axis 0
        return np.concatenate(arrays, axis=0), meta
