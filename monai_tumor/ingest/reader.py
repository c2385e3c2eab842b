"""Geometry-exact reading of a DICOM series (or a NIfTI/NRRD/MHA file) into a MetaTensor.

What this module guarantees, whatever the scanner wrote:

* slices are ordered along the slice normal (never InstanceNumber or file names),
  and the slice spacing comes from the positions, never from SliceThickness;
* every frame gets its own RescaleSlope/RescaleIntercept;
* duplicate positions, missing slices, non-uniform spacing, gantry tilt, mixed
  orientations/sizes and several series in one folder are detected and either
  refused with an :class:`~monai_tumor.errors.InvalidSeriesError` (default) or
  handled in the way the caller asked for through :class:`ReadOptions`;
* the output is ``(1, I, J, K)`` (channel first, voxel axes ``[column, row,
  slice]``) with a RAS affine, the MONAI/nibabel convention.

All geometry is computed by :mod:`monai_tumor.geometry`.

The array is filled slice by slice as ``(K, rows, columns)`` in C order and
exposed as its ``(columns, rows, K)`` transpose, i.e. in Fortran order like a
nibabel image: no copy is needed to present DICOM frames in voxel order.
Call ``.contiguous()`` if you need C-contiguous memory.
"""

from __future__ import annotations

import gc
import io
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    SegmentationStorage,
)

from monai_tumor import geometry
from monai_tumor.errors import (
    IngestError,
    InvalidSeriesError,
    MonaiTumorError,
    UnsupportedInputError,
)
from monai_tumor.ingest.enums import SkipReason
from monai_tumor.ingest.headers import pixel_data_truncation, pixel_data_truncation_of
from monai_tumor.ingest.mosaic import is_mosaic, mosaic_frames, untile
from monai_tumor.ingest.multiframe import FrameInfo, frames_of
from monai_tumor.ingest.native_header import (
    COLUMNS,
    ROWS,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    number_of_frames,
    raw_ascii,
    raw_us,
    scan_native,
    scan_native_header,
)
from monai_tumor.ingest.pixels import (
    check_declared_size,
    decode_frames,
    native_layout_ok,
    read_native_frames,
    stored_dtype,
)
from monai_tumor.ingest.records import LABEL_MAP_SEGMENTATION_STORAGE, SkippedFile

__all__ = [
    "VOLUME_SUFFIXES",
    "DuplicateSliceWarning",
    "NonUniformPolicy",
    "OutputDtype",
    "ReadOptions",
    "TiltPolicy",
    "is_nifti",
    "is_volume_file",
    "read_series",
    "read_stacks",
]

#: File suffixes read as ready-made volumes (not DICOM).
VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Objects with pixel data that are not images of the patient (segmentations).
_NOT_VOLUMES: dict[str, str] = {
    SegmentationStorage: "Segmentation Storage (DICOM SEG)",
    LABEL_MAP_SEGMENTATION_STORAGE: "Label Map Segmentation Storage (DICOM SEG)",
}


class NonUniformPolicy(str, Enum):
    """What to do with missing slices or uneven slice spacing."""

    ERROR = "error"
    RESAMPLE = "resample"


class TiltPolicy(str, Enum):
    """What to do with a gantry-tilted (sheared) stack."""

    ERROR = "error"
    RESAMPLE = "resample"
    SHEAR = "shear"


class OutputDtype(str, Enum):
    """Data type of the returned voxels."""

    FLOAT32 = "float32"
    STORED = "stored"


class DuplicateSliceWarning(UserWarning):
    """Two files had the same position and identical pixels; one was dropped."""


@dataclass(frozen=True)
class ReadOptions:
    """How to read a series.

    Attributes
    ----------
    nonuniform
        ``"error"`` (default): missing slices or uneven spacing raise
        InvalidSeriesError. ``"resample"``: linearly interpolate onto a uniform
        grid along the normal from the first to the last slice, with the spacing of
        the best-fitting grid as nominal spacing (slices that fall on an existing slice copy it
        exactly). A truncated file that is the only copy of its instance (its Pixel
        Data runs past the end of the file, judged from the header as the scan does)
        is a missing slice: ``"error"`` refuses the series naming the file,
        ``"resample"`` leaves the file out (listed in ``meta["skipped_files"]``) and
        interpolates across the hole; a truncated first or last slice shortens the
        stack instead. A truncated copy of an instance also present intact is left
        out under either policy.
    tilt
        ``"error"`` (default): a gantry-tilted stack raises InvalidSeriesError.
        ``"resample"``: shift each slice within its plane (linear interpolation)
        onto the straight grid through the first slice; the affine is
        orthogonal. ``"shear"``: keep the voxels and return the exact sheared
        affine (slice axis along the line through the slice positions).
    dtype
        ``"float32"`` (default): stored values times slope plus intercept.
        ``"stored"``: the stored integer type, if every frame's rescale is the
        identity (slope 1, intercept 0); otherwise float32 anyway. Resampled
        volumes are always float32.
    tolerance_mm
        Positions closer than this along the normal are duplicates.
    relative_tolerance, max_residual_mm
        A stack is uniform when every slice lies within
        ``max(tolerance_mm, min(relative_tolerance * spacing, max_residual_mm))``
        of the best-fitting uniform grid
        (:func:`monai_tumor.geometry.sort_along_normal`): positions stored
        rounded are accepted, a missing slice never is. The largest distance is
        recorded as ``meta["slice_residual_mm"]``.
    tilt_tolerance_mm
        Largest in-plane displacement (mm) of any slice from the straight stack
        through the first slice that still counts as untilted (rounding of
        stored positions).
    mosaic
        Split Siemens mosaic images into their slices (geometry from the CSA
        header through nibabel). False returns the tiled frame as one slice.
    workers
        Threads used to parse and decode files; ``None`` (default) reads in the
        calling thread. Parsing holds the GIL and copying native pixels is
        memory-bound, so threads were slower on every series measured
        (``benchmarks/bench_read.py``, 2 cores: lung1 0.09 s with one thread,
        0.14 s with two; the JPEG 2000 CT 0.34 s against 0.37 s). More
        threads can pay off for files on slow network storage.
    """

    nonuniform: NonUniformPolicy | str = NonUniformPolicy.ERROR
    tilt: TiltPolicy | str = TiltPolicy.ERROR
    dtype: OutputDtype | str = OutputDtype.FLOAT32
    tolerance_mm: float = 0.01
    relative_tolerance: float = 0.1
    max_residual_mm: float = 0.5
    tilt_tolerance_mm: float = 0.05
    mosaic: bool = True
    workers: int | None = None

    def __post_init__(self) -> None:
        # Accept the plain strings the docs show (ReadOptions(tilt="shear")).
        object.__setattr__(self, "nonuniform", NonUniformPolicy(self.nonuniform))
        object.__setattr__(self, "tilt", TiltPolicy(self.tilt))
        object.__setattr__(self, "dtype", OutputDtype(self.dtype))


