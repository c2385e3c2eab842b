"""Write a label map as a DICOM Segmentation (SEG) that references its source series.

highdicom builds the object (``highdicom.seg.Segmentation``, BINARY type for
the widest viewer support); this module fixes the conventions and, above all,
puts every frame on the right source slice:

* slice ``k`` of the mask is the source instance whose SOPInstanceUID is
  ``mask.meta["sop_instance_uids"][k]`` (frame ``mask.meta["frame_numbers"][k]``
  of it for a multi-frame source), as recorded by
  :func:`monai_tumor.ingest.reader.read_series`; the order of the datasets
  passed in does not matter;
* the ``[column, row, slice]`` voxel array is transposed to highdicom's
  ``(frames, rows, columns)`` in the order of the ``source_images`` list given
  to highdicom, which then copies each source image's plane position into the
  frame and references it (spatial locations preserved);
* before writing, every used source slice is checked against the mask's affine
  (position, orientation, rows/columns, pixel spacing). A mask that is not on
  the source grid (resampled, untilted, another series) is refused with an
  :class:`~monai_tumor.errors.ExportError` rather than written shifted.

Segments are described with coded concepts (SNOMED CT from
``pydicom.sr.codedict.codes``), a display colour (RGB converted to CIELab by
``highdicom.color.CIELabColor.from_rgb``) and the algorithm's identification.
The SEG carries the Patient and Study modules of its source (DICOM requires it;
highdicom copies them); nothing here logs patient identifiers.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import torch
from monai.data import MetaTensor
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_tumor.errors import ExportError, UnsupportedInputError
from monai_tumor.export.atomic import atomic_path
from monai_tumor.geometry import (
    ras_to_lps,
    sort_along_normal,
    spacing_from_affine,
    voxel_to_patient,
)

__all__ = [
    "AlgorithmInfo",
    "SegExportConfig",
    "SegmentAlgorithmType",
    "SegmentSpec",
    "read_back_seg",
    "write_dicom_seg",
]

_log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

# Type 2 attributes of the Patient and General Study modules that highdicom
# reads from the first source image; anonymised exports sometimes drop them.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


class SegmentAlgorithmType(str, Enum):
    """Segment Algorithm Type (0062,0008) defined terms."""

    AUTOMATIC = "AUTOMATIC"
    SEMIAUTOMATIC = "SEMIAUTOMATIC"
    MANUAL = "MANUAL"


@dataclass(frozen=True)
class SegmentSpec:
    """How one label of the mask is described in the SEG.

    Attributes
    ----------
    number
        Value of this segment in the label map (e.g. BraTS 1, 2, 4). In the SEG,
        segments are renumbered ``1..n`` in the order of the ``segments``
        argument, as DICOM requires consecutive segment numbers.
    label
        Segment Label (short human-readable name, at most 64 characters).
    category
        Segmented Property Category (CID 7150), default SNOMED CT
        "Morphologically Abnormal Structure".
    property_type
        Segmented Property Type (CID 7151), default SNOMED CT "Neoplasm".
    color_rgb
        Display colour, 8-bit sRGB; stored as RecommendedDisplayCIELabValue.
    algorithm_type
        AUTOMATIC for a model output.
    description
        Segment Description (0062,0006), at most 64 characters, e.g. a warning that a
        lesion of this segment is truncated (``None``: not written).
    """

    number: int
    label: str
    category: Code = codes.SCT.MorphologicallyAbnormalStructure
    property_type: Code = codes.SCT.Neoplasm
    color_rgb: tuple[int, int, int] = (255, 64, 64)
    algorithm_type: SegmentAlgorithmType = SegmentAlgorithmType.AUTOMATIC
    description: str | None = None


@dataclass(frozen=True)
class AlgorithmInfo:
    """Identification of the algorithm (bundle) that produced the segmentation.

    Attributes
    ----------
    name, version
        Bundle name and version (AlgorithmName, AlgorithmVersion).
    family
        Algorithm Family Code (CID 7162), default DCM "Artificial Intelligence".
    source
        Where the algorithm comes from (e.g. the bundle's URL or path).
    parameters
        Name/value pairs recorded as AlgorithmParameters (no patient data).
    """

    name: str
    version: str
    family: Code = codes.DCM.ArtificialIntelligence
    source: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SegExportConfig:
    """Options of the SEG object (series, equipment, encoding, checks).

    Attributes
    ----------
    series_number, series_description, instance_number
        General Series / Instance attributes of the new SEG series.
    content_label, content_description
        Content Label (CS: upper case, at most 16 characters) and description.
    manufacturer, manufacturer_model_name, software_versions, device_serial_number
        Enhanced General Equipment module (this software).
    omit_empty_frames
        Leave out frames with no segment pixel (highdicom's default). An all-empty
        mask keeps its frames so the SEG stays valid.
    transfer_syntax_uid
        Explicit VR Little Endian (default) or another syntax highdicom encodes.
    position_tolerance_mm
        Largest distance between a source slice's ImagePositionPatient and the
        mask affine's slice origin before the export is refused, on top of the
        source's own ``meta["slice_residual_mm"]`` (positions stored rounded).
    series_instance_uid, sop_instance_uid
        UIDs to use; new ones are generated if ``None``.
    """

    series_number: int = 901
    series_description: str = "monai-tumor segmentation"
    instance_number: int = 1
    content_label: str = "TUMOR"
    content_description: str | None = "Automatic tumour segmentation"
    manufacturer: str = "monai-tumor"
    manufacturer_model_name: str = "monai-tumor"
    software_versions: str = field(default_factory=lambda: _package_version())
    device_serial_number: str = "0"
    omit_empty_frames: bool = True
    transfer_syntax_uid: str = ExplicitVRLittleEndian
    position_tolerance_mm: float = 0.01
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None


def _package_version() -> str:
    from monai_tumor import __version__

    return __version__


def _label_array(mask: MetaTensor | torch.Tensor | npt.ArrayLike) -> npt.NDArray[np.integer[Any]]:
    arr = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ExportError(
            f"expected a label map (1, I, J, K) or (I, J, K), found shape {arr.shape}; "
            "combine multi-channel outputs into one label map (argmax) first"
        )
    if arr.dtype.kind in "biu":
        return arr.astype(np.uint8) if arr.dtype.kind == "b" else arr
    labels = np.rint(arr).astype(np.int64)
    if not np.array_equal(labels, arr):
        raise ExportError(
            "the mask has non-integer values; a SEG label map needs integer labels. "
            "Threshold or argmax the model output first"
        )
    return labels


def _frame_plane(ds: pydicom.Dataset, frame: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ImagePositionPatient, ImageOrientationPatient and PixelSpacing of one frame (1-based)."""

    def _find(name: str, seq: str) -> Any:
        for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            items = ds.get(groups)
            if not items:
                continue
            item = items[frame - 1] if groups.startswith("PerFrame") else items[0]
            if seq in item and name in item[seq][0]:
                return item[seq][0][name].value
        return ds.get(name)

    ipp = _find("ImagePositionPatient", "PlanePositionSequence")
    iop = _find("ImageOrientationPatient", "PlaneOrientationSequence")
    ps = _find("PixelSpacing", "PixelMeasuresSequence")
    if ipp is None or iop is None or ps is None:
        raise ExportError(
            f"source instance {ds.get('SOPInstanceUID', '?')} frame {frame} has no "
            "ImagePositionPatient/ImageOrientationPatient/PixelSpacing; a SEG can only be "
            "written for images with patient geometry"
        )
    return (
        np.asarray(ipp, dtype=np.float64),
        np.asarray(iop, dtype=np.float64),
        np.asarray(ps, dtype=np.float64),
    )


def _check_slice(
    ds: pydicom.Dataset,
    frame: int,
    k: int,
    affine_lps: FloatArray,
    shape: tuple[int, int, int],
    tolerance_mm: float,
) -> None:
    """Refuse a source slice that is not slice ``k`` of the mask grid."""
    uid = ds.get("SOPInstanceUID", "?")
    if int(ds.Rows) != shape[1] or int(ds.Columns) != shape[0]:
        raise ExportError(
            f"source instance {uid} is {ds.Rows} rows x {ds.Columns} columns but the mask "
            f"slices are {shape[1]} rows x {shape[0]} columns ([column, row, slice] = {shape}); "
            "the mask must be on the source grid (invert any resampling first)"
        )
    ipp, iop, ps = _frame_plane(ds, frame)
    expected = voxel_to_patient(affine_lps, [0.0, 0.0, float(k)])
    if float(np.linalg.norm(ipp - expected)) > tolerance_mm:
        raise ExportError(
            f"mask slice {k} is at LPS {np.round(expected, 3).tolist()} mm but its source "
            f"instance {uid} (frame {frame}) is at {np.round(ipp, 3).tolist()} mm; the mask is "
            "not on the source grid (resampled, gantry-tilt corrected or another series)"
        )
    spacing = spacing_from_affine(affine_lps)
    grid_iop = np.concatenate(
        [affine_lps[:3, 0] / spacing[0], affine_lps[:3, 1] / spacing[1]]
    )  # unit row and column directions: the grid's ImageOrientationPatient
    if not np.allclose(iop, grid_iop, atol=1e-4) or not np.allclose(
        ps, [spacing[1], spacing[0]], rtol=1e-4, atol=1e-5
    ):
        raise ExportError(
            f"source instance {uid} has orientation {np.round(iop, 5).tolist()} and pixel "
            f"spacing {ps.tolist()} but the mask grid has {np.round(grid_iop, 5).tolist()} and "
            f"{[spacing[1], spacing[0]]}; the mask must be on the source grid"
        )


def _with_type2(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Shallow copy with missing type 2 Patient/Study attributes present but empty."""
    missing = [name for name in _TYPE2_PATIENT_STUDY if name not in ds]
    if not missing:
        return ds
    out = copy.copy(ds)
    for name in missing:
        setattr(out, name, "")
    return out


def _character_set(ds: pydicom.Dataset) -> str | list[str] | None:
    """SpecificCharacterSet for the SEG, from the source image.

    highdicom copies the source's value and rejects an empty one, which many
    exports carry (dcmqi's ct-3slice does): empty means the default repertoire,
    so the attribute is left out (``None``). An empty first value of a
    multi-valued set (code extensions) is that same default, spelled
    ``ISO 2022 IR 6`` where highdicom needs a defined term.
    """
    value = ds.get("SpecificCharacterSet")
    values = [value] if isinstance(value, str) else [str(v) for v in (value or [])]
    values = [v.strip() for v in values]
    if not any(values):
        return None
    if len(values) == 1:
        return values[0]
    return [v or "ISO 2022 IR 6" for v in values]


def _segment_description(
    seg_number: int, spec: SegmentSpec, algorithm: AlgorithmInfo
) -> hd.seg.SegmentDescription:
    algo = None
    if spec.algorithm_type is not SegmentAlgorithmType.MANUAL:
        algo = hd.AlgorithmIdentificationSequence(
            name=algorithm.name,
            family=algorithm.family,
            version=algorithm.version,
            source=algorithm.source,
            parameters=dict(algorithm.parameters) or None,
        )
    item = hd.seg.SegmentDescription(
        segment_number=seg_number,
        segment_label=spec.label,
        segmented_property_category=spec.category,
        segmented_property_type=spec.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues(spec.algorithm_type.value),
        algorithm_identification=algo,
        display_color=hd.color.CIELabColor.from_rgb(*spec.color_rgb),
    )
    if spec.description:
        item.SegmentDescription = spec.description[:64]  # LO: at most 64 characters
    return item


def write_dicom_seg(
    mask: MetaTensor,
    source_datasets: Sequence[pydicom.Dataset],
    out_path: str | os.PathLike[str],
    *,
    segments: Sequence[SegmentSpec],
    algorithm: AlgorithmInfo,
    config: SegExportConfig | None = None,
) -> Path:
    """Write ``mask`` as a BINARY DICOM SEG on its source series, atomically.

    Parameters
    ----------
    mask
        ``(1, I, J, K)`` integer label map on the source grid (voxel axes
        ``[column, row, slice]``, RAS ``affine``), with meta
        ``"sop_instance_uids"`` (one per slice ``k``) and, for multi-frame
        sources, ``"frame_numbers"`` (1-based), as
        :func:`monai_tumor.ingest.reader.read_series` records them.
    source_datasets
        The source series' instances (headers suffice; pixel data is not read),
        in any order. Every one is referenced by the SEG; instances not on the
        mask grid (e.g. duplicates the reader dropped) are referenced as further
        source images without frames.
    out_path
        Destination ``.dcm`` file.
    segments
        One :class:`SegmentSpec` per label value that may occur in the mask.
        SEG segment ``n`` (1-based) is ``segments[n - 1]``.
    algorithm
        Name, version and family of the model that produced the mask.
    config
        Series, equipment and encoding options.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ExportError
        If a label has no segment, a slice's source instance is missing, or the
        mask is not on the source grid; or the file cannot be written.
    UnsupportedInputError
        If the source is several multi-frame instances (highdicom derives a SEG
        from one multi-frame image or a series of single-frame images).

    Examples
    --------
    Threshold three CT slices and store the mask as a DICOM SEG on their grid:

    >>> import tempfile
    >>> from pathlib import Path
    >>> import pydicom
    >>> import torch
    >>> from monai_tumor.config import data_root
    >>> from monai_tumor.export.seg import AlgorithmInfo, SegmentSpec, write_dicom_seg
    >>> from monai_tumor.ingest import read_series
    >>> folder = data_root() / "dcmqi_seg" / "ct-3slice"
    >>> ct = read_series(folder)
    >>> bone = (ct > 200).to(torch.uint8)
    >>> sources = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
    >>> path = write_dicom_seg(
    ...     bone,
    ...     sources,
    ...     Path(tempfile.mkdtemp()) / "seg.dcm",
    ...     segments=[SegmentSpec(number=1, label="bone")],
    ...     algorithm=AlgorithmInfo(name="threshold", version="1"),
    ... )
    >>> seg = pydicom.dcmread(path)
    >>> seg.Modality, len(seg.SegmentSequence), int(seg.NumberOfFrames)
    ('SEG', 1, 3)
    """
    cfg = config or SegExportConfig()
    dest = Path(out_path)
    labels = _label_array(mask)
    shape = (int(labels.shape[0]), int(labels.shape[1]), int(labels.shape[2]))
    if not segments:
        raise ExportError("no segment descriptions given; pass segments=[SegmentSpec(...)]")
    numbers = [s.number for s in segments]
    if len(set(numbers)) != len(numbers) or min(numbers) < 1:
        raise ExportError(f"segment numbers must be distinct and >= 1, got {numbers}")
    present = {int(v) for v in np.unique(labels[labels != 0])}  # mostly background: fast
    undescribed = sorted(present - set(numbers))
    if undescribed:
        raise ExportError(
            f"the mask contains labels {undescribed} without a SegmentSpec (described: "
            f"{numbers}); add a segment for each label or remove them from the mask"
        )

    uids = [str(u) for u in mask.meta.get("sop_instance_uids", [])]
    if len(uids) != shape[2]:
        raise ExportError(
            f"mask meta 'sop_instance_uids' has {len(uids)} entries for {shape[2]} slices; the "
            "mask must carry the source instance of every slice (as read_series records it)"
        )
    frames = [int(f) for f in mask.meta.get("frame_numbers", [1] * shape[2])]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source_datasets}
    missing = [u for u in dict.fromkeys(uids) if u not in by_uid]
    if missing:
        raise ExportError(
            f"{len(missing)} source instance(s) of the mask are not among the "
            f"{len(by_uid)} datasets given (first: {missing[0]}); pass the whole source series"
        )
    affine_lps = ras_to_lps(np.asarray(mask.affine, dtype=np.float64))
    # A source stored with rounded positions lies on the reader's best-fitting grid
    # only up to the residual the reader measured and accepted (meta
    # "slice_residual_mm"); anything farther is not this grid.
    tolerance = cfg.position_tolerance_mm + float(mask.meta.get("slice_residual_mm", 0.0))
    for k, (uid, frame) in enumerate(zip(uids, frames, strict=True)):
        _check_slice(by_uid[uid], frame, k, affine_lps, shape, tolerance)

    distinct = list(dict.fromkeys(uids))
    multiframe = len(distinct) < len(uids)
    if multiframe and len(distinct) != 1:
        raise UnsupportedInputError(
            f"the mask's slices come from {len(distinct)} multi-frame instances; a SEG can be "
            "derived from one multi-frame image or from single-frame images only"
        )
    # (frames, rows, columns, segments): frame f is highdicom's source frame f.
    if multiframe:
        source_images = [by_uid[distinct[0]]]
        n_frames = int(source_images[0].get("NumberOfFrames", 1))
        frame_index = [f - 1 for f in frames]
    else:
        source_images = [by_uid[u] for u in uids]
        n_frames = shape[2]
        frame_index = list(range(shape[2]))
    # [column, row, slice] -> (slice, row, column): highdicom's frame (rows, columns).
    stacked = np.zeros((n_frames, shape[1], shape[0], len(segments)), dtype=np.uint8)
    for s, spec in enumerate(segments):
        # slice by slice: no whole-volume boolean copy per segment
        for k, f in enumerate(frame_index):
            stacked[f, :, :, s] = (labels[:, :, k] == spec.number).T
    further = [ds for u, ds in by_uid.items() if u not in set(distinct)]
    if further:
        _log.warning(
            "%d source instance(s) are not slices of the mask grid; referenced without frames",
            len(further),
        )
    omit_empty = cfg.omit_empty_frames and bool(stacked.any())
    try:
        with warnings.catch_warnings():
            # highdicom quotes the PatientName in this warning: keep it out of logs.
            warnings.filterwarnings("ignore", message=".*intended person name.*")
            # The SEG copies the source's patient and study attributes verbatim, as it
            # must; pydicom warns (when reading them and again when setting them) if
            # the source's value is longer than its VR allows (real exports have
            # 17-18 character StudyIDs, SH allows 16). Not ours to fix or to report.
            warnings.filterwarnings(
                "ignore",
                message=r"The value length \(\d+\) exceeds the maximum length of \d+ allowed",
                category=UserWarning,
            )
            seg = hd.seg.Segmentation(
                source_images=[_with_type2(ds) for ds in source_images],
                pixel_array=stacked,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[
                    _segment_description(n, spec, algorithm)
                    for n, spec in enumerate(segments, start=1)
                ],
                series_instance_uid=cfg.series_instance_uid or generate_uid(),
                series_number=cfg.series_number,
                sop_instance_uid=cfg.sop_instance_uid or generate_uid(),
                instance_number=cfg.instance_number,
                manufacturer=cfg.manufacturer,
                manufacturer_model_name=cfg.manufacturer_model_name,
                software_versions=cfg.software_versions,
                device_serial_number=cfg.device_serial_number,
                content_label=cfg.content_label,
                content_description=cfg.content_description,
                series_description=cfg.series_description,
                omit_empty_frames=omit_empty,
                transfer_syntax_uid=cfg.transfer_syntax_uid,
                further_source_images=[_with_type2(ds) for ds in further] or None,
                specific_character_set=_character_set(source_images[0]),
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ExportError(f"highdicom could not build the SEG: {exc}", path=dest) from exc
    try:
        with atomic_path(dest, suffix=".dcm") as tmp:
            seg.save_as(tmp)
    except OSError as exc:
        raise ExportError(f"could not write the SEG: {exc}", path=dest) from exc
    _log.info(
        "wrote SEG with %d segment(s), %d frame(s) on %d source slice(s)",
        len(segments),
        int(seg.NumberOfFrames),
        shape[2],
    )
    return dest


def read_back_seg(
    seg_path: str | os.PathLike[str],
    source_datasets: Sequence[pydicom.Dataset],
    *,
    segments: Sequence[SegmentSpec] | None = None,
) -> npt.NDArray[np.int64]:
    """Read a SEG back as a label array on its source grid (for tests and checks).

    Frames are looked up by the source instance (and frame) they reference,
    through highdicom; the grid is the source slices sorted along their normal
    (:func:`monai_tumor.geometry.sort_along_normal`), like ``read_series``.

    Parameters
    ----------
    seg_path
        A SEG written by :func:`write_dicom_seg` (or any SEG with spatial
        locations preserved on these sources).
    source_datasets
        The source series (single-frame instances, or one multi-frame instance),
        any order.
    segments
        If given, SEG segment ``n`` is written as ``segments[n - 1].number``
        (the label values of the mask that was exported); else as ``n``.

    Returns
    -------
    numpy.ndarray
        ``(I, J, K)`` = ``[column, row, slice]`` integer labels, 0 background.
    """
    seg = hd.seg.segread(seg_path)
    if len(source_datasets) == 1 and int(source_datasets[0].get("NumberOfFrames", 1)) > 1:
        ds = source_datasets[0]
        n = int(ds.NumberOfFrames)
        planes = [_frame_plane(ds, f) for f in range(1, n + 1)]
        stack = sort_along_normal([p[0] for p in planes], planes[0][1])
        pixels = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=str(ds.SOPInstanceUID),
            source_frame_numbers=[int(i) + 1 for i in stack.order],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
        )
    else:
        ordered = list(source_datasets)
        iop = np.asarray(ordered[0].ImageOrientationPatient, dtype=np.float64)
        stack = sort_along_normal([ds.ImagePositionPatient for ds in ordered], iop)
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ordered[int(i)].SOPInstanceUID) for i in stack.order],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
        )
    labels = np.transpose(np.asarray(pixels, dtype=np.int64), (2, 1, 0))
    if segments is not None:
        lut = np.zeros(len(segments) + 1, dtype=np.int64)
        lut[1:] = [s.number for s in segments]
        labels = lut[labels]
    return labels
