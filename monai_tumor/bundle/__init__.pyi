"""Public names of ``monai_tumor.bundle`` (lazy_loader stub)."""

from .verify import (
    CHECK_NAMES,
    LAYOUT_KEY,
    CheckResult,
    CheckStatus,
    InputLayout,
    LayoutKind,
    VerifyReport,
    default_schema,
    read_input_layout,
    verify_bundle,
    write_synthetic_dataset,
)

__all__ = [
    "CHECK_NAMES",
    "LAYOUT_KEY",
    "CheckResult",
    "CheckStatus",
    "InputLayout",
    "LayoutKind",
    "VerifyReport",
    "default_schema",
    "read_input_layout",
    "verify_bundle",
    "write_synthetic_dataset",
]
