"""Stage: pipeline - batch and single-case runs from DICOM/NIfTI input to exported results.

:func:`run_batch` processes a whole export (scan, select, read, segment, write,
report); :func:`infer_one` one series folder or NIfTI file(s). Both write the
same per-series outputs (:mod:`monai_tumor.pipeline.outputs`). A batch run is
planned (:func:`plan_batch` -> :class:`BatchPlan` of :class:`WorkItem`), run
(:func:`run_work_item`, one item -> one :class:`SeriesRecord`) and reported
(:class:`BatchReport`) by separate parts.
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
from monai_tumor.pipeline.plan import BatchPlan, RunContext, WorkItem, plan_batch
from monai_tumor.pipeline.report import BatchReport, read_summary, write_report
from monai_tumor.pipeline.runner import run_work_item

__all__ = [
    "BatchOptions",
    "BatchPlan",
    "BatchReport",
    "BatchResult",
    "InferOptions",
    "InferResult",
    "OverlayStyle",
    "RunContext",
    "SeriesOutputs",
    "SeriesRecord",
    "SeriesStatus",
    "WorkItem",
    "completed_manifest",
    "infer_one",
    "plan_batch",
    "read_summary",
    "run_batch",
    "run_work_item",
    "series_key",
    "study_key",
    "write_report",
    "write_series_outputs",
]
