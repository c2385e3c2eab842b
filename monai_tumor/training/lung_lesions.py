"""Training data for a lung-lesion model of every size: nodule crops, full-CT VOIs, check case.

The nodule bundle was trained on tight LIDC crops (most end on the nodule's first and last
slice). A model for lesions of every size, seeded anywhere inside them on a full CT, needs
crops cut from full CTs with real lung around the lesion, centred on random points inside
it. :func:`build_lung_lesion_split` writes that dataset list (a JSON file in
``data/datasets/``): the LIDC VOIs and their patient-level split unchanged, every consensus
nodule >= 3 mm of each full LIDC CT (``lidc_full/``, readers' XML at 50 % agreement, see
:mod:`monai_tumor.ingest.lidc_xml`) with random crop centres inside it, assigned to the
split of its patient, and LUNG1-001's GTV-1 as a check case (one large tumour: a check,
never a validation set). :func:`cut_full_ct_vois` cuts those crops (image and consensus
label) to NIfTI files a bundle's ``train.json`` reads like the LIDC VOIs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_tumor.errors import ConfigError
from monai_tumor.evaluation.seeding import inner_points
from monai_tumor.export.atomic import atomic_path
from monai_tumor.ingest.lidc_xml import lidc_consensus
from monai_tumor.ingest.reader import read_series
from monai_tumor.transforms.voi import CropVOIAroundPoint, VOISpec

__all__ = [
    "FULL_CT_VOI_SPEC",
    "build_lung_lesion_split",
    "cut_full_ct_vois",
]

#: Crops cut from full CTs: the bundle's spacing, a box with room around a nodule in every
#: direction (48 x 48 x 32 voxels = 33.75 x 33.75 x 40 mm), so that a nodule no longer
#: touches the crop's first and last slice.
FULL_CT_VOI_SPEC = VOISpec(size_mm=(33.75, 33.75, 40.0), spacing_mm=(0.703125, 0.703125, 1.25))


def _rel(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()


def build_lung_lesion_split(
    data_root: str | os.PathLike[str],
    base_split: str | os.PathLike[str],
    *,
    crops_per_nodule: int = 16,
    seed: int = 20261205,
    spec: VOISpec = FULL_CT_VOI_SPEC,
) -> dict[str, Any]:
    """Build the dataset list of the lung-lesion model (LIDC VOIs, full-CT VOIs, check case).

    Parameters
    ----------
    data_root
        The shared data folder (``monai_tumor.config.data_root()``); every path in the result
        is relative to it.
    base_split
        The nodule split (``data/datasets/lidc_nodules_split.json``): its cases and fold are
        kept as they are, so held-out scores stay comparable.
    crops_per_nodule
        Crop centres drawn per full-CT nodule (uniformly among its consensus voxels).
    seed
        Seed of the generator drawing the crop centres.
    spec
        The crop box recorded in the list (:data:`FULL_CT_VOI_SPEC`).

    Returns
    -------
    dict
        JSON-ready: ``extends`` (the base split's file name: its ``cases`` and fold 0 are
        the LIDC VOIs and their split, not repeated), ``full_ct`` (per full LIDC CT: DICOM
        folder, XML, split, nodules with readers, volume, diameter, centroid and
        ``crop_centres_lps``), ``check`` (LUNG1-001 GTV-1), ``voi_spec`` and ``folds``
        (``nodule_fold``, ``training_full_ct`` / ``validation_full_ct``, ``check``).

    Raises
    ------
    ConfigError
        If the base split has no fold. (A full CT whose patient has no LIDC VOI goes to
        training: it cannot leak into the held-out VOIs.)
    """
    root = Path(data_root)
    base = json.loads(Path(base_split).read_text(encoding="utf-8"))
    if not base.get("folds"):
        raise ConfigError("the base split has no folds", path=Path(base_split))
    fold = base["folds"][0]
    validation_patients = set(fold.get("validation_patients", []))
    rng = np.random.default_rng(seed)
    full_ct: list[dict[str, Any]] = []
    for case in sorted((root / "lidc_full").glob("LIDC-IDRI-*")):
        patient = case.name
        # A patient without VOIs goes to training: it cannot leak into the held-out VOIs.
        split = "validation" if patient in validation_patients else "training"
        ct = read_series(case / "dicom")
        nodules = []
        for number, nodule in enumerate(lidc_consensus(case / "annotations.xml", ct), start=1):
            if nodule.diameter_mm < 3.0 or not nodule.mask.any():
                continue
            centres = inner_points(nodule.mask, ct, count=crops_per_nodule, rng=rng)
            nodules.append(
                {
                    "nodule": number,
                    "readers": len(nodule.readers),
                    "malignancy": list(nodule.malignancy),
                    "volume_ml": round(nodule.volume_ml, 3),
                    "diameter_mm": round(nodule.diameter_mm, 2),
                    "centroid_lps": [round(v, 2) for v in nodule.centroid_lps],
                    "crop_centres_lps": [[round(float(v), 2) for v in c] for c in centres],
                }
            )
        full_ct.append(
            {
                "case": patient,
                "patient": patient,
                "split": split,
                "image": _rel(case / "dicom", root),
                "annotations": _rel(case / "annotations.xml", root),
                "reference": "LIDC readers' consensus at 50 % agreement",
                "nodules": nodules,
            }
        )
    check = []
    lung1 = root / "lung1" / "LUNG1-001"
    if lung1.is_dir():
        rtstruct = sorted((lung1 / "mask_rtstruct").rglob("*.dcm"))
        check.append(
            {
                "case": "LUNG1-001",
                "patient": "LUNG1-001",
                "image": _rel(lung1 / "image", root),
                "rtstruct": _rel(rtstruct[0], root) if rtstruct else "",
                "roi": "GTV-1",
            }
        )
    return {
        "description": (
            "Lung lesions of every size (lung_nodule_ct successor). Extends "
            "lidc_nodules_split.json: its LIDC VOIs, intensity statistics and patient-level "
            "fold are used unchanged (not repeated here); added: VOIs cut from the "
            "full LIDC CTs (lidc_full/) around every consensus nodule >= 3 mm, centred on "
            "random points inside the nodule (crop_centres_lps, LPS mm), each full CT in the "
            "split of its patient's VOIs; LUNG1-001 GTV-1 as a check case (never trained "
            "on, never used to choose). Paths relative to the data root (MONAI_TUMOR_DATA)."
        ),
        "license": "LIDC-IDRI CC BY 3.0; NSCLC-Radiomics (LUNG1) CC BY-NC 3.0",
        "extends": Path(base_split).name,
        "seed": seed,
        "voi_spec": {
            "size_mm": list(spec.size_mm),
            "spacing_mm": list(spec.spacing_mm),
            "pad_value": spec.pad_value,
        },
        "full_ct": full_ct,
        "check": check,
        "folds": [
            {
                "nodule_fold": 0,
                "training_full_ct": [c["case"] for c in full_ct if c["split"] == "training"],
                "validation_full_ct": [c["case"] for c in full_ct if c["split"] == "validation"],
                "check": [c["case"] for c in check],
            }
        ],
    }


def cut_full_ct_vois(
    entry: Mapping[str, Any],
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    spec: VOISpec = FULL_CT_VOI_SPEC,
) -> list[tuple[Path, Path]]:
    """Cut the listed crops of one full CT (image and consensus label) to NIfTI files.

    Parameters
    ----------
    entry
        One item of ``full_ct`` from :func:`build_lung_lesion_split`.
    data_root
        The shared data folder the entry's paths are relative to.
    out_dir
        Where ``image/<case>_N<nodule>_C<crop>.nii.gz`` and ``label/...`` go (written
        atomically; existing files are kept, so an interrupted run resumes).
    spec
        The crop box.

    Returns
    -------
    list of tuple of Path
        ``(image, label)`` pairs, in the entry's order.
    """
    root = Path(data_root)
    out = Path(out_dir)
    ct = read_series(root / entry["image"])
    nodules = {i: n for i, n in enumerate(lidc_consensus(root / entry["annotations"], ct), 1)}
    label_full = MetaTensor(
        torch.zeros((1, *ct.shape[1:]), dtype=torch.float32), affine=ct.affine, meta={}
    )
    crop_image = CropVOIAroundPoint(spec=spec, mode="bilinear")
    crop_label = CropVOIAroundPoint(spec=spec, mode="nearest")
    pairs: list[tuple[Path, Path]] = []
    for record in entry["nodules"]:
        number = int(record["nodule"])
        if number not in nodules:
            raise ConfigError(
                f"{entry['case']}: nodule {number} of the dataset list is not among the "
                f"{len(nodules)} consensus nodules of its XML; rebuild the list"
            )
        label_full[0] = torch.as_tensor(nodules[number].mask, dtype=torch.float32)
        for index, centre in enumerate(record["crop_centres_lps"]):
            name = f"{entry['case']}_N{number}_C{index}.nii.gz"
            pair = (out / "image" / name, out / "label" / name)
            if not (pair[0].exists() and pair[1].exists()):
                image_voi = crop_image(ct, centre)
                label_voi = crop_label(label_full, centre)
                for path, voi, dtype in (
                    (pair[0], image_voi, np.int16),
                    (pair[1], label_voi, np.uint8),
                ):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    data = np.rint(np.asarray(voi.as_tensor()[0].numpy())).astype(dtype)
                    affine = np.asarray(torch.as_tensor(voi.affine).numpy())
                    with atomic_path(path, suffix=".nii.gz") as tmp:
                        nib.save(nib.Nifti1Image(data, affine), tmp)
            pairs.append(pair)
    return pairs
