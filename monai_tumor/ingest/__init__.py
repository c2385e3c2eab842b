"""Ingest: find series in a DICOM export and read them with exact geometry.

Public names are imported on first use (PEP 562), so ``import
monai_tumor.ingest`` stays cheap: the header scan must not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai_tumor.ingest.codecs import (
        can_decode,
        transfer_syntax_name,
    )
    from monai_tumor.ingest.enums import (
        ExecutorKind,
        FileKind,
        ImageKind,
        SkipReason,
    )
    from monai_tumor.ingest.groundtruth import (
        RoiInfo,
        list_rois,
        rtstruct_to_mask,
        seg_to_mask,
    )
    from monai_tumor.ingest.headers import (
        InstanceHeader,
        NonImageObject,
        SkippedFile,
        inspect_file,
        patient_hash,
        read_header,
    )
    from monai_tumor.ingest.index import (
        SeriesIndex,
    )
    from monai_tumor.ingest.monai_reader import (
        DicomSeriesReader,
    )
    from monai_tumor.ingest.reader import (
        DuplicateSliceWarning,
        NonUniformPolicy,
        OutputDtype,
        ReadOptions,
        TiltPolicy,
        is_volume_file,
        read_series,
        read_stacks,
    )
    from monai_tumor.ingest.scan import (
        PatientInfo,
        ScanResult,
        ScanStats,
        SeriesInfo,
        StackInfo,
        StudyInfo,
        default_index_path,
        scan_export,
        summarize_series,
    )
    from monai_tumor.ingest.selection import (
        SelectionResult,
        SelectionRules,
        SelectionStatus,
        load_inputs,
        load_rules,
        select_series,
    )
    from monai_tumor.ingest.sidecar import (
        acquisition_fields,
    )

_EXPORTS: dict[str, str] = {
    "DuplicateSliceWarning": "monai_tumor.ingest.reader",
    "NonUniformPolicy": "monai_tumor.ingest.reader",
    "OutputDtype": "monai_tumor.ingest.reader",
    "ReadOptions": "monai_tumor.ingest.reader",
    "TiltPolicy": "monai_tumor.ingest.reader",
    "is_volume_file": "monai_tumor.ingest.reader",
    "read_series": "monai_tumor.ingest.reader",
    "read_stacks": "monai_tumor.ingest.reader",
    "DicomSeriesReader": "monai_tumor.ingest.monai_reader",
    "ExecutorKind": "monai_tumor.ingest.enums",
    "FileKind": "monai_tumor.ingest.enums",
    "ImageKind": "monai_tumor.ingest.enums",
    "SkipReason": "monai_tumor.ingest.enums",
    "InstanceHeader": "monai_tumor.ingest.headers",
    "NonImageObject": "monai_tumor.ingest.headers",
    "SkippedFile": "monai_tumor.ingest.headers",
    "inspect_file": "monai_tumor.ingest.headers",
    "patient_hash": "monai_tumor.ingest.headers",
    "read_header": "monai_tumor.ingest.headers",
    "SeriesIndex": "monai_tumor.ingest.index",
    "PatientInfo": "monai_tumor.ingest.scan",
    "ScanResult": "monai_tumor.ingest.scan",
    "ScanStats": "monai_tumor.ingest.scan",
    "SeriesInfo": "monai_tumor.ingest.scan",
    "StackInfo": "monai_tumor.ingest.scan",
    "StudyInfo": "monai_tumor.ingest.scan",
    "default_index_path": "monai_tumor.ingest.scan",
    "scan_export": "monai_tumor.ingest.scan",
    "summarize_series": "monai_tumor.ingest.scan",
    "SelectionResult": "monai_tumor.ingest.selection",
    "SelectionRules": "monai_tumor.ingest.selection",
    "SelectionStatus": "monai_tumor.ingest.selection",
    "load_inputs": "monai_tumor.ingest.selection",
    "load_rules": "monai_tumor.ingest.selection",
    "select_series": "monai_tumor.ingest.selection",
    "RoiInfo": "monai_tumor.ingest.groundtruth",
    "list_rois": "monai_tumor.ingest.groundtruth",
    "rtstruct_to_mask": "monai_tumor.ingest.groundtruth",
    "seg_to_mask": "monai_tumor.ingest.groundtruth",
    "acquisition_fields": "monai_tumor.ingest.sidecar",
    "can_decode": "monai_tumor.ingest.codecs",
    "transfer_syntax_name": "monai_tumor.ingest.codecs",
}

__all__ = [
    "DicomSeriesReader",
    "DuplicateSliceWarning",
    "ExecutorKind",
    "FileKind",
    "ImageKind",
    "InstanceHeader",
    "NonImageObject",
    "NonUniformPolicy",
    "OutputDtype",
    "PatientInfo",
    "ReadOptions",
    "RoiInfo",
    "ScanResult",
    "ScanStats",
    "SelectionResult",
    "SelectionRules",
    "SelectionStatus",
    "SeriesIndex",
    "SeriesInfo",
    "SkipReason",
    "SkippedFile",
    "StackInfo",
    "StudyInfo",
    "TiltPolicy",
    "acquisition_fields",
    "can_decode",
    "default_index_path",
    "inspect_file",
    "is_volume_file",
    "list_rois",
    "load_inputs",
    "load_rules",
    "patient_hash",
    "read_header",
    "read_series",
    "read_stacks",
    "rtstruct_to_mask",
    "scan_export",
    "seg_to_mask",
    "select_series",
    "summarize_series",
    "transfer_syntax_name",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names with the module attributes."""
    return sorted(set(globals()) | set(__all__))
