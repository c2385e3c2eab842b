"""Score a lesion classifier on the masks a segmentation bundle draws, as the pipeline does.

A classification bundle's card reports its accuracy on reference masks. In ``infer`` and
``batch`` it never sees one: it classifies the lesions the segmentation bundle drew. This
module measures that path: every nodule volume of interest is segmented by the VOI bundle
seeded at the reference nodule's centroid (:meth:`~monai_tumor.inference.LoadedBundle.segment`,
the code ``infer`` runs), the largest lesion of the result is measured
(:func:`~monai_tumor.postprocess.lesions.measure_lesions`) and classified
(:meth:`~monai_tumor.inference.classifier.LoadedClassifier.classify`, the code that fills
``malignancy_probability``). The same classifier is also run on the reference mask through the
same code, so the two AUCs differ by the masks alone.

Run on the held-out patients of the project's nodule split::

    python -m monai_tumor.evaluation.classification --out DIR

writes ``DIR/nodules.csv`` (one row per nodule) and ``DIR/metrics.json`` (AUC with a
patient-level bootstrap interval, sensitivity at 90 % specificity and Brier score, for the
reference and the segmented masks).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monai_tumor.errors import MonaiTumorError

if TYPE_CHECKING:
    from monai.data import MetaTensor

    from monai_tumor.inference.bundle import LoadedBundle
    from monai_tumor.inference.classifier import LoadedClassifier

__all__ = ["ClassifiedNodule", "classify_nodule", "main", "summarise"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifiedNodule:
    """One nodule classified on its reference mask and on the segmentation bundle's mask.

    Attributes
    ----------
    case, patient
        VOI name (file name without ``.nii.gz``) and patient.
    malignant
        The label (1 malignant).
    dice
        Dice of the segmented mask against the reference on the VOI's grid (0 if the
        segmentation drew nothing).
    probability_reference
        Classifier output on the reference mask's largest lesion.
    probability_segmented
        Classifier output on the segmented mask's largest lesion; ``None`` if the segmentation
        drew nothing (the pipeline then reports no lesion, so no probability).
    lesions_segmented
        Lesions in the segmented mask (the seeded VOI normally gives one).
    """

    case: str
    patient: str
    malignant: int
    dice: float
    probability_reference: float
    probability_segmented: float | None
    lesions_segmented: int


def _largest_probability(
    classifier: LoadedClassifier, image: MetaTensor, mask: MetaTensor
) -> tuple[float | None, int]:
    from monai_tumor.postprocess.lesions import measure_lesions

    lesions = measure_lesions(mask, image)
    if not lesions:
        return None, 0
    return classifier.classify(image, mask, lesions[:1])[0], len(lesions)


def classify_nodule(
    image_path: str | Path,
    reference_path: str | Path,
    *,
    segmenter: LoadedBundle,
    classifier: LoadedClassifier,
    malignant: int,
    patient: str,
) -> ClassifiedNodule:
    """Segment one nodule VOI from its reference centroid and classify both masks.

    Parameters
    ----------
    image_path, reference_path
        The CT volume of interest and its reference nodule mask (same grid).
    segmenter
        A loaded VOI bundle (``bundles/lung_nodule_ct``).
    classifier
        A loaded classification bundle (``bundles/lung_nodule_malignancy``).
    malignant, patient
        Copied into the result.

    Raises
    ------
    MonaiTumorError
        If the mask is empty or not on the image's grid (the message names the file).
    """
    import torch
    from monai.data import MetaTensor

    from monai_tumor.evaluation.seeding import binary_dice
    from monai_tumor.inference.seeds import seeds_from_mask
    from monai_tumor.ingest import read_series

    image = read_series(Path(image_path))
    reference_volume = read_series(Path(reference_path))
    if tuple(reference_volume.shape) != tuple(image.shape) or not np.allclose(
        np.asarray(reference_volume.affine), np.asarray(image.affine), atol=1e-3
    ):
        raise MonaiTumorError(
            f"{reference_path}: the mask is not on the grid of {Path(image_path).name}"
        )
    reference = reference_volume.as_tensor()[0] > 0
    if not bool(reference.any()):
        raise MonaiTumorError(f"{reference_path}: the reference mask is empty")
    reference_mask = MetaTensor(reference[None].to(torch.uint8), affine=image.affine)
    segmented = segmenter.segment(image, seeds=seeds_from_mask(reference, image))
    inside = segmented.as_tensor()[0] > 0
    dice = binary_dice(inside.numpy(), reference.numpy())
    p_reference, _ = _largest_probability(classifier, image, reference_mask)
    p_segmented, count = _largest_probability(
        classifier, image, MetaTensor((inside[None]).to(torch.uint8), affine=image.affine)
    )
    if p_reference is None:  # pragma: no cover - the reference mask is not empty
        raise MonaiTumorError(f"{reference_path}: no lesion in the reference mask")
    return ClassifiedNodule(
        case=Path(image_path).name.removesuffix(".nii.gz"),
        patient=patient,
        malignant=int(malignant),
        dice=round(dice, 4),
        probability_reference=round(p_reference, 6),
        probability_segmented=None if p_segmented is None else round(p_segmented, 6),
        lesions_segmented=count,
    )


def summarise(nodules: Sequence[ClassifiedNodule], *, n_boot: int = 2000) -> dict[str, Any]:
    """AUC (patient-level bootstrap interval), sensitivity at 90 % specificity, Brier score.

    ``reference`` scores every nodule on its reference mask; ``segmented`` scores the nodules
    the segmentation found (``missed`` counts the others), ``paired_reference`` the reference
    masks of those same nodules. ``n_boot``: bootstrap resamples of the intervals.

    Raises
    ------
    MonaiTumorError
        If the nodules hold one class only.
    """
    from monai_tumor.training.malignancy import binary_metrics

    y = np.array([n.malignant for n in nodules], dtype=np.int64)
    if len(np.unique(y)) != 2:
        raise MonaiTumorError("the nodules hold one class only; an AUC needs both")
    patients = [n.patient for n in nodules]
    found = [i for i, n in enumerate(nodules) if n.probability_segmented is not None]
    p_ref = np.array([n.probability_reference for n in nodules])
    p_seg = np.array([nodules[i].probability_segmented for i in found], dtype=np.float64)
    found_patients = [patients[i] for i in found]
    return {
        "reference": binary_metrics(y, p_ref, patients, n_boot=n_boot),
        "segmented": binary_metrics(y[found], p_seg, found_patients, n_boot=n_boot),
        "paired_reference": binary_metrics(y[found], p_ref[found], found_patients, n_boot=n_boot),
        "missed": len(nodules) - len(found),
        "dice_mean": round(float(np.mean([n.dice for n in nodules])), 4),
        "mean_abs_probability_change": round(
            float(np.mean(np.abs(p_seg - p_ref[found]))) if found else 0.0, 4
        ),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Classify the held-out nodules of the project's split on reference and segmented masks."""
    from monai_tumor.config import data_root
    from monai_tumor.export.atomic import atomic_path, atomic_write_json
    from monai_tumor.inference import load_bundle
    from monai_tumor.inference.classifier import load_classifier
    from monai_tumor.training.malignancy import load_labels

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--segmenter", default="bundles/lung_nodule_ct", type=Path)
    ap.add_argument("--classifier", default="bundles/lung_nodule_malignancy", type=Path)
    ap.add_argument("--split", default="data/datasets/lidc_nodules_split.json", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--limit", type=int, default=0, help="first N held-out nodules (0: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = data_root()
    split = json.loads(args.split.read_text(encoding="utf-8"))
    held = set(split["folds"][0]["validation"])
    labels = load_labels(root / "lidc_nodules" / "MetadatabyNoduleMaxVoting.xlsx")
    cases = [c for c in split["cases"] if c["case"] in held and c["case"] in labels]
    if args.limit:
        cases = cases[: args.limit]
    segmenter = load_bundle(args.segmenter, device="cpu")
    classifier = load_classifier(args.classifier, device="cpu")
    nodules = []
    for k, c in enumerate(cases, start=1):
        nodules.append(
            classify_nodule(
                root / c["image"],
                root / c["label"],
                segmenter=segmenter,
                classifier=classifier,
                malignant=labels[c["case"]][0],
                patient=c["patient"],
            )
        )
        if k % 20 == 0 or k == len(cases):
            logger.info("%d/%d nodules", k, len(cases))
    rows = [asdict(n) for n in nodules]
    with (
        atomic_path(args.out / "nodules.csv") as tmp,
        tmp.open("w", newline="", encoding="utf-8") as fh,
    ):
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metrics = summarise(nodules)
    metrics["segmenter"] = str(args.segmenter)
    metrics["classifier"] = str(args.classifier)
    atomic_write_json(args.out / "metrics.json", metrics, indent=1)
    logger.info("metrics: %s", json.dumps(metrics))


if __name__ == "__main__":
    main()