@dataclass
class _Instance:
    path: Path
    ds: Dataset
    transfer_syntax: str
    frames: list[FrameInfo]
    geometry_error: InvalidSeriesError | None = None
    mosaic_tiles: int = 0
    #: (offset, length) of PixelData when only the header was read (native files).
    pixel_ref: tuple[int, int] | None = None
    #: What the file lacks when its Pixel Data runs past its end ("" if complete).
    truncated: str = ""
    decoded: npt.NDArray[np.generic] | None = field(default=None, repr=False)

    @property
    def series_uid(self) -> str:
        return raw_ascii(self.ds, SERIES_INSTANCE_UID)

    def pixels(self) -> npt.NDArray[np.generic]:
        if self.truncated:  # never decoded: _drop_truncated removes or refuses it first
            raise IngestError(
                f"the file is truncated ({self.truncated}); re-export or re-transfer it",
                path=self.path,
            )
        if self.decoded is None:
            try:
                if self.pixel_ref is not None:
                    decoded = read_native_frames(self.ds, self.path, *self.pixel_ref)
                else:
                    decoded = decode_frames(self.ds, self.path, self.transfer_syntax)
                if self.mosaic_tiles:
                    decoded = untile(decoded, self.mosaic_tiles, len(self.frames))
            except (ValueError, TypeError, IndexError) as exc:
                # pixels that do not fit the declared frame size (a reshape fails)
                raise IngestError(
                    f"the pixel data do not match the header ({exc}); the header or the "
                    "pixel data is corrupt: re-export or re-transfer the file",
                    path=self.path,
                ) from exc
            self.decoded = decoded
        return self.decoded

    def release(self) -> None:
        """Drop the pixel bytes once copied into the volume (halves peak memory)."""
        self.decoded = None
        if "PixelData" in self.ds:
            del self.ds.PixelData


@dataclass(frozen=True)
class _Slice:
    instance: _Instance
    frame: FrameInfo
    index: int  # into instance.pixels(): the frame, or the slice of a mosaic

    def pixels(self) -> npt.NDArray[np.generic]:
        return self.instance.pixels()[self.index]

    def label(self) -> str:
        if self.instance.mosaic_tiles:
            return f"{self.frame.path} (mosaic slice {self.index + 1})"
        if int(getattr(self.instance.ds, "NumberOfFrames", 1) or 1) > 1:
            return f"{self.frame.path} (frame {self.frame.frame_number})"
        return str(self.frame.path)


# --------------------------------------------------------------------------- input


def is_nifti(path: str | os.PathLike[str]) -> bool:
    """Return whether a path names a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return Path(path).name.lower().endswith((".nii", ".nii.gz"))


def is_volume_file(path: str | os.PathLike[str]) -> bool:
    """Return whether a path names a NIfTI/NRRD/MHA volume (by its suffix)."""
    name = str(path).lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _collect(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if root.is_dir():
            files = sorted(
                p
                for p in root.rglob("*")
                if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
            )
            if not files:
                raise IngestError("the folder holds no files; expected DICOM files", path=root)
            return files
        if root.is_file():
            return [root]
        raise IngestError("no such file or folder", path=root)
    paths = [Path(p) for p in source]
    if not paths:
        raise IngestError("an empty list of files was given; expected DICOM files")
    for p in paths:
        if not p.is_file():
            raise IngestError("no such file", path=p)
    return paths


#: Bytes read first from each file; enough for the header of nearly every image.
_HEAD_BYTES = 65536


def _read_header_only(path: Path) -> tuple[Dataset, tuple[int, int], str] | None:
    """Header of a native image whose pixels can be read later straight from disk.

    Returns the header, the (offset, length) of its Pixel Data and, when that
    value runs past the end of the file, what was declared against what is
    there (the file is then never decoded); ``None`` when the file needs the
    full parse.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
            size = os.fstat(fh.fileno()).st_size
            scanned = scan_native_header(head)
            if scanned is None:
                return None
            ds, offset, length = scanned
            truncated = pixel_data_truncation(fh, size, offset, length)
    except OSError as exc:
        raise IngestError(f"cannot read the file: {exc}", path=path) from exc
    if truncated:
        return ds, (offset, length), truncated
    if not native_layout_ok(ds, str(ds.file_meta.get("TransferSyntaxUID", ""))):
        return None  # unusual: the full parse diagnoses or decodes it
    return ds, (offset, length), ""


