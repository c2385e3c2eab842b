"""Public names of ``monai_tumor.ingest`` (lazy_loader stub)."""

from .codecs import (
    can_decode,
    transfer_syntax_name,
)
from .enums import (
    ExecutorKind,
    FileKind,
    ImageKind,
    SkipReason,
)
from .groundtruth import (
    RoiInfo,
    list_rois,
    rtstruct_to_mask,
    seg_to_mask,
)
from .headers import (
    inspect_dataset,
    inspect_file,
    patient_hash,
    read_header,
)
from .index import (
    SeriesIndex,
)
from .monai_reader import (
    DicomSeriesReader,
)
from .reader import (
    DuplicateSliceWarning,
    NonUniformPolicy,
    OutputDtype,
    ReadOptions,
    TiltPolicy,
    is_nifti,
    is_volume_file,
    read_series,
    read_stacks,
)
from .records import (
    InstanceHeader,
    NonImageObject,
    SkippedFile,
)
from .scan import (
    ScanResult,
    ScanStats,
    scan_export,
)
from .selection import (
    SelectionResult,
    SelectionRules,
    SelectionStatus,
    load_inputs,
    load_rules,
    select_series,
)
from .series import (
    PatientInfo,
    SeriesInfo,
    StackInfo,
    StudyInfo,
    summarize_series,
)
from .sidecar import (
    acquisition_fields,
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
    "inspect_dataset",
    "inspect_file",
    "is_nifti",
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
