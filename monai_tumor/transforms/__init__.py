"""MONAI transforms of the project (volume of interest around a point).

Public names are imported on first use (scientific-python SPEC 1, via
``lazy_loader``), so ``import monai_tumor.transforms`` stays cheap: the header scan must
not pay for torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from monai_tumor.transforms.voi import (
        DEFAULT_VOI_SPEC,
        VOI_META_KEY,
        CropVOIAroundPoint,
        CropVOIAroundPointd,
        VOISpec,
        paste_voi_mask,
        voi_center_lps,
    )

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "voi": [
            "DEFAULT_VOI_SPEC",
            "VOI_META_KEY",
            "CropVOIAroundPoint",
            "CropVOIAroundPointd",
            "VOISpec",
            "paste_voi_mask",
            "voi_center_lps",
        ],
    },
)

__all__ = [
    "DEFAULT_VOI_SPEC",
    "VOI_META_KEY",
    "CropVOIAroundPoint",
    "CropVOIAroundPointd",
    "VOISpec",
    "paste_voi_mask",
    "voi_center_lps",
]
