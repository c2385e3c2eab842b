"""Scan a DICOM export: find every series, classify it, and keep an index.

:func:`scan_export` walks a folder recursively (file names and extensions do
not matter), reads only the header of each new or changed file
(:func:`~monai_tumor.ingest.headers.inspect_file`), in parallel, stores what it
found in a :class:`~monai_tumor.ingest.index.SeriesIndex`, and returns a
:class:`ScanResult`: patients (by PatientID hash) -> studies -> series, the
non-image objects (RTSTRUCT, SEG) and every skipped file with its reason.

A series is summarised by :func:`summarize_series`: files of one
SeriesInstanceUID with different frame size, orientation or pixel spacing form
separate stacks; each stack is sorted along its slice normal
(:func:`monai_tumor.geometry.sort_along_normal`) to measure the slice spacing
and find gaps and duplicate positions. Geometry is LPS millimetres throughout.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_tumor import config
from monai_tumor.errors import ConfigError, IngestError
from monai_tumor.geometry import Orientation, orientation_of, sort_along_normal
from monai_tumor.ingest.codecs import can_decode
from monai_tumor.ingest.enums import ExecutorKind, ImageKind, SkipReason
from monai_tumor.ingest.headers import (
    FileRecord,
    InstanceHeader,
    NonImageObject,
    SkippedFile,
    inspect_file,
    sop_class_name,
)
from monai_tumor.ingest.index import IndexRow, SeriesIndex, record_to_row

__all__ = [
    "INDEX_DIRNAME",
    "SCAN_SCHEMA",
    "PatientInfo",
    "ScanResult",
    "ScanStats",
    "SeriesInfo",
    "StackInfo",
    "StudyInfo",
    "default_index_path",
    "scan_export",
    "summarize_series",
]

logger = logging.getLogger(__name__)

#: Folder created inside a writable export to hold the default index.
INDEX_DIRNAME = ".monai-tumor"
#: Identifier of the JSON layout produced by :meth:`ScanResult.to_dict`.
SCAN_SCHEMA = "monai-tumor/scan/1"
_BATCH = 256
#: Below this many files to parse, starting worker processes costs more than it saves.
_PARALLEL_MIN_FILES = 1000
#: Fewer uncached series than this are summarised in the main process.
_PARALLEL_MIN_SERIES = 16
_IOP_DECIMALS = 4
_SPACING_DECIMALS = 4


# ----------------------------------------------------------------------------- results


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
            ``MultiFrame``, ``ImageKind`` (str), ``PatientHash``.
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


@dataclass(frozen=True)
class ScanStats:
    """What a scan did.

    Attributes
    ----------
    files_found
        Files under the export (the index files excluded).
    files_parsed
        Files whose header was read in this scan (new or changed).
    files_unchanged
        Files whose index row was reused (same size and mtime).
    files_removed
        Index rows dropped because their file is gone.
    seconds
        Wall time of the whole scan.
    parse_seconds
        Wall time spent reading headers.
    workers
        Parallel workers used for parsing (1 when serial).
    executor
        How parsing was spread (see :class:`~monai_tumor.ingest.enums.ExecutorKind`).
    """

    files_found: int
    files_parsed: int
    files_unchanged: int
    files_removed: int
    seconds: float
    parse_seconds: float
    workers: int
    executor: ExecutorKind

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "files_found": self.files_found,
            "files_parsed": self.files_parsed,
            "files_unchanged": self.files_unchanged,
            "files_removed": self.files_removed,
            "seconds": round(self.seconds, 4),
            "parse_seconds": round(self.parse_seconds, 4),
            "workers": self.workers,
            "executor": self.executor.value,
        }


@dataclass(frozen=True)
class ScanResult:
    """Everything found in one export.

    Attributes
    ----------
    export_dir
        The scanned folder (absolute).
    index_path
        The SQLite index written.
    patients
        Patients -> studies -> series, sorted by hash, study UID, series number.
    series
        All image series, flat, in the same order.
    non_image_objects
        RTSTRUCT and SEG objects, by path.
    skipped
        Every file not in a series, with its reason, by path.
    stats
        Counts and timings.
    """

    export_dir: Path
    index_path: Path
    patients: tuple[PatientInfo, ...]
    series: tuple[SeriesInfo, ...]
    non_image_objects: tuple[NonImageObject, ...]
    skipped: tuple[SkippedFile, ...]
    stats: ScanStats

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.export_dir).as_posix()
        except ValueError:
            return str(path)

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable result; the layout is stable (``"schema"`` names it).

        Returns
        -------
        dict
            ``{"schema": "monai-tumor/scan/1", "export_dir": str, "index": str,
            "stats": {files_found, files_parsed, files_unchanged, files_removed,
            seconds, parse_seconds, workers, executor},
            "patients": [{"patient_hash": str, "studies": [{"study_instance_uid",
            "study_date", "study_description", "series": [series...],
            "non_image_objects": [{"path", "modality", "sop_class_uid",
            "sop_class_name", "sop_instance_uid", "series_instance_uid",
            "referenced_series_uids", "series_description"}]}]}],
            "skipped": [{"path", "reason", "detail", "sop_class_uid"}]}``.
            Each series is :meth:`SeriesInfo.to_dict`. Paths are relative to
            ``export_dir`` (POSIX). No patient names, IDs or birth dates.
        """
        return {
            "schema": SCAN_SCHEMA,
            "export_dir": str(self.export_dir),
            "index": str(self.index_path),
            "stats": self.stats.to_dict(),
            "patients": [
                {
                    "patient_hash": patient.patient_hash,
                    "studies": [
                        {
                            "study_instance_uid": study.study_instance_uid,
                            "study_date": study.study_date,
                            "study_description": study.study_description,
                            "series": [s.to_dict() for s in study.series],
                            "non_image_objects": [
                                {
                                    "path": self._rel(obj.path),
                                    "modality": obj.modality,
                                    "sop_class_uid": obj.sop_class_uid,
                                    "sop_class_name": obj.sop_class_name,
                                    "sop_instance_uid": obj.sop_instance_uid,
                                    "series_instance_uid": obj.series_instance_uid,
                                    "referenced_series_uids": list(obj.referenced_series_uids),
                                    "series_description": obj.series_description,
                                }
                                for obj in study.non_image_objects
                            ],
                        }
                        for study in patient.studies
                    ],
                }
                for patient in self.patients
            ],
            "skipped": [
                {**record.to_dict(), "path": self._rel(record.path)} for record in self.skipped
            ],
        }


