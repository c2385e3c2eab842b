"""Stage: inference (see docs/architecture.md).

Run a MONAI bundle in-process on a MetaTensor and get a label map on exactly the source
grid (:func:`load_bundle`, :meth:`LoadedBundle.segment`); seed points for volume-of-interest
bundles (:mod:`monai_tumor.inference.seeds`); device choice (:func:`select_device`).
"""

from monai_tumor.inference.bundle import (
    BundleInfo,
    BundleKind,
    LoadedBundle,
    load_bundle,
    read_bundle_info,
)
from monai_tumor.inference.device import select_device
from monai_tumor.inference.seeds import (
    Seed,
    seeds_from_csv,
    seeds_from_mask,
    seeds_from_rtstruct,
    seeds_from_seg,
)

__all__ = [
    "BundleInfo",
    "BundleKind",
    "LoadedBundle",
    "Seed",
    "load_bundle",
    "read_bundle_info",
    "seeds_from_csv",
    "seeds_from_mask",
    "seeds_from_rtstruct",
    "seeds_from_seg",
    "select_device",
]
