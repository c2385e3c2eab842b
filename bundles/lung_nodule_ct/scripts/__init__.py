"""Helpers used by the lung_nodule_ct configs (depend only on monai, torch, numpy, nibabel)."""

from __future__ import annotations

from scripts import curves, datalist, transforms
from scripts.datalist import (
    case_name_formatter,
    full_ct_vois,
    inference_datalist,
    latest_checkpoint,
    load_split,
)

__all__ = [
    "case_name_formatter",
    "curves",
    "datalist",
    "full_ct_vois",
    "inference_datalist",
    "latest_checkpoint",
    "load_split",
    "transforms",
]
