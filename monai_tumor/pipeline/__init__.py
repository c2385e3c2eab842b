"""Stage: pipeline - batch and single-case runs from DICOM/NIfTI input to exported results.

:func:`run_batch` processes a whole export (scan, select, read, segment, write,
report); :func:`infer_one` one series folder or NIfTI file(s). Both write the
same per-series outputs (:mod:`monai_tumor.pipeline.outputs`).
"""

from monai_tumor.pipeline.batch import (
    BatchOptions,
    BatchResult,
    SeriesRecord,
    SeriesStatus,
    run_batch,
)
from monai_tumor.pipeline.infer import InferOptions, InferResult, infer_one
from monai_tumor.pipeline.outputs import (
    OverlayStyle,
    SeriesOutputs,
    completed_manifest,
    series_key,
    study_key,
    write_series_outputs,
)
from monai_tumor.pipeline.report import read_summary, write_report

__all__ = [
    "BatchOptions",
    "BatchResult",
    "InferOptions",
    "InferResult",
    "OverlayStyle",
    "SeriesOutputs",
    "SeriesRecord",
    "SeriesStatus",
    "completed_manifest",
    "infer_one",
    "read_summary",
    "run_batch",
    "series_key",
    "study_key",
    "write_report",
    "write_series_outputs",
]
