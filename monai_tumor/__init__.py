"""monai-tumor: a DICOM-native tumour segmentation pipeline built on MONAI.

Each stage of the data flow is its own subpackage (``ingest``, ``transforms``,
``training``, ``inference``, ``postprocess``, ``export``, ``evaluation``, ``pipeline``,
``bundle``); ``cli`` only calls them. Geometry has one owner:
:mod:`monai_tumor.geometry`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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

try:  # the one place the version is written is pyproject.toml
    __version__ = version("monai-tumor")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

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
