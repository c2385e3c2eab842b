"""Export: NIfTI, DICOM SEG and overlay pictures, every file written atomically.

Public names are imported on first use (scientific-python SPEC 1, via
``lazy_loader``), so ``import monai_tumor.export`` stays cheap: the header scan must
not pay for torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

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

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "seg": [
            "AlgorithmInfo",
            "SegExportConfig",
            "SegmentAlgorithmType",
            "SegmentSpec",
            "read_back_seg",
            "write_dicom_seg",
        ],
        "overlay": ["LUNG_WINDOW", "SOFT_TISSUE_WINDOW", "render_overlay"],
        "nifti": ["write_nifti"],
        "convert": ["ConvertResult", "convert_series"],
        "atomic": ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"],
    },
)

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
