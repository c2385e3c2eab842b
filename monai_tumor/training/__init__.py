"""Stage: training (see docs/architecture.md).

Bundles are trained through their own ``configs/train.json`` (MONAI ``ConfigWorkflow``);
this package only drives that and the TorchScript export.
"""

from monai_tumor.training.bundle_training import (
    export_torchscript,
    strip_torchscript_debug_info,
    train_bundle,
)

__all__ = ["export_torchscript", "strip_torchscript_debug_info", "train_bundle"]
