"""Public names of ``monai_tumor.transforms`` (lazy_loader stub)."""

from .voi import (
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
