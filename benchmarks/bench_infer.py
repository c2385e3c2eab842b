"""Benchmark: segmenting one case with a bundle, in-process vs stock ``monai.bundle run``.

Compared in the same run, on the same BraTS validation case (FLAIR + T1c NIfTI) and the
same weights (``bundles/brats_glioma_mri``):

* ``LoadedBundle.segment`` warm: the network and transforms built once, as the batch
  pipeline uses them (median of N calls, input already in memory);
* ``monai-tumor infer`` as a whole process: start-up, bundle load, read, segment, and all
  outputs (mask, lesions, overlay);
* stock MONAI: ``python -m monai.bundle run --config_file configs/inference.json`` as a
  whole process on a one-case dataset folder (the Model Zoo way; writes the mask only).

Peak memory is each fresh child process's max RSS. The label maps written by the two
whole-process runs are compared voxel by voxel (they must agree: same bundle, same
transforms).

Usage::

    .venv/bin/python benchmarks/bench_infer.py [--runs 3] [--case PATH]

Writes ``benchmarks/results/infer.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import run_info, run_timed  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402

BUNDLE = ROOT / "bundles" / "brats_glioma_mri"
DEFAULT_CASE = data_root() / "brats" / "validation" / "brats_2013_pat0003_1"

_WARM = r"""
import json, resource, statistics, sys, time, torch
from pathlib import Path
from monai_tumor.inference.bundle import load_bundle
from monai_tumor.ingest.selection import load_inputs
case, bundle, runs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
t0 = time.perf_counter()
loaded = load_bundle(bundle, device="cpu")
load_s = time.perf_counter() - t0
image = load_inputs(
    {"flair": next(case.glob("Flair*.nii*")), "t1c": next(case.glob("T1c*.nii*"))},
    reference="flair", order=("flair", "t1c"),
)
times, cpu = [], []
for _ in range(runs):
    t, c = time.perf_counter(), time.process_time()
    loaded.segment(image)
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"load_s": load_s, "times": times, "cpu": cpu, "rss_mib": rss}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "infer.json")
    args = parser.parse_args()
    import nibabel as nib
    import numpy as np

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    python = sys.executable
    results: list[dict[str, Any]] = []

    wall, rss, out = run_timed(
        [python, "-c", _WARM, str(args.case), str(BUNDLE), str(args.runs)], env
    )
    warm = json.loads(out.strip().splitlines()[-1])
    results.append(
        {
            "method": "LoadedBundle.segment (warm, in-process)",
            "median_s": statistics.median(warm["times"]),
            "cpu_s": statistics.median(warm["cpu"]),
            "peak_rss_mib": warm["rss_mib"],
            "note": f"bundle load {warm['load_s']:.2f} s once",
        }
    )

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ours_times, stock_times, ours_rss, stock_rss = [], [], 0.0, 0.0
        dataset = tmp / "in"
        (dataset / args.case.name).mkdir(parents=True)
        for src in (*args.case.glob("Flair*.nii*"), *args.case.glob("T1c*.nii*")):
            (dataset / args.case.name / src.name).symlink_to(src)
        for run in range(args.runs):
            ours_out = tmp / f"ours{run}"
            cli = [str(Path(python).parent / "monai-tumor"), "infer"]
            flair = next(args.case.glob("Flair*.nii*"))
            t1c = next(args.case.glob("T1c*.nii*"))
            cmd = [*cli, str(flair), str(t1c), "--bundle", str(BUNDLE), "--out", str(ours_out)]
            wall, rss, _ = run_timed([*cmd, "--device", "cpu"], env)
            ours_times.append(wall)
            ours_rss = max(ours_rss, rss)
            stock_out = tmp / f"stock{run}"
            cmd = [
                python, "-m", "monai.bundle", "run",
                "--config_file", str(BUNDLE / "configs" / "inference.json"),
                "--bundle_root", str(BUNDLE),
                "--dataset_dir", str(dataset), "--output_dir", str(stock_out),
            ]  # fmt: skip
            wall, rss, _ = run_timed(cmd, env)
            stock_times.append(wall)
            stock_rss = max(stock_rss, rss)
        ours_mask = next(ours_out.rglob("mask.nii.gz"))
        stock_mask = next(stock_out.rglob("*.nii.gz"))
        a, b = (
            np.asarray(nib.Nifti1Image.from_filename(mask).dataobj)
            for mask in (ours_mask, stock_mask)
        )
        agreement = float((a.squeeze() == b.squeeze()).mean()) if a.size == b.size else 0.0

    results.append(
        {
            "method": "monai-tumor infer (whole process, all outputs)",
            "median_s": statistics.median(ours_times),
            "cpu_s": None,
            "peak_rss_mib": ours_rss,
            "note": "mask, lesions.json, features.csv, overlay.png, viewer, manifest",
        }
    )
    results.append(
        {
            "method": "python -m monai.bundle run (stock MONAI, whole process)",
            "median_s": statistics.median(stock_times),
            "cpu_s": None,
            "peak_rss_mib": stock_rss,
            "note": "mask only",
        }
    )
    base = results[-1]["median_s"]
    for row in results:
        row["ratio_to_stock"] = row["median_s"] / base
    payload = {
        "benchmark": "segment one BraTS case (240x240x155, FLAIR+T1c) with brats_glioma_mri",
        "case": args.case.name,
        "runs": args.runs,
        **run_info(),
        "label_map_voxel_agreement_ours_vs_stock": agreement,
        "results": results,
        "notes": [
            "one torch thread everywhere (OMP_NUM_THREADS=1);",
            "peak RSS: max RSS of each fresh child process (wrapper's RUSAGE_CHILDREN).",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| method | median s | CPU s | peak RSS MiB | ratio to stock | note |")
    print("|---|---|---|---|---|---|")
    for row in results:
        cpu = "n/a" if row["cpu_s"] is None else f"{row['cpu_s']:.2f}"
        print(
            f"| {row['method']} | {row['median_s']:.2f} | {cpu} | {row['peak_rss_mib']:.0f} "
            f"| {row['ratio_to_stock']:.2f} | {row['note']} |"
        )
    print(f"\nlabel maps ours vs stock: {agreement:.6f} of voxels equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
