"""Bundle tooling: the offline ``bundle verify`` checker.

Public names are imported on first use (scientific-python SPEC 1, via
``lazy_loader``), so ``import monai_tumor.bundle`` stays cheap: the header scan must
not pay for torch and MONAI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

if TYPE_CHECKING:
    from monai_tumor.bundle.verify import (
        CHECK_NAMES,
        LAYOUT_KEY,
        CheckResult,
        CheckStatus,
        InputLayout,
        LayoutKind,
        VerifyReport,
        default_schema_path,
        read_input_layout,
        verify_bundle,
        write_synthetic_dataset,
    )

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "verify": [
            "CHECK_NAMES",
            "LAYOUT_KEY",
            "CheckResult",
            "CheckStatus",
            "InputLayout",
            "LayoutKind",
            "VerifyReport",
            "default_schema_path",
            "read_input_layout",
            "verify_bundle",
            "write_synthetic_dataset",
        ],
    },
)

__all__ = [
    "CHECK_NAMES",
    "LAYOUT_KEY",
    "CheckResult",
    "CheckStatus",
    "InputLayout",
    "LayoutKind",
    "VerifyReport",
    "default_schema_path",
    "read_input_layout",
    "verify_bundle",
    "write_synthetic_dataset",
]
