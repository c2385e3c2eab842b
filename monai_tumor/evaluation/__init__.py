"""Evaluation: Dice, HD95 and surface Dice per class and case (MONAI metrics).

Public names are imported on first use (PEP 562), so ``import
monai_tumor.evaluation`` stays cheap: the header scan must not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai_tumor.evaluation.metrics import (
        CaseMetric,
        EvaluationOptions,
        evaluate,
        evaluate_case,
        write_metrics_csv,
    )

_EXPORTS: dict[str, str] = {
    "CaseMetric": "monai_tumor.evaluation.metrics",
    "EvaluationOptions": "monai_tumor.evaluation.metrics",
    "evaluate": "monai_tumor.evaluation.metrics",
    "evaluate_case": "monai_tumor.evaluation.metrics",
    "write_metrics_csv": "monai_tumor.evaluation.metrics",
}

__all__ = [
    "CaseMetric",
    "EvaluationOptions",
    "evaluate",
    "evaluate_case",
    "write_metrics_csv",
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
