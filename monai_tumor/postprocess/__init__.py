"""Post-processing: per-lesion measurements of a label map.

Public names are imported on first use (PEP 562), so ``import
monai_tumor.postprocess`` stays cheap: the header scan must not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai_tumor.postprocess.lesions import (
        LESIONS_SCHEMA,
        Lesion,
        lesions_report,
        measure_lesions,
    )

_EXPORTS: dict[str, str] = {
    "LESIONS_SCHEMA": "monai_tumor.postprocess.lesions",
    "Lesion": "monai_tumor.postprocess.lesions",
    "lesions_report": "monai_tumor.postprocess.lesions",
    "measure_lesions": "monai_tumor.postprocess.lesions",
}

__all__ = [
    "LESIONS_SCHEMA",
    "Lesion",
    "lesions_report",
    "measure_lesions",
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
