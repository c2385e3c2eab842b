"""Datalists for training (from the split file) and inference (one folder per case)."""

from __future__ import annotations

import json
import os
from glob import glob
from pathlib import Path
from typing import Any

__all__ = ["inference_datalist", "latest_checkpoint", "load_split"]


def _abs(root: str, item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key == "case":
            out[key] = value
        elif isinstance(value, list):
            out[key] = [os.path.join(root, v) for v in value]
        else:
            out[key] = os.path.join(root, value)
    return out


def load_split(
    split_file: str, data_root: str, fold: int, part: str, label_key: str = "label"
) -> list[dict[str, Any]]:
    """Return the ``part`` ("training" or "validation") cases of cross-validation ``fold``.

    Paths in the split file are relative to ``data_root`` (the folder holding ``brats/``).
    ``label_key`` renames the reference label entry (evaluation loads it after inference).
    """
    with open(split_file, encoding="utf-8") as f:
        split = json.load(f)
    folds = split["folds"]
    if not 0 <= fold < len(folds):
        raise ValueError(f"{split_file}: fold {fold} requested, the file has {len(folds)} folds")
    cases = set(folds[fold][part])
    items = [_abs(data_root, it) for it in split["cases"] if it["case"] in cases]
    for it in items:
        it[label_key] = it.pop("label")
    return items


def inference_datalist(dataset_dir: str) -> list[dict[str, Any]]:
    """One item per case folder of ``dataset_dir`` holding ``Flair*.nii*`` and ``T1c*.nii*``."""
    items = []
    for case in sorted(Path(dataset_dir).iterdir()):
        if not case.is_dir():
            continue
        flair = sorted(glob(str(case / "Flair*.nii*")))
        t1c = sorted(glob(str(case / "T1c*.nii*")))
        if flair and t1c:
            items.append({"image": [flair[0], t1c[0]], "case": case.name})
    if not items:
        raise FileNotFoundError(
            f"{dataset_dir}: no case folder holding Flair*.nii(.gz) and T1c*.nii(.gz) found; "
            "expected one sub-folder per case"
        )
    return items


def latest_checkpoint(ckpt_dir: str) -> str:
    """Newest ``checkpoint*.pt`` (full training state) in ``ckpt_dir``, or "" if there is none."""
    found = sorted(Path(ckpt_dir).glob("checkpoint*.pt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else ""
