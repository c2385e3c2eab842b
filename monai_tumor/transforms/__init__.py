"""Stage: transforms (see docs/architecture.md)."""

from monai_tumor.transforms.voi import (
    DEFAULT_VOI_SPEC,
    VOI_META_KEY,
    CropVOIAroundPoint,
    CropVOIAroundPointd,
    VOISpec,
    paste_voi_mask,
    voi_center_lps,
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
