"""The series model: what a scan knows of each series, study and patient.

:func:`summarize_series` classifies one series from its instance headers: files of
one SeriesInstanceUID with different frame size, orientation or pixel spacing form
separate stacks; each stack is sorted along its slice normal
(:func:`monai_tumor.geometry.sort_along_normal`) to measure the slice spacing and find
gaps and duplicate positions. Geometry is LPS millimetres throughout.

The :class:`~monai_tumor.ingest.index.SeriesIndex` caches these summaries and
:func:`~monai_tumor.ingest.scan.scan_export` returns them grouped by patient and
study (:func:`group_by_patient`); both build on this module, which imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monai_tumor.geometry import Orientation, orientation_of, sort_along_normal
from monai_tumor.ingest.codecs import can_decode
from monai_tumor.ingest.enums import ImageKind
from monai_tumor.ingest.records import InstanceHeader, NonImageObject, sop_class_name

__all__ = [
    "PatientInfo",
    "SeriesInfo",
    "StackInfo",
    "StudyInfo",
    "group_by_patient",
    "summarize_series",
]

_IOP_DECIMALS = 4
_SPACING_DECIMALS = 4


@dataclass(frozen=True)
class StackInfo:
    """One stack of a series: slices sharing frame size, orientation and pixel spacing.

    Attributes
    ----------
    number_of_slices
        Frames in the stack (single-frame files plus frames of multi-frame files).
    number_of_instances
        Files in the stack.
    rows, columns
        Frame size in pixels.
    orientation
        Plane (axial/coronal/sagittal/oblique), ``None`` without ImageOrientationPatient.
    image_orientation
        ImageOrientationPatient (LPS direction cosines) of the stack.
    pixel_spacing
        (row spacing, column spacing) in mm, as stored in PixelSpacing.
    slice_spacing
        Median distance between consecutive slices along the normal (mm);
        ``None`` for a single slice or unknown positions.
    uniform
        Every step equals ``slice_spacing`` (within 1 %), no duplicates. True
        for a single slice; False when positions are unknown.
    duplicate_positions
        Number of slices sharing a position with another.
    gaps
        Number of steps larger than ``slice_spacing`` (missing slices).
    multi_frame
        The stack comes from multi-frame instances.
    """

    number_of_slices: int
    number_of_instances: int
    rows: int
    columns: int
    orientation: Orientation | None
    image_orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    uniform: bool
    duplicate_positions: int
    gaps: int
    multi_frame: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "number_of_slices": self.number_of_slices,
            "number_of_instances": self.number_of_instances,
            "rows": self.rows,
            "columns": self.columns,
            "orientation": self.orientation.value if self.orientation else None,
            "image_orientation": list(self.image_orientation) if self.image_orientation else None,
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "slice_spacing": self.slice_spacing,
            "uniform": self.uniform,
            "duplicate_positions": self.duplicate_positions,
            "gaps": self.gaps,
            "multi_frame": self.multi_frame,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StackInfo:
        """Rebuild from :meth:`to_dict` output."""
        iop, spacing = data.get("image_orientation"), data.get("pixel_spacing")
        return cls(
            number_of_slices=int(data["number_of_slices"]),
            number_of_instances=int(data["number_of_instances"]),
            rows=int(data["rows"]),
            columns=int(data["columns"]),
            orientation=Orientation(data["orientation"]) if data.get("orientation") else None,
            image_orientation=tuple(iop) if iop else None,
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
            slice_spacing=data.get("slice_spacing"),
            uniform=bool(data["uniform"]),
            duplicate_positions=int(data["duplicate_positions"]),
            gaps=int(data["gaps"]),
            multi_frame=bool(data["multi_frame"]),
        )


@dataclass(frozen=True)
class SeriesInfo:
    """Summary of one image series (one SeriesInstanceUID).

    Geometry fields (``orientation``, ``pixel_spacing``, ``slice_spacing``) are
    those of the main stack: the one with the most slices.

    Attributes
    ----------
    series_instance_uid, study_instance_uid
        The UIDs (``"missing-..."`` stand-ins if the files had none, see
        ``synthetic_uids``).
    patient_hash
        Hash of PatientID (:func:`~monai_tumor.ingest.headers.patient_hash`).
    modality, sop_class_uid
        Of the main stack's first instance.
    image_kind
        ORIGINAL, DERIVED or LOCALIZER (the most common among the instances).
    series_number, series_description
        As stored.
    number_of_instances
        Files (one per SOPInstanceUID; copies are reported as skipped).
    number_of_slices
        Frames over all stacks.
    number_of_frames
        Same as ``number_of_slices`` (kept for readers counting frames).
    stacks
        Every stack, largest first.
    orientation, pixel_spacing, slice_spacing
        Of the main stack (mm).
    uniform
        One stack, evenly spaced, no duplicates or gaps.
    multi_frame
        Any instance has more than one frame.
    transfer_syntaxes
        TransferSyntaxUIDs found.
    decodable
        Every transfer syntax can be decoded on this machine
        (:func:`monai_tumor.ingest.codecs.can_decode`).
    synthetic_uids
        Study/series UIDs were missing in the files and were made up.
    truncated_instances
        Instances whose only copy is truncated (its Pixel Data runs past the end
        of the file): missing slices when the series is read, handled by the
        missing-slice policy (:class:`~monai_tumor.ingest.reader.ReadOptions`).
    attributes
        DICOM-keyword attributes of the main stack's first instance
        (see :meth:`selection_attributes`).
    """

    series_instance_uid: str
    study_instance_uid: str
    patient_hash: str
    modality: str
    sop_class_uid: str
    image_kind: ImageKind
    series_number: int | None
    series_description: str | None
    number_of_instances: int
    number_of_slices: int
    number_of_frames: int
    stacks: tuple[StackInfo, ...]
    orientation: Orientation | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    uniform: bool
    multi_frame: bool
    transfer_syntaxes: tuple[str, ...]
    decodable: bool
    synthetic_uids: bool = False
    truncated_instances: int = 0
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def main_stack(self) -> StackInfo:
        """The stack with the most slices."""
        return self.stacks[0]

    @property
    def number_of_stacks(self) -> int:
        """How many stacks the series splits into."""
        return len(self.stacks)

    def selection_attributes(self) -> dict[str, Any]:
        """Attributes for series-selection rules, keyed by DICOM keyword.

        Returns
        -------
        dict
            Header attributes as DICOM keywords (``Modality``,
            ``SeriesDescription``, ``ProtocolName``, ``ImageType`` (list of
            str), ``SequenceName``, ``ScanningSequence``, ``SequenceVariant``,
            ``EchoTime``, ``RepetitionTime``, ``InversionTime``, ``FlipAngle``,
            ``MagneticFieldStrength``, ``ContrastBolusAgent``,
            ``BodyPartExamined``, ``SliceThickness``, ``SpacingBetweenSlices``,
            ``Manufacturer``, ``ManufacturerModelName``, ``ConvolutionKernel``,
            ``Units``, ``SeriesNumber``, ``SOPClassUID``,
            ``SeriesInstanceUID``, ``StudyInstanceUID``,
            ``FrameOfReferenceUID``, ``StudyDate``, ``StudyDescription``,
            ``Rows``, ``Columns``, ``PixelSpacing``), absent ones as ``None``,
            plus derived keys: ``Orientation`` (str or None), ``NumberOfSlices``
            (int, all stacks), ``NumberOfStacks``, ``NumberOfInstances``,
            ``SliceSpacing`` (mm or None), ``Uniform``, ``Decodable``,
            ``MultiFrame``, ``ImageKind`` (str), ``PatientHash``,
            ``TruncatedInstances``.
        """
        out = dict(self.attributes)
        out.update(
            {
                "Orientation": self.orientation.value if self.orientation else None,
                "NumberOfSlices": self.number_of_slices,
                "NumberOfStacks": self.number_of_stacks,
                "NumberOfInstances": self.number_of_instances,
                "SliceSpacing": self.slice_spacing,
                "Uniform": self.uniform,
                "Decodable": self.decodable,
                "MultiFrame": self.multi_frame,
                "ImageKind": self.image_kind.value,
                "PatientHash": self.patient_hash,
                "TruncatedInstances": self.truncated_instances,
            }
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``series`` items of :meth:`ScanResult.to_dict`)."""
        return {
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "modality": self.modality,
            "sop_class_uid": self.sop_class_uid,
            "sop_class_name": sop_class_name(self.sop_class_uid),
            "image_kind": self.image_kind.value,
            "number_of_instances": self.number_of_instances,
            "number_of_slices": self.number_of_slices,
            "number_of_stacks": self.number_of_stacks,
            "orientation": self.orientation.value if self.orientation else None,
            "pixel_spacing": list(self.pixel_spacing) if self.pixel_spacing else None,
            "slice_spacing": self.slice_spacing,
            "uniform": self.uniform,
            "multi_frame": self.multi_frame,
            "transfer_syntaxes": list(self.transfer_syntaxes),
            "decodable": self.decodable,
            "synthetic_uids": self.synthetic_uids,
            "truncated_instances": self.truncated_instances,
            "stacks": [s.to_dict() for s in self.stacks],
            "attributes": self.selection_attributes(),
        }

    def to_record(self) -> dict[str, Any]:
        """Lossless JSON-ready dict (for the index's summary cache); see :meth:`from_record`."""
        return {
            **self.to_dict(),
            "study_instance_uid": self.study_instance_uid,
            "patient_hash": self.patient_hash,
            "raw_attributes": dict(self.attributes),
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> SeriesInfo:
        """Rebuild from :meth:`to_record` output."""
        spacing = data.get("pixel_spacing")
        return cls(
            series_instance_uid=data["series_instance_uid"],
            study_instance_uid=data["study_instance_uid"],
            patient_hash=data["patient_hash"],
            modality=data["modality"],
            sop_class_uid=data["sop_class_uid"],
            image_kind=ImageKind(data["image_kind"]),
            series_number=data.get("series_number"),
            series_description=data.get("series_description"),
            number_of_instances=int(data["number_of_instances"]),
            number_of_slices=int(data["number_of_slices"]),
            number_of_frames=int(data["number_of_slices"]),
            stacks=tuple(StackInfo.from_dict(s) for s in data["stacks"]),
            orientation=Orientation(data["orientation"]) if data.get("orientation") else None,
            pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
            slice_spacing=data.get("slice_spacing"),
            uniform=bool(data["uniform"]),
            multi_frame=bool(data["multi_frame"]),
            transfer_syntaxes=tuple(data["transfer_syntaxes"]),
            decodable=bool(data["decodable"]),
            synthetic_uids=bool(data.get("synthetic_uids", False)),
            truncated_instances=int(data.get("truncated_instances", 0)),
            attributes=dict(data.get("raw_attributes") or {}),
        )


@dataclass(frozen=True)
class StudyInfo:
    """One study of a patient: its image series and non-image objects."""

    study_instance_uid: str
    study_date: str | None
    study_description: str | None
    series: tuple[SeriesInfo, ...]
    non_image_objects: tuple[NonImageObject, ...] = ()


@dataclass(frozen=True)
class PatientInfo:
    """One patient, known only by the hash of PatientID."""

    patient_hash: str
    studies: tuple[StudyInfo, ...]


_ATTRIBUTE_FIELDS: dict[str, str] = {
    "Modality": "modality",
    "SOPClassUID": "sop_class_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "FrameOfReferenceUID": "frame_of_reference_uid",
    "SeriesNumber": "series_number",
    "SeriesDescription": "series_description",
    "ProtocolName": "protocol_name",
    "SequenceName": "sequence_name",
    "ScanningSequence": "scanning_sequence",
    "SequenceVariant": "sequence_variant",
    "EchoTime": "echo_time",
    "RepetitionTime": "repetition_time",
    "InversionTime": "inversion_time",
    "FlipAngle": "flip_angle",
    "MagneticFieldStrength": "magnetic_field_strength",
    "ContrastBolusAgent": "contrast_bolus_agent",
    "BodyPartExamined": "body_part_examined",
    "SliceThickness": "slice_thickness",
    "SpacingBetweenSlices": "spacing_between_slices",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model_name",
    "ConvolutionKernel": "convolution_kernel",
    "Units": "units",
    "StudyDate": "study_date",
    "StudyDescription": "study_description",
    "Rows": "rows",
    "Columns": "columns",
    "TransferSyntaxUID": "transfer_syntax_uid",
}


def _attributes(header: InstanceHeader) -> dict[str, Any]:
    out: dict[str, Any] = {kw: getattr(header, name) for kw, name in _ATTRIBUTE_FIELDS.items()}
    out["ImageType"] = list(header.image_type)
    out["PixelSpacing"] = list(header.pixel_spacing) if header.pixel_spacing else None
    return out


def _stack_key(header: InstanceHeader) -> tuple[Any, ...]:
    iop = header.image_orientation
    spacing = header.pixel_spacing
    return (
        header.rows,
        header.columns,
        tuple(round(v, _IOP_DECIMALS) for v in iop) if iop else None,
        tuple(round(v, _SPACING_DECIMALS) for v in spacing) if spacing else None,
    )


def _summarize_stack(headers: Sequence[InstanceHeader]) -> StackInfo:
    first = headers[0]
    n_slices = sum(h.number_of_frames for h in headers)
    iop = first.image_orientation
    positions: list[tuple[float, float, float]] = []
    for header in headers:
        frame_positions = header.positions()
        if frame_positions is None:
            positions = []
            break
        positions.extend(frame_positions)
    slice_spacing: float | None = None
    uniform = n_slices == 1
    duplicates = gaps = 0
    if iop is not None and positions and len(positions) == n_slices and n_slices > 1:
        stack = sort_along_normal(positions, iop)
        slice_spacing = stack.spacing if stack.spacing > 0 else None
        duplicates = len(stack.duplicates)
        gaps = len(stack.gaps)
        uniform = stack.uniform and duplicates == 0
    return StackInfo(
        number_of_slices=n_slices,
        number_of_instances=len(headers),
        rows=first.rows,
        columns=first.columns,
        orientation=orientation_of(iop) if iop is not None else None,
        image_orientation=iop,
        pixel_spacing=first.pixel_spacing,
        slice_spacing=slice_spacing,
        uniform=uniform,
        duplicate_positions=duplicates,
        gaps=gaps,
        multi_frame=any(h.multi_frame for h in headers),
    )


def summarize_series(headers: Sequence[InstanceHeader]) -> SeriesInfo:
    """Classify one series from its instance headers.

    Parameters
    ----------
    headers
        Headers of one SeriesInstanceUID, one per SOPInstanceUID (see
        :func:`~monai_tumor.ingest.index.split_duplicates`), any order.

    Returns
    -------
    SeriesInfo
        Its stacks (split by frame size, orientation and pixel spacing),
        spacing from positions, uniformity, codecs and selection attributes.

    Raises
    ------
    ValueError
        If ``headers`` is empty or mixes series.
    """
    if not headers:
        raise ValueError("summarize_series needs at least one header")
    uids = {h.series_instance_uid for h in headers}
    if len(uids) != 1:
        raise ValueError(f"headers of {len(uids)} series given, expected one")
    groups: dict[tuple[Any, ...], list[InstanceHeader]] = {}
    for header in sorted(
        headers,
        key=lambda h: (h.instance_number if h.instance_number is not None else 0, str(h.path)),
    ):
        groups.setdefault(_stack_key(header), []).append(header)
    ordered = sorted(groups.values(), key=lambda g: -sum(h.number_of_frames for h in g))
    stacks = tuple(_summarize_stack(g) for g in ordered)
    main = stacks[0]
    first = ordered[0][0]
    kinds: dict[ImageKind, int] = {}
    for header in headers:
        kind = header.image_kind
        kinds[kind] = kinds.get(kind, 0) + 1
    syntaxes = tuple(sorted({h.transfer_syntax_uid for h in headers}))
    n_slices = sum(s.number_of_slices for s in stacks)
    return SeriesInfo(
        series_instance_uid=first.series_instance_uid,
        study_instance_uid=first.study_instance_uid,
        patient_hash=first.patient_hash,
        modality=first.modality,
        sop_class_uid=first.sop_class_uid,
        image_kind=max(kinds, key=lambda k: kinds[k]),
        series_number=first.series_number,
        series_description=first.series_description,
        number_of_instances=len(headers),
        number_of_slices=n_slices,
        number_of_frames=n_slices,
        stacks=stacks,
        orientation=main.orientation,
        pixel_spacing=main.pixel_spacing,
        slice_spacing=main.slice_spacing,
        uniform=len(stacks) == 1 and main.uniform,
        multi_frame=any(s.multi_frame for s in stacks),
        transfer_syntaxes=syntaxes,
        decodable=all(can_decode(ts) for ts in syntaxes),
        synthetic_uids=any(h.synthetic_uids for h in headers),
        truncated_instances=sum(1 for h in headers if h.truncated),
        attributes=_attributes(first),
    )


def group_by_patient(
    series: Sequence[SeriesInfo], objects: Sequence[NonImageObject]
) -> tuple[PatientInfo, ...]:
    """Group series and non-image objects by patient, then study.

    Parameters
    ----------
    series
        Image series, any order.
    objects
        RTSTRUCT and SEG objects, any order; a study holding only these is kept.

    Returns
    -------
    tuple of PatientInfo
        Sorted by patient hash, then study UID; series keep their given order.
    """
    studies: dict[tuple[str, str], list[SeriesInfo]] = {}
    for info in series:
        studies.setdefault((info.patient_hash, info.study_instance_uid), []).append(info)
    objects_by_study: dict[tuple[str, str], list[NonImageObject]] = {}
    for obj in objects:
        key = (obj.patient_hash, obj.study_instance_uid)
        objects_by_study.setdefault(key, []).append(obj)
        studies.setdefault(key, [])
    patients: dict[str, list[StudyInfo]] = {}
    for (pid, study_uid), members in sorted(studies.items()):
        attributes = members[0].attributes if members else {}
        patients.setdefault(pid, []).append(
            StudyInfo(
                study_instance_uid=study_uid,
                study_date=attributes.get("StudyDate"),
                study_description=attributes.get("StudyDescription"),
                series=tuple(members),
                non_image_objects=tuple(objects_by_study.get((pid, study_uid), ())),
            )
        )
    return tuple(PatientInfo(pid, tuple(studies_)) for pid, studies_ in sorted(patients.items()))
