"""MONAI transforms of the project (volume of interest around a point).

Public names are imported on first use (PEP 562), so ``import
monai_tumor.transforms`` stays cheap: the header scan must not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai_tumor.transforms.voi import (
        CropVOIAroundPoint,
        CropVOIAroundPointd,
        VOISpec,
        paste_voi_mask,
        voi_center_lps,
    )

_EXPORTS: dict[str, str] = {
    "CropVOIAroundPoint": "monai_tumor.transforms.voi",
    "CropVOIAroundPointd": "monai_tumor.transforms.voi",
    "VOISpec": "monai_tumor.transforms.voi",
    "paste_voi_mask": "monai_tumor.transforms.voi",
    "voi_center_lps": "monai_tumor.transforms.voi",
}

__all__ = [
    "CropVOIAroundPoint",
    "CropVOIAroundPointd",
    "VOISpec",
    "paste_voi_mask",
    "voi_center_lps",
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
