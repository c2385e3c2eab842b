"""Per-lesion IBSI radiomics features (MIRP) and their verification on the IBSI phantoms."""

from __future__ import annotations

from monai_tumor.radiomics.features import (
    LesionFeatures,
    compute_features,
    feature_columns,
    lesion_features,
)
from monai_tumor.radiomics.settings import (
    RADIOMICS_CONFIG,
    RadiomicsSettings,
    load_radiomics_settings,
)

__all__ = [
    "RADIOMICS_CONFIG",
    "LesionFeatures",
    "RadiomicsSettings",
    "compute_features",
    "feature_columns",
    "lesion_features",
    "load_radiomics_settings",
]
