"""What reading one file's header gives: an image instance, a non-image object, or a skip.

These records are the currency of ingest: :func:`~monai_tumor.ingest.headers.inspect_file`
produces them, the :class:`~monai_tumor.ingest.index.SeriesIndex` stores them, and
:func:`~monai_tumor.ingest.series.summarize_series` groups them into series. They hold no
patient identifiers: PatientID is kept only as its keyed hash
(:func:`~monai_tumor.ingest.headers.patient_hash`). Geometry is LPS millimetres, as stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Union

from pydicom.uid import UID, RTStructureSetStorage, SegmentationStorage

from monai_tumor.ingest.enums import ImageKind, SkipReason

__all__ = [
    "LABEL_MAP_SEGMENTATION_STORAGE",
    "NON_IMAGE_SOP_CLASSES",
    "SEG_SOP_CLASSES",
    "FileRecord",
    "InstanceHeader",
    "NonImageObject",
    "Position",
    "SkippedFile",
    "sop_class_name",
]

#: Label Map Segmentation Storage (DICOM 2024c); pydicom 3.0 has no constant for it yet.
LABEL_MAP_SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.7")
#: The DICOM SEG SOP classes (binary/fractional and label map).
SEG_SOP_CLASSES: frozenset[UID] = frozenset({SegmentationStorage, LABEL_MAP_SEGMENTATION_STORAGE})
#: SOP classes kept in the index as non-image objects (ground truth, seeds).
NON_IMAGE_SOP_CLASSES: frozenset[UID] = frozenset({RTStructureSetStorage, *SEG_SOP_CLASSES})

#: An ImagePositionPatient (LPS mm).
Position = tuple[float, float, float]


def sop_class_name(uid: str | None) -> str:
    """Name of a SOP class UID (the UID itself when pydicom does not know it)."""
    if not uid:
        return "unknown SOP class"
    name = UID(uid).name
    return str(name) if name else uid


@dataclass(frozen=True)
class InstanceHeader:
    """Header of one image instance (single- or multi-frame), no pixel data.

    Geometry is in DICOM patient coordinates (LPS, mm), as stored.

    Attributes
    ----------
    path
        The file.
    sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid
        The instance's UIDs.
    transfer_syntax_uid
        TransferSyntaxUID (0002,0010).
    patient_hash
        :func:`~monai_tumor.ingest.headers.patient_hash` of PatientID (``""`` if absent).
    modality
        Modality (0008,0060), e.g. ``"CT"``.
    image_type
        ImageType (0008,0008) values.
    rows, columns
        Frame size in pixels.
    number_of_frames
        NumberOfFrames (1 for single-frame instances).
    image_orientation
        ImageOrientationPatient: 6 direction cosines (row then column
        direction, LPS); for enhanced multi-frame, that of the functional
        groups. ``None`` if absent.
    image_position
        ImagePositionPatient (LPS mm) of a single-frame instance, else ``None``.
    frame_positions
        Per-frame ImagePositionPatient of an enhanced multi-frame instance
        (from PerFrameFunctionalGroupsSequence), else ``None``.
    pixel_spacing
        PixelSpacing as stored: (row spacing, column spacing) in mm.
    has_pixel_data
        Whether the file has a Pixel Data element (always True for a header
        returned by :func:`~monai_tumor.ingest.headers.inspect_file`).
    synthetic_uids
        True when the file's StudyInstanceUID or SeriesInstanceUID was empty
        and a ``"missing-..."`` key derived from its folder stands in for it.
    truncated
        ``""`` for an intact file; otherwise what the header scan found (the
        declared Pixel Data length against the bytes left in the file), e.g.
        ``"Pixel Data declares 115200 bytes, the file holds 784"``. A
        truncated copy of an instance is skipped when an intact copy exists.
    """

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_hash: str
    modality: str
    image_type: tuple[str, ...]
    rows: int
    columns: int
    number_of_frames: int = 1
    image_orientation: tuple[float, ...] | None = None
    image_position: Position | None = None
    frame_positions: tuple[Position, ...] | None = None
    pixel_spacing: tuple[float, float] | None = None
    frame_of_reference_uid: str | None = None
    instance_number: int | None = None
    series_number: int | None = None
    acquisition_number: int | None = None
    samples_per_pixel: int | None = None
    bits_allocated: int | None = None
    has_pixel_data: bool = True
    synthetic_uids: bool = False
    study_date: str | None = None
    study_description: str | None = None
    series_description: str | None = None
    protocol_name: str | None = None
    sequence_name: str | None = None
    scanning_sequence: str | None = None
    sequence_variant: str | None = None
    contrast_bolus_agent: str | None = None
    body_part_examined: str | None = None
    manufacturer: str | None = None
    manufacturer_model_name: str | None = None
    convolution_kernel: str | None = None
    units: str | None = None
    echo_time: float | None = None
    repetition_time: float | None = None
    inversion_time: float | None = None
    flip_angle: float | None = None
    magnetic_field_strength: float | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    truncated: str = ""

    @property
    def image_kind(self) -> ImageKind:
        """ORIGINAL, DERIVED or LOCALIZER from ImageType (UNKNOWN if absent)."""
        values = [v.upper() for v in self.image_type]
        if "LOCALIZER" in values[2:]:
            return ImageKind.LOCALIZER
        if values and values[0] in (ImageKind.ORIGINAL.value, ImageKind.DERIVED.value):
            return ImageKind(values[0])
        return ImageKind.UNKNOWN

    @property
    def multi_frame(self) -> bool:
        """True for instances with more than one frame."""
        return self.number_of_frames > 1

    def positions(self) -> tuple[Position, ...] | None:
        """ImagePositionPatient of every frame in frame order (LPS mm), if known."""
        if self.frame_positions is not None:
            return self.frame_positions
        if self.image_position is not None and self.number_of_frames == 1:
            return (self.image_position,)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``None`` fields left out); inverse of :meth:`from_dict`."""
        # Shallow on purpose: dataclasses.asdict deep-copies and was the top cost
        # of a 10,000-file scan. Tuples serialise as JSON lists.
        out = {k: v for k in _HEADER_FIELDS if (v := getattr(self, k)) is not None}
        out["path"] = str(self.path)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstanceHeader:
        """Rebuild a header from :meth:`to_dict` output (e.g. JSON from the index).

        Raises
        ------
        TypeError
            A key is not a field, or a required field is missing (as the
            constructor would).
        """
        kwargs: dict[str, Any] = dict(data)
        unknown = kwargs.keys() - _HEADER_FIELD_SET
        missing = _HEADER_REQUIRED - kwargs.keys()
        if unknown or missing:
            raise TypeError(
                f"InstanceHeader.from_dict: unknown fields {sorted(unknown)}, "
                f"missing fields {sorted(missing)}"
            )
        kwargs["path"] = Path(kwargs["path"])
        for key in ("image_type", "image_orientation", "pixel_spacing", "image_position"):
            value = kwargs.get(key)
            if value is not None:
                kwargs[key] = tuple(value)
        if kwargs.get("frame_positions") is not None:
            kwargs["frame_positions"] = tuple(tuple(p) for p in kwargs["frame_positions"])
        # Filled in directly rather than through the frozen dataclass __init__ (one
        # object.__setattr__ per field): rebuilding the 10,000 headers of an export
        # from the index took 2.5x longer that way. Keys were checked above and the
        # class has no __post_init__, so the result equals cls(**kwargs).
        header = object.__new__(cls)
        state = header.__dict__
        state.update(_HEADER_DEFAULTS)
        state.update(kwargs)
        return header


