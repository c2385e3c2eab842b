"""Lung lesions seeded at points inside them on full CTs: Dice, spread, truncation.

For every consensus nodule >= 3 mm of the full LIDC CT (readers' XML, 50 % agreement,
``monai_tumor.ingest.lidc_xml``) and for LUNG1-001's GTV-1 (RTSTRUCT), the
``lung_nodule_ct`` bundle is seeded at the reference's centroid and at ``--points`` random
voxels inside it, through the in-process path ``monai-tumor infer``/``batch`` use
(``LoadedBundle.segment``), under several field-of-view settings:

* ``fixed``: the bundle's first box on the seed, no growth, no re-centring (0.3.1);
* ``recentre``: the same box, re-centred on the predicted lesion up to 3 times (0.3.2);
* ``growth``: the box grows x1.5 per step up to 128 mm at the training spacing;
* ``growth+recentre``: re-centred first, then grown;
* ``coarse``: the box grows x1.5 per step up to 128 mm (LUNG1: 192 mm) at a coarser
  spacing, resampled to the network's input size (the first box's voxels; coarse to fine);
* ``coarse+recentre``: both.

``--cases crop`` seeds the same LIDC nodule in its pre-cut crop (``lidc_nodules/`` VOI
``LIDC-IDRI-0001_R_1``) with the same number of points, scored against the same consensus
resampled onto the crop's grid: the full-CT score is meant to be within 0.02 of it.
``--bundle`` evaluates another copy of the bundle (candidate weights and configs), not the
released one; its own ``monai_tumor.voi`` metadata gives the first box.

Writes ``benchmarks/results/full_ct.json`` (per lesion and per seed) and prints a table.
The fine growing boxes are left out for LUNG1-001 unless named with ``--variants``: each
run over a 156 mL tumour at the training spacing is a sliding window over up to
182 x 182 x 102 voxels, minutes per seed on CPU.

    MONAI_TUMOR_DATA=... python benchmarks/bench_full_ct.py [--points 10] [--variants ...]
        [--cases lidc crop lung1] [--bundle BUNDLE_DIR] [--out RESULT.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import data_label, run_info  # noqa: E402
from monai.transforms import ResampleToMatch  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402
from monai_tumor.evaluation.seeding import score_seeded_lesion  # noqa: E402
from monai_tumor.inference.bundle import LoadedBundle, load_bundle  # noqa: E402
from monai_tumor.ingest.groundtruth import rtstruct_to_mask  # noqa: E402
from monai_tumor.ingest.lidc_xml import lidc_consensus  # noqa: E402
from monai_tumor.ingest.reader import read_series  # noqa: E402
from monai_tumor.transforms.voi import VOIGrowth  # noqa: E402

BUNDLE = ROOT / "bundles" / "lung_nodule_ct"


def _variants(large: bool) -> dict[str, dict[str, Any]]:
    limit = (192.0, 192.0, 192.0) if large else (128.0, 128.0, 128.0)
    fine = VOIGrowth(max_size_mm=(128.0, 128.0, 128.0))
    coarse = VOIGrowth(max_size_mm=limit, coarse=True)
    return {
        "fixed": {"voi_growth": None, "voi_recentre": 0},
        "recentre": {"voi_growth": None, "voi_recentre": 3},
        "growth": {"voi_growth": fine, "voi_recentre": 0},
        "growth+recentre": {"voi_growth": fine, "voi_recentre": 3},
        "coarse": {"voi_growth": coarse, "voi_recentre": 0},
        "coarse+recentre": {"voi_growth": coarse, "voi_recentre": 3},
    }


def _with(bundle: LoadedBundle, changes: dict[str, Any]) -> LoadedBundle:
    return dataclasses.replace(bundle, info=dataclasses.replace(bundle.info, **changes))


def _cases(root: Path, only: set[str]) -> list[tuple[str, Path, Any, list[tuple[str, Any]]]]:
    cases: list[tuple[str, Path, Any, list[tuple[str, Any]]]] = []
    lidc = root / "lidc_full" / "LIDC-IDRI-0001"
    if "lidc" in only:
        ct = read_series(lidc / "dicom")
        nodules = [n for n in lidc_consensus(lidc / "annotations.xml", ct) if n.diameter_mm >= 3]
        lesions = [
            (
                f"LIDC-IDRI-0001 nodule {i + 1} ({n.volume_ml:.2f} mL, {len(n.readers)} readers)",
                n.mask,
            )
            for i, n in enumerate(nodules)
        ]
        cases.append(("lidc", lidc / "dicom", ct, lesions))
    if "crop" in only:
        full = read_series(lidc / "dicom")
        nodules = [n for n in lidc_consensus(lidc / "annotations.xml", full) if n.diameter_mm >= 3]
        crop_file = root / "lidc_nodules" / "image" / "LIDC-IDRI-0001_R_1.nii.gz"
        crop = read_series(crop_file)
        lesions = []
        for i, n in enumerate(nodules):
            mask = full.clone()
            mask[0] = torch.as_tensor(n.mask, dtype=mask.dtype)
            on_crop = ResampleToMatch(mode="nearest")(mask, crop)
            if bool((on_crop > 0).any()):
                lesions.append(
                    (
                        f"LIDC-IDRI-0001_R_1 crop, nodule {i + 1}",
                        np.asarray(torch.as_tensor(on_crop)[0].numpy()) > 0,
                    )
                )
        cases.append(("crop", crop_file, crop, lesions))
    if "lung1" in only:
        case = root / "lung1" / "LUNG1-001"
        ct = read_series(case / "image")
        rs = next((case / "mask_rtstruct").rglob("*.dcm"))
        gtv = rtstruct_to_mask(rs, ct, roi="GTV-1").as_tensor()[0].numpy() > 0
        cases.append(("lung1", case / "image", ct, [("LUNG1-001 GTV-1", gtv)]))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10, help="random inner points per lesion")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=None, help="subset of the variants")
    parser.add_argument(
        "--cases", nargs="*", default=["lidc", "lung1"], choices=["lidc", "crop", "lung1"]
    )
    parser.add_argument(
        "--bundle", type=Path, default=BUNDLE, help="bundle folder (default: the released one)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "full_ct.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = data_root()
    bundle = load_bundle(args.bundle, device="cpu", num_threads=args.threads)
    results: list[dict[str, Any]] = []
    for name, series, ct, lesions in _cases(root, set(args.cases)):
        variants = _variants(large=name == "lung1")
        default = [v for v in variants if name != "lung1" or not v.startswith("growth")]
        for variant in args.variants or default:
            if variant not in variants:
                continue
            loaded = _with(bundle, variants[variant])
            for label, mask in lesions:
                start = time.perf_counter()
                report = score_seeded_lesion(
                    loaded, ct, mask, points=args.points, seed=args.seed, label=label
                )
                seconds = time.perf_counter() - start
                row = {
                    "case": name,
                    "series": data_label(series, root),
                    "variant": variant,
                    "points": args.points,
                    "seconds": round(seconds, 1),
                    **report.to_dict(),
                }
                results.append(row)
                print(
                    f"| {label} | {variant} | {row['centroid_dice']} | {row['inner_mean_dice']} | "
                    f"{row['inner_min_dice']} | {row['spread']} | {row['agreement']} | "
                    f"{row['truncated_seeds']}/{args.points + 1} | {seconds:.0f} s |",
                    flush=True,
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(
                    json.dumps(
                        {
                            **run_info(),
                            "bundle": bundle.info.provenance(),
                            "points": args.points,
                            "seed": args.seed,
                            "results": results,
                        },
                        indent=1,
                    )
                    + "\n",
                    encoding="utf-8",
                )
    return 0 if results and np.isfinite([r["centroid_dice"] for r in results]).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
