"""Bundle tooling: the offline ``bundle verify`` checker.

Public names are imported on first use (PEP 562), so ``import
monai_tumor.bundle`` stays cheap: the header scan must not pay for torch and MONAI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai_tumor.bundle.verify import (
        CheckResult,
        CheckStatus,
        VerifyReport,
        verify_bundle,
    )

_EXPORTS: dict[str, str] = {
    "CheckResult": "monai_tumor.bundle.verify",
    "CheckStatus": "monai_tumor.bundle.verify",
    "VerifyReport": "monai_tumor.bundle.verify",
    "verify_bundle": "monai_tumor.bundle.verify",
}

__all__ = [
    "CheckResult",
    "CheckStatus",
    "VerifyReport",
    "verify_bundle",
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