def _truncated_header(path: Path) -> tuple[Dataset, str] | None:
    """Header of an image whose (encapsulated) Pixel Data runs past the end of the file.

    Asked only when the full parse failed or found no Pixel Data: the header
    scan's judgement (:func:`~monai_tumor.ingest.headers.pixel_data_truncation_of`)
    says whether the file is truncated; if so its header (geometry, UIDs) is
    still read, so the slice can be placed and treated as missing.
    """
    truncated = pixel_data_truncation_of(path)
    if not truncated:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the missing delimiter
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # pydicom raises many types on corrupt input; the caller reports it
        return None
    return ds, truncated


def _read_whole(path: Path, *, lenient: bool) -> Dataset | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read the file: {exc}", path=path) from exc
    try:
        ds = scan_native(data)
        if ds is None:
            ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        if lenient:
            return None
        raise IngestError(
            f"not a DICOM file ({exc}); expected a DICOM Part 10 file", path=path
        ) from exc
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise IngestError(
            f"the DICOM file is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "re-export or re-transfer it",
            path=path,
        ) from exc
    return ds


def _parse(path: Path, *, lenient: bool, mosaic: bool = True) -> _Instance | None:
    """Read one file; None if ``lenient`` and it is not a DICOM image.

    Native little-endian images are read header first (the pixels are read
    from disk after sorting, straight into the volume); everything else is
    read whole and parsed by pydicom. Whatever a corrupt header makes the
    parsing raise becomes an :class:`IngestError` naming the file.
    """
    try:
        instance = _parse_one(path, lenient=lenient, mosaic=mosaic)
        if instance is not None:
            # Convert the text elements read later (grouping, volume meta) now, so
            # that a corrupt one (e.g. an unknown VR after a flipped byte) is this
            # file's error, not an anonymous one while the volume is built.
            for keyword in _META_KEYWORDS:
                instance.ds.get(keyword)
        return instance
    except MonaiTumorError:
        raise
    except (
        ValueError,
        TypeError,
        LookupError,
        OverflowError,
        NotImplementedError,
        struct.error,
    ) as exc:
        raise IngestError(
            f"the DICOM header is corrupt ({type(exc).__name__}: {exc}); re-export or "
            "re-transfer the file",
            path=path,
        ) from exc


#: Elements of every instance read as text after parsing (series grouping, volume meta).
_META_KEYWORDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "SeriesDescription",
    "SOPClassUID",
)


def _parse_one(path: Path, *, lenient: bool, mosaic: bool) -> _Instance | None:
    pixel_ref: tuple[int, int] | None = None
    truncated = ""
    header = _read_header_only(path)
    if header is not None:
        ds, pixel_ref, truncated = header
    else:
        try:
            whole = _read_whole(path, lenient=lenient)
        except IngestError:
            cut = _truncated_header(path)
            if cut is None:
                raise
            whole, truncated = cut
        if whole is None:
            return None
        if "PixelData" not in whole and not truncated:
            # pydicom drops an encapsulated Pixel Data that ends early
            whole, truncated = _truncated_header(path) or (whole, "")
        ds = whole
    meta = getattr(ds, "file_meta", None)
    if (
        meta is not None
        and str(meta.get("MediaStorageSOPClassUID", "")) == MediaStorageDirectoryStorage
    ):
        return None
    if (pixel_ref is None and not truncated and "PixelData" not in ds) or "Rows" not in ds:
        if lenient:
            return None  # RTSTRUCT, SR, presentation states... live beside images
        raise UnsupportedInputError(
            f"SOP class {ds.get('SOPClassUID', 'unknown')} has no pixel data; "
            "expected an image (CT, MR, PET ...)",
            path=path,
        )
    sop_class = raw_ascii(ds, SOP_CLASS_UID)
    if sop_class in _NOT_VOLUMES:
        if lenient:
            return None  # a SEG stored beside its source images
        raise UnsupportedInputError(
            f"{_NOT_VOLUMES[sop_class]} is a segmentation, not an image series; "
            "read it with highdicom (monai_tumor's SEG import) instead",
            path=path,
        )
    tsyntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not tsyntax:
        tsyntax = ImplicitVRLittleEndian if ds.is_implicit_VR else ExplicitVRLittleEndian
    check_declared_size(ds, path)  # before anything is allocated for its frames
    if pixel_ref is not None and not truncated:
        expected = (
            raw_us(ds, ROWS, 0)
            * raw_us(ds, COLUMNS, 0)
            * number_of_frames(ds)
            * stored_dtype(ds, path=path).itemsize
        )
        if pixel_ref[1] < expected:
            raise IngestError(
                f"PixelData holds {pixel_ref[1]} bytes, expected {expected} for the declared "
                "frames; the file is truncated or its header is corrupt: re-export or "
                "re-transfer it",
                path=path,
            )
    try:
        frames = frames_of(ds, path)
        tiles = 0
        if mosaic and len(frames) == 1 and is_mosaic(ds):
            frames, tiles = mosaic_frames(ds, path, frames[0])
    except InvalidSeriesError as exc:
        # Raised only if this instance's series is the one being read: a screenshot
        # without geometry must not stop the CT beside it from loading.
        return _Instance(path=path, ds=ds, transfer_syntax=tsyntax, frames=[], geometry_error=exc)
    return _Instance(
        path=path,
        ds=ds,
        transfer_syntax=tsyntax,
        frames=frames,
        mosaic_tiles=tiles,
        pixel_ref=pixel_ref,
        truncated=truncated,
    )


