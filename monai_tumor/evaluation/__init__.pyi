"""Public names of ``monai_tumor.evaluation`` (lazy_loader stub)."""

from .metrics import (
    CSV_COLUMNS,
    CaseMetric,
    EvaluationOptions,
    evaluate,
    evaluate_case,
    load_prediction,
    load_reference,
    match_cases,
    parse_label_groups,
    write_metrics_csv,
)

__all__ = [
    "CSV_COLUMNS",
    "CaseMetric",
    "EvaluationOptions",
    "evaluate",
    "evaluate_case",
    "load_prediction",
    "load_reference",
    "match_cases",
    "parse_label_groups",
    "write_metrics_csv",
]
