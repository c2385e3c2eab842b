"""Public names of ``monai_tumor.postprocess`` (lazy_loader stub)."""

from .lesions import (
    LESIONS_SCHEMA,
    Lesion,
    lesions_report,
    mark_image_edge,
    mark_truncated,
    measure_lesions,
)
from .review import (
    TTA_AGREEMENT_KEY,
    ReviewResult,
    ReviewSpec,
    input_statistics,
    read_review_spec,
    review_prediction,
    review_segmentation,
    rim_fraction,
)

__all__ = [
    "LESIONS_SCHEMA",
    "TTA_AGREEMENT_KEY",
    "Lesion",
    "ReviewResult",
    "ReviewSpec",
    "input_statistics",
    "lesions_report",
    "mark_image_edge",
    "mark_truncated",
    "measure_lesions",
    "read_review_spec",
    "review_prediction",
    "review_segmentation",
    "rim_fraction",
]
