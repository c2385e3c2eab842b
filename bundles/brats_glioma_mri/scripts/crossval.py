"""Cross-validation of the fold models on the 1 mm input grid, with post-processing variants.

Run from the bundle root (depends only on monai, torch, numpy, nibabel; scipy if present)::

    python -m scripts.crossval --split_file ../../data/datasets/brats26_split.json \\
        --config_file configs/inference.json --data_root "$MONAI_TUMOR_DATA" \\
        --ckpt "RUN/fold{fold}/eval/checkpoints/checkpoint_last.pt" \\
        --out_dir RUN/crossval [--folds 0,1,2,3,4]

Each fold's model segments the validation cases of its fold with the given inference
config's preprocessing, sliding-window inferer and mirroring TTA; the probabilities
are mapped back to the input grid (``Invertd``) and every post-processing variant is scored
there: TTA off/on x largest component of TC and WT off/on x tiny-ET removal thresholds. Dice
per region (TC = 1|4, WT > 0, ET = 4 of the written label map; a region empty in both the
reference and the prediction scores 1, empty in one of them 0). Writes ``cases.json`` (one
row per case and variant), ``summary.json`` (per variant: mean per region, per fold,
patient-level bootstrap 95 % intervals, per site group and grade) and per case the label
maps without and with TTA (no other post-processing), ``<case>.nii.gz`` and
``<case>_tta.nii.gz``, on the input grid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Invertd

from scripts.datalist import load_split
from scripts.ensemble import member_weights
from scripts.transforms import (
    TTA_AGREEMENT_KEY,
    SmallEnhancingToCored,
    brats_labels_to_tc_wt_et,
    dice,
    largest_component,
    tc_wt_et_to_brats_labels,
)

__all__ = ["ET_MIN_VOXELS", "REGIONS", "bootstrap_ci", "main", "summarise"]

REGIONS = ("TC", "WT", "ET")
#: Tiny-ET removal thresholds scored with TTA (voxels of the 1 mm grid; 0 = off).
ET_MIN_VOXELS = (0, 100, 300, 1000)


def _regions(label: np.ndarray) -> dict[str, np.ndarray]:
    return {"TC": np.isin(label, (1, 4)), "WT": label > 0, "ET": label == 4}


def _variants(prob: torch.Tensor) -> dict[tuple[bool, int], np.ndarray]:
    """Label maps of every (largest component, ET threshold) variant of a TC/WT/ET probability.

    The steps are the released post-processing's own: largest component of TC and WT
    (``largest_component``) and :class:`SmallEnhancingToCored`.
    """
    out: dict[tuple[bool, int], np.ndarray] = {}
    binary = (prob >= 0.5).to(torch.uint8)
    for lcc in (False, True):
        b = binary.clone()
        if lcc:
            for c in (0, 1):
                b[c] = largest_component(b[c]).to(torch.uint8)
        for thr in ET_MIN_VOXELS:
            v = SmallEnhancingToCored(keys="pred", min_voxels=thr)({"pred": b})["pred"]
            out[(lcc, thr)] = tc_wt_et_to_brats_labels(v)[0].numpy()
    return out


def _brain_box(path: str) -> tuple[slice, ...]:
    """``(channel, x, y, z)`` slices of the non-zero bounding box of a volume (+2 voxels)."""
    vol = np.asarray(nib.Nifti1Image.from_filename(path).dataobj)
    flat_min = vol.min()
    nz = np.argwhere(vol > flat_min)
    lo = np.maximum(nz.min(0) - 2, 0)
    hi = np.minimum(nz.max(0) + 3, vol.shape)
    return (slice(None), *(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)))


def _variant_name(tta: bool, lcc: bool, thr: int) -> str:
    return f"tta={int(tta)},lcc={int(lcc)},et_min={thr}"


def bootstrap_ci(
    values_by_patient: dict[str, list[float]], *, reps: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Patient-level bootstrap 95 % interval of the mean over cases.

    Patients are drawn with replacement; each drawn patient contributes all its cases.
    """
    patients = sorted(values_by_patient)
    rng = np.random.default_rng(seed)
    means = np.empty(reps)
    for r in range(reps):
        picks = rng.integers(0, len(patients), len(patients))
        vals = [v for i in picks for v in values_by_patient[patients[i]]]
        means[r] = float(np.mean(vals))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(rows: Sequence[dict[str, Any]], variant: str) -> dict[str, Any]:
    """Means per region, per fold, per site group and grade, bootstrap intervals, for a variant."""
    sel = [r for r in rows if r["variant"] == variant]
    out: dict[str, Any] = {"variant": variant, "cases": len(sel)}
    for region in REGIONS:
        by_patient: dict[str, list[float]] = {}
        for r in sel:
            by_patient.setdefault(r["patient"], []).append(r[region])
        lo, hi = bootstrap_ci(by_patient)
        out[region] = {"mean": float(np.mean([r[region] for r in sel])), "ci95": [lo, hi]}
    for field in ("fold", "site", "grade"):
        groups: dict[str, dict[str, float]] = {}
        for key in sorted({str(r[field]) for r in sel}):
            part = [r for r in sel if str(r[field]) == key]
            groups[key] = {"cases": len(part)} | {
                region: float(np.mean([r[region] for r in part])) for region in REGIONS
            }
        out[f"per_{field}"] = groups
    fold_means = out["per_fold"].values()
    out["mean_of_fold_means"] = {
        region: float(np.mean([g[region] for g in fold_means])) for region in REGIONS
    }
    return out