def _workers(options: ReadOptions, n: int) -> int:
    return max(1, min(n, options.workers or 1))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector for the length of one read.

    Reading a series creates tens of thousands of small objects (datasets and
    their elements, none in reference cycles) that live until the volume is
    built, which trips the collector; once torch and MONAI are imported a full
    collection walks millions of objects. Measured on lung1 (134 files, torch
    imported): 0.086-0.089 s per read, but 0.30 s for one read in five, the
    extra 0.2 s in a collection during parsing. Used around a whole read, so
    the objects are freed (by reference counting) before the collector is back
    and nothing is left for it to do. It is re-enabled on exit only if it was
    enabled on entry, so nested or concurrent reads never leave it off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_all(paths: list[Path], *, lenient: bool, options: ReadOptions) -> list[_Instance]:
    workers = _workers(options, len(paths))
    if workers == 1:
        results = [_parse(p, lenient=lenient, mosaic=options.mosaic) for p in paths]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(
                pool.map(lambda p: _parse(p, lenient=lenient, mosaic=options.mosaic), paths)
            )
    instances = [r for r in results if r is not None]
    if not instances:
        raise IngestError(
            f"none of the {len(paths)} file(s) is a DICOM image; expected CT/MR/PET DICOM files",
            path=paths[0].parent if len(paths) > 1 else paths[0],
        )
    return instances


def _select_series(
    instances: list[_Instance], series_uid: str | None, where: str
) -> list[_Instance]:
    by_series: dict[str, list[_Instance]] = {}
    for inst in instances:
        by_series.setdefault(inst.series_uid, []).append(inst)
    if series_uid is not None:
        if series_uid not in by_series:
            raise InvalidSeriesError(
                f"series {series_uid} is not in {where}; found: {', '.join(sorted(by_series))}"
            )
        return by_series[series_uid]
    if len(by_series) > 1:
        lines = [
            f"  {uid}: {len(items)} file(s), {items[0].ds.get('Modality', '?')}, "
            f"'{items[0].ds.get('SeriesDescription', '')}'"
            for uid, items in sorted(by_series.items())
        ]
        raise InvalidSeriesError(
            f"{where} holds {len(by_series)} series; expected one. Pass series_uid= to choose:\n"
            + "\n".join(lines)
        )
    return instances


def _split_stacks(instances: list[_Instance]) -> list[list[_Slice]]:
    """Group frames by orientation, frame size and pixel spacing (order of first appearance)."""
    stacks: list[tuple[tuple[Any, ...], list[_Slice]]] = []
    for inst in instances:
        if inst.geometry_error is not None:
            raise inst.geometry_error
        for index, frame in enumerate(inst.frames):
            iop = np.asarray(frame.iop)
            key_size = (frame.rows, frame.columns)
            placed = False
            for key, members in stacks:
                k_iop, k_size, k_ps = key
                first = members[0].frame
                if (
                    first.iop == frame.iop
                    and first.pixel_spacing == frame.pixel_spacing
                    and (k_size == key_size)
                ):
                    members.append(_Slice(inst, frame, index))
                    placed = True
                    break
                if (
                    k_size == key_size
                    and np.allclose(k_iop, iop, atol=1e-4)
                    and np.allclose(k_ps, frame.pixel_spacing, rtol=1e-4, atol=1e-5)
                ):
                    members.append(_Slice(inst, frame, index))
                    placed = True
                    break
            if not placed:
                stacks.append(((iop, key_size, frame.pixel_spacing), [_Slice(inst, frame, index)]))
    stacks.sort(key=lambda item: -len(item[1]))
    return [members for _, members in stacks]


def _describe_stack(index: int, members: list[_Slice]) -> str:
    f = members[0].frame
    orient = geometry.orientation_of(f.iop).value
    return (
        f"  stack {index}: {len(members)} slice(s), {f.columns}x{f.rows} {orient}, "
        f"pixel spacing {f.pixel_spacing[0]:g}x{f.pixel_spacing[1]:g} mm, "
        f"first file {members[0].frame.path.name}"
    )


# ----------------------------------------------------------------------- geometry


def _drop_truncated(
    slices: list[_Slice], options: ReadOptions, *, filename: str
) -> tuple[list[_Slice], list[SkippedFile]]:
    """Take out the slices of truncated files; say which files and why.

    A truncated copy of an instance that is also present intact (same
    SOPInstanceUID and frame, or, as real exports with empty UIDs need, an
    intact slice at the same position) is dropped whatever the policy (as the
    scan does). A truncated file that is the only
    copy of its instance is a missing slice: refused under
    ``nonuniform="error"`` (naming the file), left out under ``"resample"``,
    which then interpolates across the hole like any other missing slice.
    """
    cut = [s for s in slices if s.instance.truncated]
    if not cut:
        return slices, []
    kept = [s for s in slices if not s.instance.truncated]
    by_uid = {(s.frame.sop_instance_uid, s.frame.frame_number): s for s in kept}
    positions = np.array([s.frame.ipp for s in kept]).reshape(-1, 3)
    skipped: dict[Path, SkippedFile] = {}
    missing: list[_Slice] = []
    for sl in cut:
        inst = sl.instance
        twin = by_uid.get((sl.frame.sop_instance_uid, sl.frame.frame_number))
        if twin is None or not sl.frame.sop_instance_uid:
            near = np.flatnonzero(
                np.all(np.abs(positions - np.asarray(sl.frame.ipp)) <= options.tolerance_mm, axis=1)
            )
            twin = kept[int(near[0])] if near.size else None
        if twin is not None:
            detail = f"truncated copy of the instance in {twin.instance.path}: {inst.truncated}"
        else:
            missing.append(sl)
            where = ", ".join(f"{v:.2f}" for v in sl.frame.ipp)
            detail = (
                f"{inst.truncated}; the only copy of its instance, read as a missing slice "
                f"(ImagePositionPatient [{where}] mm)"
            )
        skipped.setdefault(
            inst.path,
            SkippedFile(inst.path, SkipReason.TRUNCATED, detail, inst.ds.get("SOPClassUID")),
        )
    if missing and options.nonuniform is NonUniformPolicy.ERROR:
        first = missing[0].instance
        others = len({s.instance.path for s in missing}) - 1
        raise IngestError(
            f"the file is truncated ({first.truncated}) and is the only copy of its instance"
            + (f" ({others} more such file(s))" if others else "")
            + ", so a slice of the series is missing; find an intact copy (re-export or "
            "re-transfer the file), or read with ReadOptions(nonuniform='resample') to "
            "interpolate across the missing slice",
            path=first.path,
        )
    if not kept:
        raise IngestError(
            f"every file of the stack is truncated ({len(skipped)} file(s)); "
            "re-export or re-transfer the series",
            path=filename,
        )
    return kept, list(skipped.values())