_HEADER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(InstanceHeader))
_HEADER_FIELD_SET = frozenset(_HEADER_FIELDS)
_HEADER_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(InstanceHeader) if f.default is not MISSING
}
_HEADER_REQUIRED = frozenset(f.name for f in fields(InstanceHeader) if f.default is MISSING)


@dataclass(frozen=True)
class NonImageObject:
    """An RTSTRUCT or DICOM SEG found in an export (useful as ground truth or seeds).

    Attributes
    ----------
    path
        The file.
    sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid
        The object's own UIDs.
    modality
        ``"RTSTRUCT"`` or ``"SEG"``.
    patient_hash
        :func:`~monai_tumor.ingest.headers.patient_hash` of PatientID.
    referenced_series_uids
        SeriesInstanceUIDs of the image series it refers to (empty if the
        object does not say).
    series_description
        SeriesDescription, if any.
    transfer_syntax_uid
        TransferSyntaxUID (0002,0010).
    """

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    patient_hash: str
    referenced_series_uids: tuple[str, ...] = ()
    series_description: str | None = None
    transfer_syntax_uid: str | None = None

    @property
    def sop_class_name(self) -> str:
        """Human-readable SOP class name."""
        return sop_class_name(self.sop_class_uid)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; inverse of :meth:`from_dict`."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["referenced_series_uids"] = list(self.referenced_series_uids)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NonImageObject:
        """Rebuild from :meth:`to_dict` output."""
        kwargs = dict(data)
        kwargs["path"] = Path(kwargs["path"])
        kwargs["referenced_series_uids"] = tuple(kwargs.get("referenced_series_uids", ()))
        return cls(**kwargs)


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not part of any image series, and why.

    Attributes
    ----------
    path
        The file.
    reason
        Why it was skipped.
    detail
        One line saying what was found (e.g. the SOP class name); never patient
        identifiers.
    sop_class_uid
        SOPClassUID when it could be read.
    """

    path: Path
    reason: SkipReason
    detail: str = ""
    sop_class_uid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; inverse of :meth:`from_dict`."""
        return {
            "path": str(self.path),
            "reason": self.reason.value,
            "detail": self.detail,
            "sop_class_uid": self.sop_class_uid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SkippedFile:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            path=Path(data["path"]),
            reason=SkipReason(data["reason"]),
            detail=str(data.get("detail") or ""),
            sop_class_uid=data.get("sop_class_uid"),
        )


#: What :func:`~monai_tumor.ingest.headers.inspect_file` returns.
FileRecord = Union[InstanceHeader, NonImageObject, SkippedFile]  # noqa: UP007 (runtime alias)