def _fold_components(
    bundle_root: Path, config_file: str, ckpt: str, device: torch.device
) -> tuple[Any, Any, Any, torch.nn.Module]:
    parser = ConfigParser()
    parser.read_config(str(bundle_root / config_file))
    parser["bundle_root"] = str(bundle_root)
    ensemble = "num_members" in parser["network_def"]
    if ensemble:  # one fold model = a one-member ensemble
        parser["network_def"]["num_members"] = 1
    parser["tta"] = True
    pre = parser.get_parsed_content("preprocessing")
    sw = parser.get_parsed_content("sw_inferer")
    tta = parser.get_parsed_content("inferer")
    net: torch.nn.Module = parser.get_parsed_content("network_def")
    state = torch.load(ckpt, map_location=device, weights_only=True)
    weights = member_weights(state.get("model", state))
    net.load_state_dict({f"members.0.{k}": v for k, v in weights.items()} if ensemble else weights)
    return pre, sw, tta, net.to(device).eval()


def run_fold(
    fold: int, args: argparse.Namespace, bundle_root: Path, out_dir: Path
) -> list[dict[str, Any]]:
    """Segment and score the validation cases of one fold; return one row per case and variant."""
    device = torch.device("cpu")
    pre, sw, tta, net = _fold_components(
        bundle_root, args.config_file, args.ckpt.format(fold=fold), device
    )
    invert = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)
    rows: list[dict[str, Any]] = []
    for item in load_split(args.split_file, args.data_root, fold, "validation", limit=args.limit):
        start = time.process_time()
        data = pre({"image": item["image"]})
        x = data["image"][None].to(device)
        ref = brats_labels_to_tc_wt_et(
            torch.as_tensor(nib.Nifti1Image.from_filename(item["label"]).get_fdata())
        )
        ref_label = tc_wt_et_to_brats_labels(ref)[0].numpy()
        # score inside the brain's bounding box (every prediction lies in it): same Dice, less work
        crop = _brain_box(item["image"][0])
        affine = nib.Nifti1Image.from_filename(item["image"][0]).affine
        ref_regions = _regions(ref_label[crop[1:]])
        with torch.no_grad():
            outputs = {False: sw(x, net), True: tta(x, net)}
        agreement = getattr(outputs[True], "meta", {}).get(TTA_AGREEMENT_KEY, {})
        for use_tta, logits in outputs.items():
            prob = torch.sigmoid(torch.as_tensor(logits)[0])
            back = invert({"image": data["image"], "pred": prob})["pred"]
            labels = _variants(torch.as_tensor(back)[crop])
            full_label = np.zeros(ref_label.shape, dtype=np.uint8)
            full_label[crop[1:]] = labels[(False, 0)]
            suffix = "_tta" if use_tta else ""
            img = nib.Nifti1Image(full_label, affine)
            nib.save(img, str(out_dir / f"{item['case']}{suffix}.nii.gz"))
            for (lcc, thr), label in labels.items():
                regions = _regions(label)
                row: dict[str, Any] = {
                    "case": item["case"],
                    "patient": item["patient"],
                    "site": item["site"],
                    "grade": item["grade"],
                    "fold": fold,
                    "variant": _variant_name(use_tta, lcc, thr),
                }
                for region in REGIONS:
                    row[region] = dice(regions[region], ref_regions[region])
                    row[f"{region}_ref_voxels"] = int(ref_regions[region].sum())
                    row[f"{region}_pred_voxels"] = int(regions[region].sum())
                row["tta_agreement"] = agreement
                rows.append(row)
        best = [
            r
            for r in rows
            if r["case"] == item["case"] and r["variant"].startswith("tta=1,lcc=0,et_min=0")
        ]
        print(
            f"fold {fold} {item['case']}: "
            + " ".join(f"{k}={best[0][k]:.3f}" for k in REGIONS)
            + f" ({time.process_time() - start:.0f} s CPU)",
            flush=True,
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--split_file", required=True)
    ap.add_argument(
        "--config_file",
        default="configs/inference.json",
        help="inference config, relative to the bundle root",
    )
    ap.add_argument("--data_root", default=os.environ.get("MONAI_TUMOR_DATA", ""))
    ap.add_argument("--ckpt", required=True, help="checkpoint path with {fold}")
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--num_threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="first N cases per fold (smoke runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    bundle_root = Path(__file__).resolve().parent.parent
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fold in (int(f) for f in args.folds.split(",")):
        rows = run_fold(fold, args, bundle_root, out_dir)
        (out_dir / f"cases_fold{fold}.json").write_text(json.dumps(rows, indent=1))
    all_rows: list[dict[str, Any]] = []
    for path in sorted(out_dir.glob("cases_fold*.json")):
        all_rows += json.loads(path.read_text())
    (out_dir / "cases.json").write_text(json.dumps(all_rows, indent=1))
    variants = sorted({r["variant"] for r in all_rows})
    summary = {v: summarise(all_rows, v) for v in variants}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    for v in variants:
        s = summary[v]
        print(v, " ".join(f"{r}={s[r]['mean']:.4f}" for r in REGIONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