# ------------------------------------------------------------------------- summaries

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
        attributes=_attributes(first),
    )


def _group(
    series: Sequence[SeriesInfo], objects: Sequence[NonImageObject]
) -> tuple[PatientInfo, ...]:
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


# ----------------------------------------------------------------------------- walking


def default_index_path(export_dir: str | os.PathLike[str]) -> Path:
    """Where the index of an export goes by default: ``EXPORT/.monai-tumor/index.sqlite``."""
    return Path(export_dir) / INDEX_DIRNAME / "index.sqlite"


def _walk(root: Path, exclude: set[str]) -> Iterator[tuple[str, int, int]]:
    """Yield ``(path, size, mtime_ns)`` of every regular file under ``root``.

    Symlinks to files are followed; symlinks to folders are not (no loops).
    Index folders (:data:`INDEX_DIRNAME`) and the paths in ``exclude`` are skipped.
    """
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            logger.warning("cannot list %s (%s); its files are not scanned", folder, exc.strerror)
            continue
        for entry in entries:
            if entry.path in exclude:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != INDEX_DIRNAME:  # ours, or of a scanned sub-folder
                        stack.append(entry.path)
                elif entry.is_file():
                    st = entry.stat()
                    yield entry.path, st.st_size, st.st_mtime_ns
            except OSError:
                yield entry.path, -1, -1  # dangling symlink etc.: recorded as unreadable


def _inspect(path: str, key: bytes) -> FileRecord:
    try:
        return inspect_file(path, patient_key=key)
    except Exception as exc:  # a bug must not stop a scan of thousands of files
        logger.exception("unexpected error reading %s", path)
        return SkippedFile(Path(path), SkipReason.CORRUPT, f"{type(exc).__name__}: {exc}")


