"""Datalists for training (from the split file) and inference (a folder of VOI NIfTI files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "case_name_formatter",
    "full_ct_vois",
    "inference_datalist",
    "latest_checkpoint",
    "load_split",
]


def _read_split(split_file: str, fold: int) -> dict[str, Any]:
    """The split file's content, after checking that it has fold ``fold``."""
    with open(split_file, encoding="utf-8") as f:
        split: dict[str, Any] = json.load(f)
    count = len(split["folds"])
    if not 0 <= fold < count:
        raise ValueError(f"{split_file}: fold {fold} requested, the file has {count} folds")
    return split


def load_split(
    split_file: str,
    data_root: str,
    fold: int,
    part: str,
    label_key: str = "label",
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Return the ``part`` ("training" or "validation") cases of ``fold`` of the split file.

    Paths in the split file are relative to ``data_root`` (the folder holding ``lidc_nodules/``).
    ``label_key`` renames the reference mask entry; ``limit`` > 0 keeps only the first cases
    (smoke tests).
    """
    split = _read_split(split_file, fold)
    wanted = set(split["folds"][fold][part])
    items = []
    for it in split["cases"]:
        if it["case"] in wanted:
            items.append(
                {
                    "case": it["case"],
                    "image": os.path.join(data_root, it["image"]),
                    label_key: os.path.join(data_root, it["label"]),
                }
            )
    return items[:limit] if limit > 0 else items


def full_ct_vois(
    lesion_split_file: str, voi_dir: str, fold: int, part: str, *, limit: int = 0
) -> list[dict[str, Any]]:
    """Return the VOIs cut from the full CTs of ``part`` of ``fold`` of the lung-lesion split.

    ``lesion_split_file`` is ``data/datasets/lung_lesions_split.json``; ``voi_dir`` the
    folder its crops were cut into (``image/<case>_N<nodule>_C<crop>.nii.gz`` and
    ``label/...``, cut by the monai-tumor package's ``training.lung_lesions.cut_full_ct_vois``).
    An empty ``voi_dir`` gives no items (the nodule VOIs alone). A listed crop whose files
    are missing is an error: the crops must be cut before training. ``limit`` > 0 keeps only
    the first crops (smoke tests).
    """
    if not voi_dir:
        return []
    split = _read_split(lesion_split_file, fold)
    wanted = set(split["folds"][fold][f"{part}_full_ct"])
    items = []
    for entry in split["full_ct"]:
        if entry["case"] not in wanted:
            continue
        for nodule in entry["nodules"]:
            for index in range(len(nodule["crop_centres_lps"])):
                name = f"{entry['case']}_N{nodule['nodule']}_C{index}.nii.gz"
                image = os.path.join(voi_dir, "image", name)
                label = os.path.join(voi_dir, "label", name)
                for path in (image, label):
                    if not os.path.isfile(path):
                        raise FileNotFoundError(
                            f"{path}: crop listed in {lesion_split_file} not found; cut the "
                            f"full-CT VOIs into {voi_dir} first (cut_full_ct_vois)"
                        )
                items.append({"case": name.removesuffix(".nii.gz"), "image": image, "label": label})
    return items[:limit] if limit > 0 else items


def inference_datalist(dataset_dir: str) -> list[dict[str, Any]]:
    """One item per ``*.nii`` / ``*.nii.gz`` file (one CT VOI each) in ``dataset_dir``."""
    files = sorted(p for p in Path(dataset_dir).iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not files:
        raise FileNotFoundError(
            f"{dataset_dir}: no .nii or .nii.gz file found; expected one CT VOI per file"
        )
    return [
        {"image": str(p), "case": p.name.removesuffix(".gz").removesuffix(".nii")} for p in files
    ]


def case_name_formatter(metadict: dict[str, Any], saver: Any) -> dict[str, Any]:
    """Name the output after the input file (``IN/<case>.nii.gz`` -> ``OUT/<case>.nii.gz``)."""
    name = metadict.get("filename_or_obj", "case")
    if isinstance(name, (list, tuple)):
        name = name[0]
    base = Path(str(name)).name
    return {"subject": base.removesuffix(".gz").removesuffix(".nii"), "idx": None}


def latest_checkpoint(ckpt_dir: str) -> str:
    """Newest ``checkpoint*.pt`` (full training state) in ``ckpt_dir``, or "" if there is none."""
    found = sorted(Path(ckpt_dir).glob("checkpoint*.pt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else ""
