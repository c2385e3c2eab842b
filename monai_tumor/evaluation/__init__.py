"""Evaluation: Dice, HD95 and surface Dice per class and case (MONAI metrics).

Public names are imported on first use (scientific-python SPEC 1, via
``lazy_loader``), so ``import monai_tumor.evaluation`` stays cheap: the header scan must
not pay for torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from monai_tumor.evaluation.metrics import (
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

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "metrics": [
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
        ],
    },
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
