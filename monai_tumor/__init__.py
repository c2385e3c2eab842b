"""monai-tumor: a DICOM-native tumour segmentation pipeline built on MONAI.

Each stage of the data flow is its own subpackage (``ingest``, ``transforms``,
``models``, ``training``, ``inference``, ``postprocess``, ``export``,
``bundle``); ``cli`` only calls them. Geometry has one owner:
:mod:`monai_tumor.geometry`.
"""

from __future__ import annotations

from monai_tumor.errors import (
    BundleError,
    ConfigError,
    ExportError,
    IngestError,
    InvalidSeriesError,
    MonaiTumorError,
    PacsError,
    UnsupportedInputError,
)

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "ConfigError",
    "ExportError",
    "IngestError",
    "InvalidSeriesError",
    "MonaiTumorError",
    "PacsError",
    "UnsupportedInputError",
    "__version__",
]
