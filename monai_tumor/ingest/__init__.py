"""Ingest: find series in a DICOM export and read them with exact geometry.

Public names are imported on first use (scientific-python SPEC 1, via
``lazy_loader``), so ``import monai_tumor.ingest`` stays cheap: the header scan must
not pay for torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

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

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "reader": [
            "DuplicateSliceWarning",
            "NonUniformPolicy",
            "OutputDtype",
            "ReadOptions",
            "TiltPolicy",
            "is_volume_file",
            "read_series",
            "read_stacks",
        ],
        "monai_reader": ["DicomSeriesReader"],
        "enums": ["ExecutorKind", "FileKind", "ImageKind", "SkipReason"],
        "headers": [
            "InstanceHeader",
            "NonImageObject",
            "SkippedFile",
            "inspect_file",
            "patient_hash",
            "read_header",
        ],
        "index": ["SeriesIndex"],
        "scan": [
            "PatientInfo",
            "ScanResult",
            "ScanStats",
            "SeriesInfo",
            "StackInfo",
            "StudyInfo",
            "default_index_path",
            "scan_export",
            "summarize_series",
        ],
        "selection": [
            "SelectionResult",
            "SelectionRules",
            "SelectionStatus",
            "load_inputs",
            "load_rules",
            "select_series",
        ],
        "groundtruth": ["RoiInfo", "list_rois", "rtstruct_to_mask", "seg_to_mask"],
        "sidecar": ["acquisition_fields"],
        "codecs": ["can_decode", "transfer_syntax_name"],
    },
)

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