def _parse_batch(batch: Sequence[tuple[str, int, int]], key: bytes) -> list[IndexRow]:
    """Worker: read the headers of a batch of files (runs in a pool)."""
    return [record_to_row(_inspect(path, key), size, mtime) for path, size, mtime in batch]


def _is_writable(folder: Path) -> bool:
    """Whether we may create the index folder in ``folder`` (not for root on a RO mount)."""
    return os.access(folder, os.W_OK)


def _resolve_index(root: Path, index_path: str | os.PathLike[str] | None) -> Path:
    if index_path is not None:
        return Path(index_path).expanduser().resolve()
    target = default_index_path(root)
    message = (
        f"the export folder is not writable, so the default index {target} cannot be "
        "created; pass --index FILE (index_path=...) with a writable location - "
        "nothing is ever written into a read-only export"
    )
    if not _is_writable(root):
        raise ConfigError(message, path=root)
    try:
        target.parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(message, path=root) from exc
    return target


def _make_executor(kind: ExecutorKind, workers: int) -> Executor:
    if kind is ExecutorKind.THREAD:
        return ThreadPoolExecutor(max_workers=workers)
    # fork: workers start in milliseconds and inherit the imported modules; the
    # pool is started before any progress thread exists (see scan_export).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def _progress(enabled: bool, total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Start a rich progress bar on stderr; return its (advance, stop) callables."""
    if not enabled or total == 0:
        return (lambda n: None), (lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = bar.add_task("reading headers", total=total)
    bar.start()
    return (lambda n: bar.advance(task, n)), bar.stop


def scan_export(
    export_dir: str | os.PathLike[str],
    *,
    index_path: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    executor: ExecutorKind | str | None = None,
) -> ScanResult:
    """Scan a DICOM export folder and update its index.

    Parameters
    ----------
    export_dir
        Folder to walk recursively. Files may have any name or no extension.
        It is only read; the default index is the one thing written into it.
    index_path
        SQLite index to create or update. Default
        ``EXPORT_DIR/.monai-tumor/index.sqlite``; required when the export is
        read-only.
    workers
        Parallel workers for header parsing (default: CPU count).
    progress
        Show a progress bar on stderr.
    executor
        ``"process"``, ``"thread"`` or ``"serial"``. Default: processes when
        more than 1,000 files need parsing and more than one worker is
        allowed, else serial. Processes are the fastest (parsing holds the GIL;
        measured in ``benchmarks/bench_scan.py``).

    Returns
    -------
    ScanResult
        Patients -> studies -> series, non-image objects, skipped files, stats.

    Raises
    ------
    IngestError
        ``export_dir`` does not exist or is not a folder.
    ConfigError
        No ``index_path`` was given and the export is not writable, or the
        index cannot be created or opened, or the patient key
        (:func:`monai_tumor.config.patient_key`) is unusable.

    Notes
    -----
    Patient hashes are keyed (:func:`~monai_tumor.ingest.headers.patient_hash`).
    The index records which key made its hashes; scanning with another key
    rebuilds it, so hashes of two keys are never mixed.
    """
    start = time.perf_counter()
    root = Path(export_dir).expanduser().resolve()
    if not root.is_dir():
        raise IngestError("not a folder; expected the folder of a DICOM export to scan", path=root)
    target = _resolve_index(root, index_path)
    exclude = {str(root / INDEX_DIRNAME)} | {
        str(target) + suffix for suffix in ("", "-wal", "-shm", "-journal")
    }
    key = config.patient_key()
    with SeriesIndex(target, patient_key_id=config.patient_key_id(key)) as index:
        known = index.file_states(root=root)
        found = list(_walk(root, exclude))
        seen = {path for path, _, _ in found}
        removed = index.remove(p for p in known if p not in seen)
        todo = [f for f in found if known.get(f[0]) != (f[1], f[2])]
        n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        kind = (
            ExecutorKind(executor)
            if executor is not None
            else (
                ExecutorKind.PROCESS
                if n_workers > 1 and len(todo) >= _PARALLEL_MIN_FILES
                else ExecutorKind.SERIAL
            )
        )
        if n_workers == 1:
            kind = ExecutorKind.SERIAL
        parse_start = time.perf_counter()
        pool = None if kind is ExecutorKind.SERIAL else _make_executor(kind, n_workers)
        try:
            _parse_all(index, todo, pool, n_workers, progress, known=known, key=key)
            parse_seconds = time.perf_counter() - parse_start
            if kind is ExecutorKind.PROCESS and pool is not None:
                _summarize_in_pool(index, root, pool, n_workers)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        series = index.series(root=root)
        objects = index.non_image_objects(root=root)
        skipped = tuple(index.skipped(root=root))
    patients = _group(series, objects)
    stats = ScanStats(
        files_found=len(found),
        files_parsed=len(todo),
        files_unchanged=len(found) - len(todo),
        files_removed=removed,
        seconds=time.perf_counter() - start,
        parse_seconds=parse_seconds,
        workers=1 if kind is ExecutorKind.SERIAL else n_workers,
        executor=kind,
    )
    logger.info(
        "scanned %s: %d files, %d parsed, %d series, %d skipped in %.2f s",
        root,
        stats.files_found,
        stats.files_parsed,
        len(series),
        len(skipped),
        stats.seconds,
    )
    return ScanResult(
        export_dir=root,
        index_path=target,
        patients=patients,
        series=tuple(series),
        non_image_objects=tuple(objects),
        skipped=skipped,
        stats=stats,
    )


def _summarize_part(index_path: str, root: str, uids: Sequence[str]) -> list[SeriesInfo]:
    """Worker: summarise some series from the (committed) index rows."""
    with SeriesIndex(index_path, read_only=True) as index:
        return index.summarize(uids, root=Path(root))


def _summarize_in_pool(index: SeriesIndex, root: Path, pool: Executor, workers: int) -> None:
    """Summarise the series without a cached summary in the worker processes.

    Decoding the rows of a 10,000-file export and summarising its series was a
    third of a first scan's wall time when done in the main process alone; the
    workers read the index (WAL mode: readers do not block) and return the
    small summaries, which are cached here so :meth:`SeriesIndex.series` only
    reads them back.
    """
    uids = index.uncached_series(root=root)
    if len(uids) < _PARALLEL_MIN_SERIES:
        return  # not worth the round trip: SeriesIndex.series does it in-process
    n_parts = min(len(uids), workers * 4)  # small parts: the pool evens out big series
    parts = [uids[i::n_parts] for i in range(n_parts)]
    futures = [
        pool.submit(_summarize_part, str(index.path), str(root), part) for part in parts if part
    ]
    for future in as_completed(futures):
        index.store_summaries(future.result(), root=root)


def _parse_all(
    index: SeriesIndex,
    todo: Sequence[tuple[str, int, int]],
    pool: Executor | None,
    workers: int,
    progress: bool,
    known: Mapping[str, Any],
    key: bytes,
) -> None:
    """Parse ``todo`` and write each batch to the index in its own transaction.

    ``known`` holds the paths already in the index; a batch with none of them
    is stored without looking up the series of their old rows. ``key`` is the
    patient key.
    """
    if not todo:
        return

    def store(rows: list[IndexRow]) -> None:
        index.put_rows(rows, new=not any(row[0] in known for row in rows))

    batch_size = min(_BATCH, max(1, len(todo) // (workers * 4) or 1))
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    if pool is None:
        advance, stop = _progress(progress, len(todo))
        try:
            for batch in batches:
                store(_parse_batch(batch, key))
                advance(len(batch))
        finally:
            stop()
        return
    # Submit everything first: worker processes are forked here, before the
    # progress bar starts its refresh thread.
    futures = [pool.submit(_parse_batch, batch, key) for batch in batches]
    advance, stop = _progress(progress, len(todo))
    try:
        for future in as_completed(futures):
            rows = future.result()
            store(rows)
            advance(len(rows))
    finally:
        stop()
