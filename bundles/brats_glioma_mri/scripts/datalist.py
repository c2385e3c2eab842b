"""Datalists for training (from the split file) and inference (one folder per case)."""

from __future__ import annotations

import json
import os
from glob import escape, glob
from pathlib import Path
from typing import Any

__all__ = [
    "CHANNEL_PATTERNS",
    "case_images",
    "inference_datalist",
    "latest_checkpoint",
    "load_split",
]

#: File name patterns per layout, in the order tried: (name, FLAIR pattern, T1c patterns).
#: ``{case}`` is the case folder's name (BraTS names every file after its case).
CHANNEL_PATTERNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Flair*/T1c* files", "Flair*.nii*", ("T1c*.nii*",)),
    (
        "BraTS 2017-2021 naming",
        "{case}_flair.nii*",
        ("{case}_t1ce.nii*", "{case}_t1gd.nii*"),
    ),
    ("BraTS 2023 naming", "{case}-t2f.nii*", ("{case}-t1c.nii*",)),
)


#: Split-file keys holding paths relative to the data root (others, e.g. ``case``, ``patient``,
#: ``site``, ``grade``, are copied as they are).
_PATH_KEYS = ("image", "label", "brainmask")


def _abs(root: str, item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in item.items():
        if key not in _PATH_KEYS:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [os.path.join(root, v) for v in value]
        else:
            out[key] = os.path.join(root, value)
    return out


def load_split(
    split_file: str,
    data_root: str,
    fold: int,
    part: str,
    label_key: str = "label",
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Return the ``part`` ("training" or "validation") cases of cross-validation ``fold``.

    Paths in the split file are relative to ``data_root`` (the folder holding ``brats/`` and
    ``brats2018/``). ``label_key`` renames the reference label entry (evaluation loads it
    after inference). ``limit`` > 0 keeps the first ``limit`` cases (smoke runs).
    """
    with open(split_file, encoding="utf-8") as f:
        split = json.load(f)
    folds = split["folds"]
    if not 0 <= int(fold) < len(folds):
        raise ValueError(f"{split_file}: fold {fold} requested, the file has {len(folds)} folds")
    cases = set(folds[int(fold)][part])
    items = [_abs(data_root, it) for it in split["cases"] if it["case"] in cases]
    for it in items:
        it[label_key] = it.pop("label")
    return items[: int(limit)] if int(limit) > 0 else items


def _first(folder: Path, pattern: str) -> str:
    found = sorted(glob(os.path.join(escape(str(folder)), pattern)))
    return found[0] if found else ""


def case_images(case_dir: str | Path) -> list[str] | None:
    """FLAIR and T1c files of one case folder, or None if it holds neither layout.

    Tries each layout of :data:`CHANNEL_PATTERNS` in turn; within BraTS naming the T1c file
    may end in ``_t1ce`` or ``_t1gd``. The first layout with both channels present wins.
    """
    folder = Path(case_dir)
    case = escape(folder.name)
    for _name, flair_pattern, t1c_patterns in CHANNEL_PATTERNS:
        flair = _first(folder, flair_pattern.format(case=case))
        if not flair:
            continue
        for t1c_pattern in t1c_patterns:
            t1c = _first(folder, t1c_pattern.format(case=case))
            if t1c:
                return [flair, t1c]
    return None


def _patterns_text() -> str:
    parts = []
    for name, flair_pattern, t1c_patterns in CHANNEL_PATTERNS:
        t1c = " or ".join(p.format(case="<case>") for p in t1c_patterns)
        parts.append(f"{name}: {flair_pattern.format(case='<case>')} + {t1c}")
    return "; ".join(parts)


def inference_datalist(dataset_dir: str) -> list[dict[str, Any]]:
    """One item per case folder of ``dataset_dir`` holding a FLAIR and a T1c volume.

    A case folder holds either ``Flair*.nii*`` + ``T1c*.nii*`` or BraTS naming
    ``<case>_flair.nii.gz`` + ``<case>_t1ce.nii.gz`` (or ``_t1gd``), or BraTS 2023 naming
    ``<case>-t2f.nii.gz`` + ``<case>-t1c.nii.gz``, where ``<case>`` is the folder's name.

    Raises
    ------
    FileNotFoundError
        If ``dataset_dir`` has no sub-folder, or a sub-folder holds neither layout (the
        message names the folder and the patterns tried).
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{dataset_dir}: dataset folder not found; expected one sub-folder per case"
        )
    items = []
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        images = case_images(case)
        if images is None:
            raise FileNotFoundError(
                f"{case}: no FLAIR + T1c pair found (patterns tried: {_patterns_text()}); "
                "rename the files to one of these layouts or move the folder out of the dataset"
            )
        items.append({"image": images, "case": case.name})
    if not items:
        raise FileNotFoundError(
            f"{dataset_dir}: no case folder found; expected one sub-folder per case holding "
            f"FLAIR and T1c NIfTI files ({_patterns_text()})"
        )
    return items


def latest_checkpoint(ckpt_dir: str) -> str:
    """Newest ``checkpoint*.pt`` (full training state) in ``ckpt_dir``, or "" if there is none."""
    found = sorted(Path(ckpt_dir).glob("checkpoint*.pt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else ""
