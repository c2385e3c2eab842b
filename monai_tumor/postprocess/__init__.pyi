"""Public names of ``monai_tumor.postprocess`` (lazy_loader stub)."""

from .lesions import (
    LESIONS_SCHEMA,
    Lesion,
    lesions_report,
    measure_lesions,
)

__all__ = [
    "LESIONS_SCHEMA",
    "Lesion",
    "lesions_report",
    "measure_lesions",
]
