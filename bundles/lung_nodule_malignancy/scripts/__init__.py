"""Helpers used by the lung_nodule_malignancy configs (depend only on monai, torch, nibabel)."""

from __future__ import annotations

from scripts import datalist, network, training
from scripts.datalist import PredictionCSVWriter, inference_datalist
from scripts.network import FEATURE_NAMES, NoduleMalignancyNet, mask_features

__all__ = [
    "FEATURE_NAMES",
    "NoduleMalignancyNet",
    "PredictionCSVWriter",
    "datalist",
    "inference_datalist",
    "mask_features",
    "network",
    "training",
]
