"""Export: NIfTI, DICOM SEG and overlay pictures, every file written atomically.

Public names are imported on first use (PEP 562), so ``import
monai_tumor.export`` stays cheap: the header scan must not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai_tumor.export.atomic import (
        atomic_path,
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_text,
    )
    from monai_tumor.export.convert import (
        ConvertResult,
        convert_series,
    )
    from monai_tumor.export.nifti import (
        write_nifti,
    )
    from monai_tumor.export.overlay import (
        LUNG_WINDOW,
        SOFT_TISSUE_WINDOW,
        render_overlay,
    )
    from monai_tumor.export.seg import (
        AlgorithmInfo,
        SegExportConfig,
        SegmentAlgorithmType,
        SegmentSpec,
        read_back_seg,
        write_dicom_seg,
    )

_EXPORTS: dict[str, str] = {
    "AlgorithmInfo": "monai_tumor.export.seg",
    "SegExportConfig": "monai_tumor.export.seg",
    "SegmentAlgorithmType": "monai_tumor.export.seg",
    "SegmentSpec": "monai_tumor.export.seg",
    "read_back_seg": "monai_tumor.export.seg",
    "write_dicom_seg": "monai_tumor.export.seg",
    "LUNG_WINDOW": "monai_tumor.export.overlay",
    "SOFT_TISSUE_WINDOW": "monai_tumor.export.overlay",
    "render_overlay": "monai_tumor.export.overlay",
    "write_nifti": "monai_tumor.export.nifti",
    "ConvertResult": "monai_tumor.export.convert",
    "convert_series": "monai_tumor.export.convert",
    "atomic_path": "monai_tumor.export.atomic",
    "atomic_write_bytes": "monai_tumor.export.atomic",
    "atomic_write_json": "monai_tumor.export.atomic",
    "atomic_write_text": "monai_tumor.export.atomic",
}

__all__ = [
    "LUNG_WINDOW",
    "SOFT_TISSUE_WINDOW",
    "AlgorithmInfo",
    "ConvertResult",
    "SegExportConfig",
    "SegmentAlgorithmType",
    "SegmentSpec",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "convert_series",
    "read_back_seg",
    "render_overlay",
    "write_dicom_seg",
    "write_nifti",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names with the module attributes."""
    return sorted(set(globals()) | set(__all__))
