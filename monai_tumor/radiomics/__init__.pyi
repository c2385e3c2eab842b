"""Public names of ``monai_tumor.radiomics`` (lazy_loader stub)."""

from .extract import compute_features, feature_columns
from .features import LesionFeatures, lesion_features
from .pool import FeaturePool
from .settings import RADIOMICS_CONFIG, RadiomicsSettings, load_radiomics_settings

__all__ = [
    "RADIOMICS_CONFIG",
    "FeaturePool",
    "LesionFeatures",
    "RadiomicsSettings",
    "compute_features",
    "feature_columns",
    "lesion_features",
    "load_radiomics_settings",
]
