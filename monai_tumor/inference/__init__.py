"""Stage: inference (see docs/architecture.md).

Run a MONAI bundle in-process on a MetaTensor and get a label map on exactly the source
grid (:func:`load_bundle`, :meth:`LoadedBundle.segment`); seed points for volume-of-interest
bundles (:mod:`monai_tumor.inference.seeds`); device choice (:func:`select_device`).

Example::

    from monai_tumor.inference import load_bundle, seeds_from_rtstruct
    from monai_tumor.ingest.reader import read_series
    from monai_tumor.ingest.selection import load_inputs

    glioma = load_bundle("bundles/brats_glioma_mri", device="auto")   # once per batch
    image = load_inputs(
        {"flair": flair_dir, "t1c": t1c_dir},
        reference=glioma.info.reference_input,
        order=glioma.info.input_names,
    )
    labels = glioma.segment(image)          # (1, I, J, K) uint8 0/1/2/4 on the FLAIR grid

    nodule = load_bundle("bundles/lung_nodule_ct")
    ct = read_series(ct_dir)
    mask = nodule.segment(ct, seeds=seeds_from_rtstruct(rs_file, ct, roi="GTV"))
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
    seeds_from_nifti,
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
    "seeds_from_nifti",
    "seeds_from_rtstruct",
    "seeds_from_seg",
    "select_device",
]
