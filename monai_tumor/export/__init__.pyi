"""Public names of ``monai_tumor.export`` (lazy_loader stub)."""

from .atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from .convert import (
    ConvertResult,
    convert_series,
)
from .nifti import (
    write_nifti,
)
from .overlay import (
    LUNG_WINDOW,
    SOFT_TISSUE_WINDOW,
    render_overlay,
)
from .seg import (
    AlgorithmInfo,
    SegExportConfig,
    SegmentAlgorithmType,
    SegmentSpec,
    read_back_seg,
    write_dicom_seg,
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
