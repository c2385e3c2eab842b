"""Helpers used by the brats_glioma_mri configs (depend only on monai, torch, numpy, nibabel)."""

from __future__ import annotations

from scripts import curves, datalist, transforms
from scripts.datalist import inference_datalist, latest_checkpoint, load_split
from scripts.transforms import (
    BrainZScored,
    BratsLabelsToTcWtEtd,
    TcWtEtToBratsLabelsd,
    ZeroBackgroundd,
    case_name_formatter,
)

__all__ = [
    "BrainZScored",
    "BratsLabelsToTcWtEtd",
    "TcWtEtToBratsLabelsd",
    "ZeroBackgroundd",
    "case_name_formatter",
    "curves",
    "datalist",
    "inference_datalist",
    "latest_checkpoint",
    "load_split",
    "transforms",
]