def _drop_duplicates(slices: list[_Slice], options: ReadOptions) -> list[_Slice]:
    positions = np.array([s.frame.ipp for s in slices])
    stack = geometry.sort_along_normal(
        positions,
        slices[0].frame.iop,
        tolerance_mm=options.tolerance_mm,
        relative_tolerance=options.relative_tolerance,
        max_residual_mm=options.max_residual_mm,
    )
    if not stack.duplicates:
        return slices
    drop: set[int] = set()
    conflicts: list[str] = []
    for a, b in stack.duplicates:
        sa, sb = slices[a], slices[b]
        same = (
            sa.frame.slope == sb.frame.slope
            and sa.frame.intercept == sb.frame.intercept
            and np.array_equal(sa.pixels(), sb.pixels())
        )
        if same:
            drop.add(b)
            warnings.warn(
                f"{sb.label()} has the same position and pixels as {sa.label()}; "
                "keeping one of them",
                DuplicateSliceWarning,
                stacklevel=4,
            )
        else:
            conflicts.append(f"  {sa.label()} and {sb.label()} at {list(sa.frame.ipp)}")
    if conflicts:
        raise InvalidSeriesError(
            "slices at the same position have different pixels (several acquisitions, echoes "
            "or time points mixed in one series?); expected one slice per position. "
            "Separate them before reading:\n" + "\n".join(conflicts)
        )
    return [s for i, s in enumerate(slices) if i not in drop]


def _rescale_into(raw: npt.NDArray[Any], frame: FrameInfo, out: npt.NDArray[Any]) -> None:
    """``out = raw * slope + intercept`` in float32.

    float32 arithmetic: exact for integer slope/intercept (|value| < 2**24), and
    for fractional slopes (PET) it reproduces the reference NIfTI conversions
    bit for bit (checked on the STS PET series), which float64-then-round does not.
    """
    if frame.slope == 1.0:  # one pass instead of two; same result (x * 1 is exact)
        np.add(raw, np.float32(frame.intercept), out=out, casting="unsafe")
    else:
        np.multiply(raw, np.float32(frame.slope), out=out, casting="unsafe")
        if frame.intercept != 0.0:
            out += np.float32(frame.intercept)


def _fill(ordered: list[_Slice], out: npt.NDArray[Any], options: ReadOptions) -> None:
    """Decode ``ordered`` slices into ``out[k]`` (shape (K, rows, cols)), rescaling."""
    integer_out = np.issubdtype(out.dtype, np.integer)
    uses: dict[int, int] = {}
    for sl in ordered:
        uses[id(sl.instance)] = uses.get(id(sl.instance), 0) + 1

    def one(k: int) -> None:
        sl = ordered[k]
        raw = sl.pixels()
        if integer_out:
            out[k] = raw
        else:
            _rescale_into(raw, sl.frame, out[k])
        if uses[id(sl.instance)] == 1 and len(sl.instance.frames) == 1:
            sl.instance.release()

    workers = _workers(options, len(ordered))
    if workers == 1:
        for k in range(len(ordered)):
            one(k)
    else:
        # Multi-frame instances are decoded once, up front, before their frames are
        # copied in parallel; single-frame ones are read inside the copy itself so
        # that at most one frame per thread is held besides the volume.
        shared = {id(s.instance): s.instance for s in ordered if uses[id(s.instance)] > 1}
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: i.pixels(), shared.values()))
            list(pool.map(one, range(len(ordered))))


