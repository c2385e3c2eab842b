"""Post-processing: per-lesion measurements of a label map.

Public names are imported on first use (scientific-python SPEC 1, via
``lazy_loader``), so ``import monai_tumor.postprocess`` stays cheap: the header scan must
not pay for torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from monai_tumor.postprocess.lesions import (
        LESIONS_SCHEMA,
        Lesion,
        lesions_report,
        measure_lesions,
    )

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "lesions": ["LESIONS_SCHEMA", "Lesion", "lesions_report", "measure_lesions"],
    },
)

__all__ = [
    "LESIONS_SCHEMA",
    "Lesion",
    "lesions_report",
    "measure_lesions",
]
