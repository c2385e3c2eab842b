"""Training helpers of the lung_nodule_malignancy configs (monai, torch, nibabel only).

``configs/train.json`` fits the released model (``mode: "features"``): the eight mask
features are standardised with the mean and standard deviation of the training nodules
(:func:`fit_feature_scaling`, run once before the first epoch), then the linear head is
fitted by gradient descent on the binary cross-entropy with an L2 penalty: a logistic
regression, trained through MONAI's ``SupervisedTrainer``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from scripts.network import NoduleMalignancyNet

__all__ = ["as_label", "fit_feature_scaling", "labelled_datalist"]


def labelled_datalist(datalist_file: str, dataset_dir: str, section: str) -> list[dict[str, Any]]:
    """Items ``{"image", "mask", "label", "case"}`` of one section of a datalist JSON.

    The file has the Medical Segmentation Decathlon form, one list per section::

        {"training": [{"image": "image/A.nii.gz", "mask": "nodule_mask/A.nii.gz",
                       "label": 1}, ...],
         "validation": [...]}

    Relative paths are resolved against ``dataset_dir``; ``label`` is 1 for a malignant
    nodule, 0 for a benign one.
    """
    path = Path(datalist_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: datalist not found; expected a JSON file with a {section!r} list of "
            '{"image", "mask", "label"} items (see docs/README.md, "Training")'
        )
    items = json.loads(path.read_text(encoding="utf-8")).get(section)
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: no {section!r} list of items found")
    root = Path(dataset_dir)
    out = []
    for item in items:
        label = int(item["label"])
        if label not in (0, 1):
            raise ValueError(f"{path}: label {item['label']!r} of {item['image']}; expected 0 or 1")
        image = root / item["image"]
        out.append(
            {
                "image": str(image),
                "mask": str(root / item["mask"]),
                "label": label,
                "case": image.name.removesuffix(".gz").removesuffix(".nii"),
            }
        )
    return out


def as_label(value: Any) -> torch.Tensor:
    """Label ``0``/``1`` as a float tensor of shape ``(1,)`` (batches become ``(B, 1)``)."""
    return torch.as_tensor([float(value)], dtype=torch.float32)


def fit_feature_scaling(network: NoduleMalignancyNet, batches: Iterable[dict[str, Any]]) -> None:
    """Set ``feature_mean``/``feature_std`` to the statistics of the training nodules.

    Run before training (``initialize`` of ``configs/train.json``); ``batches`` yields the
    preprocessed training batches (key ``image``).
    """
    from scripts.network import mask_features

    rows = []
    with torch.no_grad():
        for batch in batches:
            x = torch.as_tensor(batch["image"]).float()
            rows.append(
                mask_features(
                    x, pixdim=network.pixdim, hu_low=network.hu_low, hu_high=network.hu_high
                )
            )
        raw = torch.cat(rows).double()
        mean, std = network.get_buffer("feature_mean"), network.get_buffer("feature_std")
        mean.copy_(raw.mean(0).to(mean.device))
        std.copy_(raw.std(0).clamp_min(1e-3).to(std.device))