def _resample_along_normal(
    vol: npt.NDArray[np.float32], dist: npt.NDArray[np.float64], spacing: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Linear interpolation of (K, rows, cols) slices at ``dist`` onto a uniform grid.

    Returns the new volume, the new distances, and for each new slice the index
    of the source slice it coincides with (-1 if interpolated).
    """
    length = float(dist[-1] - dist[0])
    n_new = round(length / spacing) + 1
    step = length / (n_new - 1)
    targets = dist[0] + step * np.arange(n_new)
    out = np.empty((n_new, *vol.shape[1:]), dtype=np.float32)
    source = np.full(n_new, -1, dtype=np.intp)
    snap = 1e-3 * step
    for m, t in enumerate(targets):
        hi = int(np.searchsorted(dist, t))
        hi = min(max(hi, 1), len(dist) - 1)
        lo = hi - 1
        if abs(t - dist[lo]) <= snap:
            out[m], source[m] = vol[lo], lo
        elif abs(t - dist[hi]) <= snap:
            out[m], source[m] = vol[hi], hi
        else:
            w = (t - dist[lo]) / (dist[hi] - dist[lo])
            out[m] = (vol[lo].astype(np.float64) * (1 - w) + vol[hi] * w).astype(np.float32)
    return out, targets, source


def _untilt(
    vol: npt.NDArray[np.float32],
    offsets: npt.NDArray[np.float64],
    pixel_spacing: tuple[float, float],
) -> npt.NDArray[np.float32]:
    """Shift each (rows, cols) slice by its in-plane offset onto the straight grid."""
    from scipy import ndimage  # local: only needed for tilted input

    out = np.empty_like(vol)
    fill = float(vol.min())
    for k in range(vol.shape[0]):
        shift = (offsets[k, 1] / pixel_spacing[0], offsets[k, 0] / pixel_spacing[1])
        ndimage.shift(vol[k], shift, output=out[k], order=1, mode="constant", cval=fill)
    return out


def _build(slices: list[_Slice], options: ReadOptions, *, filename: str) -> MetaTensor:
    slices, skipped = _drop_truncated(slices, options, filename=filename)
    slices = _drop_duplicates(slices, options)
    first = slices[0].frame
    iop = first.iop
    positions = np.array([s.frame.ipp for s in slices])
    stack = geometry.sort_along_normal(
        positions,
        iop,
        tolerance_mm=options.tolerance_mm,
        relative_tolerance=options.relative_tolerance,
        max_residual_mm=options.max_residual_mm,
    )
    ordered = [slices[i] for i in stack.order]
    pos = positions[stack.order]
    n = len(ordered)
    ps = first.pixel_spacing

    tilt_deg = geometry.gantry_tilt_degrees(pos, iop) if n > 1 else 0.0
    offsets = geometry.in_plane_offsets(pos, iop)
    tilted = n > 1 and float(np.max(np.linalg.norm(offsets, axis=1))) > options.tilt_tolerance_mm
    if tilted and options.tilt is TiltPolicy.ERROR:
        raise InvalidSeriesError(
            f"the slices are sheared: gantry tilt {tilt_deg:.3f} degrees (largest in-plane "
            f"offset {float(np.max(np.linalg.norm(offsets, axis=1))):.3f} mm between slice "
            "positions and the slice normal); expected a straight stack. Read with "
            "ReadOptions(tilt='resample') for an orthogonal grid or tilt='shear' to keep "
            "the exact sheared affine",
            path=filename,
        )
    if tilted and options.tilt is TiltPolicy.SHEAR:
        d = stack.distances - stack.distances[0]
        if d[-1] > 0:
            rate = offsets[-1] / d[-1]
            if float(np.max(np.abs(offsets - np.outer(d, rate)))) > options.tilt_tolerance_mm:
                raise InvalidSeriesError(
                    "the in-plane offsets of the slices do not grow linearly along the normal, "
                    "so no single sheared affine describes them; use tilt='resample'",
                    path=filename,
                )

    if not stack.uniform and options.nonuniform is NonUniformPolicy.ERROR:
        steps = ", ".join(f"{s:.3f}" for s in stack.steps[list(stack.gaps)][:10])
        detail = (
            f"{len(stack.gaps)} gap(s) of {steps} mm after sorted slice(s) "
            f"{', '.join(str(g) for g in stack.gaps[:10])}"
            if stack.gaps
            else f"a slice lies {stack.max_residual_mm:.3f} mm from the best-fitting uniform "
            f"grid (tolerance {stack.tolerance:.3f} mm; steps range "
            f"{stack.steps.min(initial=np.inf):.3f}..{stack.steps.max(initial=-np.inf):.3f} mm)"
        )
        raise InvalidSeriesError(
            f"non-uniform slice spacing: grid spacing {stack.spacing:.4f} mm, {detail}; "
            "slices are missing or unevenly spaced. Find the missing files, or read with "
            "ReadOptions(nonuniform='resample') to interpolate onto a uniform grid",
            path=filename,
        )

    identity = all(s.frame.slope == 1.0 and s.frame.intercept == 0.0 for s in ordered)
    want_stored = options.dtype is OutputDtype.STORED and identity
    resampling = (not stack.uniform) or (tilted and options.tilt is TiltPolicy.RESAMPLE)
    dtype: np.dtype[Any] = (
        stored_dtype(ordered[0].instance.ds)
        if want_stored and not resampling
        else np.dtype(np.float32)
    )
    data = np.empty((n, first.rows, first.columns), dtype=dtype)
    _fill(ordered, data, options)

    sop_uids = [s.frame.sop_instance_uid for s in ordered]
    frame_numbers = [s.frame.frame_number for s in ordered]
    dist = stack.distances
    if tilted and options.tilt is TiltPolicy.RESAMPLE:
        data = _untilt(data, offsets, ps)
    if not stack.uniform:
        data, dist, source = _resample_along_normal(data, dist, stack.spacing)
        sop_uids = [sop_uids[s] if s >= 0 else "" for s in source]
        frame_numbers = [frame_numbers[s] if s >= 0 else 0 for s in source]
        n = data.shape[0]

    origin = pos[0]
    if n > 1 and stack.uniform:
        # The best-fitting uniform grid, not the first and last stored positions:
        # with positions stored rounded it is the closer description of every slice.
        step: npt.NDArray[np.float64] | float = stack.spacing
        origin = pos[0] + stack.normal * (stack.origin - stack.distances[0])
        if tilted and options.tilt is TiltPolicy.SHEAR:
            step = (pos[-1] - pos[0]) / (n - 1)
            origin = pos[0]
    elif n > 1:
        step = float(dist[-1] - dist[0]) / (n - 1)
    else:
        step = first.slice_thickness or 1.0
    affine = geometry.affine_from_dicom(iop, origin, ps, step, ras=True)
    if not np.all(np.isfinite(affine)) or not np.all(geometry.spacing_from_affine(affine) > 0):
        raise InvalidSeriesError(
            f"the slices' geometry gives no valid grid (affine {np.round(affine, 4).tolist()}); "
            "expected finite positions and positive spacings",
            path=filename,
        )

    ds0 = ordered[0].instance.ds
    volume = data.transpose(2, 1, 0)  # (K, rows, cols) -> [column, row, slice]
    meta: dict[str, Any] = {
        "filename_or_obj": filename,
        "space": "RAS",
        "original_affine": affine.copy(),
        "spatial_shape": np.array(volume.shape),
        "original_channel_dim": 0,
        "spacing": geometry.spacing_from_affine(affine),
        "StudyInstanceUID": str(ds0.get("StudyInstanceUID", "")),
        "SeriesInstanceUID": str(ds0.get("SeriesInstanceUID", "")),
        "FrameOfReferenceUID": str(ds0.get("FrameOfReferenceUID", "")),
        "Modality": str(ds0.get("Modality", "")),
        "SeriesDescription": str(ds0.get("SeriesDescription", "")),
        "sop_class_uid": str(ds0.get("SOPClassUID", "")),
        "sop_instance_uids": sop_uids,
        "frame_numbers": frame_numbers,
        "gantry_tilt_degrees": tilt_deg,
        "slice_residual_mm": stack.max_residual_mm,
        "resampled": bool(resampling),
        "rescaled": not identity,
        "skipped_files": [record.to_dict() for record in skipped],
    }
    tensor = torch.from_numpy(volume[None])
    return MetaTensor(tensor, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


# ------------------------------------------------------------------------ volumes


def _read_volume_file(path: Path, options: ReadOptions) -> MetaTensor:
    """Read NIfTI (MONAI's NibabelReader) or NRRD/MHA/MHD (SimpleITK) into the same conventions."""
    if is_nifti(path):
        from monai.data import NibabelReader

        # MONAI's NibabelReader itself rather than LoadImage: LoadImage also builds
        # every other registered reader, and the nvImageCodec one warns on every
        # machine without that GPU codec.
        reader = NibabelReader()
        try:
            data, header = reader.get_data(reader.read(str(path)))
        except Exception as exc:
            raise IngestError(f"cannot read the NIfTI file: {exc}", path=path) from exc
        array = np.asarray(data)
        # channel first, as LoadImage(ensure_channel_first=True) does
        array = array[None] if array.ndim == 3 else np.moveaxis(array, -1, 0)
        affine = np.asarray(header["affine"], dtype=np.float64)
    else:
        import SimpleITK as sitk  # noqa: N813  (NRRD and MetaImage through ITK IO)

        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise IngestError(f"cannot read the volume: {exc}", path=path) from exc
        if image.GetDimension() != 3:
            raise UnsupportedInputError(
                f"the image has {image.GetDimension()} dimensions; expected a 3D volume",
                path=path,
            )
        arr = sitk.GetArrayViewFromImage(image)  # (k, j, i[, c])
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise UnsupportedInputError(
                "the image has several components per voxel; expected a scalar volume",
                path=path,
            )
        array = np.array(arr).transpose(2, 1, 0)[None]
        affine = geometry.affine_from_itk(
            image.GetDirection(), image.GetSpacing(), image.GetOrigin()
        )
    if array.ndim != 4 or array.shape[0] != 1:
        raise UnsupportedInputError(
            f"the image has shape {array.shape[1:]}; expected a scalar 3D volume", path=path
        )
    if options.dtype is OutputDtype.FLOAT32 or not np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32, copy=False)
    meta: dict[str, Any] = {
        "filename_or_obj": str(path),
        "space": "RAS",
        "original_affine": affine.copy(),
        "spatial_shape": np.array(array.shape[1:]),
        "original_channel_dim": 0,
        "spacing": geometry.spacing_from_affine(affine),
        "StudyInstanceUID": "",
        "SeriesInstanceUID": "",
        "FrameOfReferenceUID": "",
        "Modality": "",
        "SeriesDescription": "",
        "sop_class_uid": "",
        "sop_instance_uids": [],
        "frame_numbers": [],
        "gantry_tilt_degrees": 0.0,
        "slice_residual_mm": 0.0,
        "resampled": False,
        "rescaled": False,
        "skipped_files": [],
    }
    # NIfTI arrays come column-major; torch's strided copy makes them row-major in 0.035 s
    # for a 240 x 240 x 155 float32 volume, numpy's ascontiguousarray in 0.06 s, and at
    # times 0.5 s (measured on 2 CPUs; its fresh large buffers stall now and then).
    try:
        tensor = torch.from_numpy(array).contiguous()
    except (TypeError, ValueError):  # byte order or strides torch does not take
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    return MetaTensor(tensor, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


# ---------------------------------------------------------------------- public API


Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _stacks_of(
    source: Source, options: ReadOptions, series_uid: str | None
) -> tuple[list[list[_Slice]], str]:
    paths = _collect(source)
    lenient = isinstance(source, (str, os.PathLike)) and Path(source).is_dir()
    where = str(source) if isinstance(source, (str, os.PathLike)) else f"the {len(paths)} files"
    instances = _parse_all(paths, lenient=lenient, options=options)
    chosen = _select_series(instances, series_uid, where)
    if isinstance(source, (str, os.PathLike)):
        filename = str(source)
    else:  # one file: name it; several: their folder
        filename = str(paths[0]) if len(paths) == 1 else str(paths[0].parent)
    return _split_stacks(chosen), filename


def read_stacks(
    source: Source,
    *,
    options: ReadOptions | None = None,
    series_uid: str | None = None,
) -> list[MetaTensor]:
    """Read every stack of a series: one volume per orientation/frame size/pixel spacing.

    Parameters
    ----------
    source
        A folder of DICOM files (searched recursively; non-DICOM files and
        non-image objects such as RTSTRUCT are skipped), a sequence of DICOM
        file paths (each must be a DICOM image), or one NIfTI/NRRD/MHA file.
    options
        Reading policies, see :class:`ReadOptions`.
    series_uid
        SeriesInstanceUID to read when the input holds several series.

    Returns
    -------
    list of monai.data.MetaTensor
        One ``(1, I, J, K)`` volume per stack (see :func:`read_series`), largest
        stack first (ties in order of first appearance).

    Raises
    ------
    IngestError
        A file cannot be read or decoded (the message names it).
    InvalidSeriesError
        Several series without ``series_uid``, or invalid geometry in a stack.
    """
    opts = options or ReadOptions()
    if isinstance(source, (str, os.PathLike)) and is_volume_file(source):
        return [_read_volume_file(Path(source), opts)]
    with _gc_paused():
        return _read_stacks(source, opts, series_uid)


def _read_stacks(source: Source, opts: ReadOptions, series_uid: str | None) -> list[MetaTensor]:
    stacks, filename = _stacks_of(source, opts, series_uid)
    return [_build(members, opts, filename=filename) for members in stacks]


def read_series(
    source: Source,
    *,
    options: ReadOptions | None = None,
    series_uid: str | None = None,
    stack: int | None = None,
) -> MetaTensor:
    """Read one series as a geometry-exact volume.

    Parameters
    ----------
    source
        A folder of DICOM files of one series (searched recursively; non-DICOM
        files and non-image objects are skipped), a sequence of DICOM file
        paths, or a NIfTI/NRRD/MHA file.
    options
        Reading policies, see :class:`ReadOptions`.
    series_uid
        SeriesInstanceUID to read when the input holds several series.
    stack
        Index (as listed in the error, largest first) of the stack to read when
        the series mixes orientations, frame sizes or pixel spacings.

    Returns
    -------
    monai.data.MetaTensor
        Shape ``(1, I, J, K)``: channel first, voxel axes ``[column, row,
        slice]``, slices ascending along the slice normal ``row x column``.
        float32 after each frame's RescaleSlope/Intercept (or the stored
        integer type, see ``ReadOptions.dtype``). ``.affine`` is the RAS
        voxel-to-world affine (torch float64, mm). ``.meta`` holds
        ``filename_or_obj``, ``space`` ("RAS"), ``original_affine``,
        ``spatial_shape``, ``spacing`` (mm along I, J, K), the study/series/
        frame-of-reference UIDs, ``Modality``, ``SeriesDescription``,
        ``sop_class_uid``, ``sop_instance_uids`` and ``frame_numbers`` (one per
        slice k; "" and 0 for slices created by resampling),
        ``gantry_tilt_degrees``, ``slice_residual_mm`` (largest distance of a
        source slice from the uniform grid), ``resampled``, ``rescaled`` and
        ``skipped_files`` (files left out, as
        :meth:`~monai_tumor.ingest.records.SkippedFile.to_dict`: truncated copies,
        and under ``nonuniform="resample"`` truncated files read as missing
        slices). For NIfTI/NRRD/MHA input the DICOM keys are empty.

    Raises
    ------
    IngestError
        A file cannot be read or decoded, or (under ``nonuniform="error"``) a
        truncated file is the only copy of its instance (the message names it).
    InvalidSeriesError
        Several series (without ``series_uid``), several stacks (without
        ``stack``), duplicate positions with different pixels, missing slices
        or uneven spacing (unless resampling), gantry tilt (unless allowed), or
        a frame without geometry.

    Examples
    --------
    A chest CT series from the shared real data (``$MONAI_TUMOR_DATA``):

    >>> from monai_tumor.config import data_root
    >>> from monai_tumor.ingest import read_series
    >>> ct = read_series(data_root() / "lung1" / "LUNG1-001" / "image")
    >>> tuple(ct.shape), ct.meta["Modality"], len(ct.meta["sop_instance_uids"])
    ((1, 512, 512, 134), 'CT', 134)
    """
    opts = options or ReadOptions()
    if isinstance(source, (str, os.PathLike)) and is_volume_file(source):
        return _read_volume_file(Path(source), opts)
    with _gc_paused():
        return _read_one_stack(source, opts, series_uid, stack)


def _read_one_stack(
    source: Source, opts: ReadOptions, series_uid: str | None, stack: int | None
) -> MetaTensor:
    stacks, filename = _stacks_of(source, opts, series_uid)
    if stack is None:
        if len(stacks) > 1:
            raise InvalidSeriesError(
                f"the series holds {len(stacks)} stacks of different orientation, frame size "
                "or pixel spacing; expected one. Pass stack= to choose one, or use "
                "read_stacks() for all:\n"
                + "\n".join(_describe_stack(i, m) for i, m in enumerate(stacks)),
                path=filename,
            )
        stack = 0
    if not 0 <= stack < len(stacks):
        raise InvalidSeriesError(
            f"stack={stack} requested but the series has {len(stacks)} stack(s)", path=filename
        )
    return _build(stacks[stack], opts, filename=filename)
