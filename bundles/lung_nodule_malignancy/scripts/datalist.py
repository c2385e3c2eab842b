"""Datalist and prediction writer for the lung_nodule_malignancy configs.

Depends only on monai, torch and the standard library (bundle rule).
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["PredictionCSVWriter", "inference_datalist"]


def inference_datalist(dataset_dir: str) -> list[dict[str, Any]]:
    """One item per ``image/<case>.nii.gz`` with its mask ``nodule_mask/<case>.nii.gz``.

    The layout of the project's shared LIDC data (``lidc_nodules/``): a CT volume of interest
    around each nodule in ``image/`` and a binary nodule mask of the same name in
    ``nodule_mask/``.
    """
    root = Path(dataset_dir)
    images = sorted(
        p for p in (root / "image").glob("*.nii*") if p.name.endswith((".nii", ".nii.gz"))
    )
    if not images:
        raise FileNotFoundError(
            f"{root / 'image'}: no .nii or .nii.gz file found; expected CT VOIs in "
            "DATASET_DIR/image/ and same-named nodule masks in DATASET_DIR/nodule_mask/"
        )
    items = []
    for p in images:
        mask = root / "nodule_mask" / p.name
        if not mask.is_file():
            raise FileNotFoundError(
                f"{mask}: the nodule mask for {p} is missing; every image/<case>.nii.gz "
                "needs nodule_mask/<case>.nii.gz"
            )
        case = p.name.removesuffix(".gz").removesuffix(".nii")
        items.append({"image": str(p), "mask": str(mask), "case": case})
    return items


class PredictionCSVWriter:
    """Ignite handler: collect ``sigmoid(pred)`` per case, write ``predictions.csv`` at the end.

    Columns ``case`` and ``malignancy_probability``; the file is written to a temporary name
    and renamed, so it is complete or absent.
    """

    def __init__(self, output_dir: str, filename: str = "predictions.csv") -> None:
        self.output_dir = output_dir
        self.filename = filename
        self.rows: list[tuple[str, float]] = []

    def attach(self, engine: Any) -> None:
        from monai.utils import min_version, optional_import

        events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
        engine.add_event_handler(events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(events.COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows = []

    def _collect(self, engine: Any) -> None:
        batch = engine.state.batch
        output = engine.state.output
        items = batch if isinstance(batch, list) else [batch]
        outs = output if isinstance(output, list) else [output]
        for item, out in zip(items, outs, strict=True):
            prob = torch.as_tensor(out["pred"]).reshape(-1)[0].item()
            case = item["case"]
            if isinstance(case, (list, tuple)):
                case = case[0]
            self.rows.append((str(case), float(prob)))

    def _write(self, engine: Any) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.output_dir, suffix=".tmp")
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["case", "malignancy_probability"])
            for case, prob in self.rows:
                w.writerow([case, f"{prob:.6f}"])
        os.replace(tmp, os.path.join(self.output_dir, self.filename))
