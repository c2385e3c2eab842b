"""Public names of ``monai_tumor.transforms`` (lazy_loader stub)."""

from .voi import (
    DEFAULT_VOI_GROWTH,
    DEFAULT_VOI_SPEC,
    FIELDS_OF_VIEW_KEY,
    VOI_META_KEY,
    BorderContact,
    CropVOIAroundPoint,
    CropVOIAroundPointd,
    FieldOfView,
    VOIGrowth,
    VOISpec,
    border_contact,
    paste_voi_mask,
    segment_growing_voi,
    voi_center_lps,
)

__all__ = [
    "DEFAULT_VOI_GROWTH",
    "DEFAULT_VOI_SPEC",
    "FIELDS_OF_VIEW_KEY",
    "VOI_META_KEY",
    "BorderContact",
    "CropVOIAroundPoint",
    "CropVOIAroundPointd",
    "FieldOfView",
    "VOIGrowth",
    "VOISpec",
    "border_contact",
    "paste_voi_mask",
    "segment_growing_voi",
    "voi_center_lps",
]
