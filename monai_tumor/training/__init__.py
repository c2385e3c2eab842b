"""Stage: training (see docs/architecture.md).

Bundles are trained through their own ``configs/train.json`` (MONAI ``ConfigWorkflow``);
this package only drives that (a full run, or fine-tuning on corrected labels) and the
TorchScript export.
"""

from monai_tumor.training.bundle_training import (
    export_torchscript,
    strip_torchscript_debug_info,
    train_bundle,
)
from monai_tumor.training.finetune import FinetuneResult, finetune_bundle

__all__ = [
    "FinetuneResult",
    "export_torchscript",
    "finetune_bundle",
    "strip_torchscript_debug_info",
    "train_bundle",
]
