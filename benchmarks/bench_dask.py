"""Benchmark: ``batch`` in one process vs on a local Dask cluster of 1, 2 and 4 workers.

The sample export is the real CT of ``sts/STS_001..003`` and ``lung1/LUNG1-001`` with their
RTSTRUCTs (symlinks, four series), segmented by ``bundles/lung_nodule_ct`` seeded from the
RTSTRUCTs. Each configuration is the whole ``monai-tumor batch`` command in a fresh process
(start-up, scan, the cluster's start and stop, model loading, every series, the report) into
a fresh output folder with a shared, already built index, so every run segments every
series. Configurations are interleaved over the runs so drifts of a shared machine hit
them alike.

Reported per configuration: wall seconds (median of the runs), series per minute
(series / wall), and the speed-up over the one-process run. The overhead of the Dask path
per series is ``(wall(local:1) - wall(plain) - fixed) / series``, where ``fixed`` is the
start and stop of a one-worker local cluster with the bundle loaded on it, measured in the
same run. The masks of every configuration are compared voxel for voxel with the
one-process run.

Usage::

    .venv/bin/python benchmarks/bench_dask.py [--runs 2] [--workers 1 2 4]

Writes ``benchmarks/results/dask.json`` and prints a markdown table.
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

BUNDLE = ROOT / "bundles" / "lung_nodule_ct"
CASES = {
    "STS_001": ("sts/STS_001/CT/dicom/image", "sts/STS_001/CT/dicom/mask"),
    "STS_002": ("sts/STS_002/CT/dicom/image", "sts/STS_002/CT/dicom/mask"),
    "STS_003": ("sts/STS_003/CT/dicom/image", "sts/STS_003/CT/dicom/mask"),
    "LUNG1-001": ("lung1/LUNG1-001/image", "lung1/LUNG1-001/mask_rtstruct"),
}

_FIXED = r"""
import sys, time
from distributed import Client, LocalCluster
from monai_tumor.inference.bundle import read_bundle_info
from monai_tumor.pipeline.cluster import SegmenterPlugin

def main():
    bundle = read_bundle_info(sys.argv[1])
    start = time.perf_counter()
    with LocalCluster(n_workers=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.register_plugin(SegmenterPlugin(bundle, device="cpu"), name="bench")
        def load(dask_worker):
            plugin = dask_worker.plugins["bench"]
            from monai_tumor.pipeline.infer import load_segmenter
            plugin._model = load_segmenter(plugin.bundle, device="cpu")
        client.run(load)
    print(time.perf_counter() - start)

if __name__ == "__main__":
    main()
"""


def build_export(root: Path, data: Path) -> int:
    """Symlink the sample export; return its number of series."""
    for name, (images, rtstruct) in CASES.items():
        for sub, src in (("img", data / images), ("rs", data / rtstruct)):
            (root / name / sub).mkdir(parents=True, exist_ok=True)
            for i, f in enumerate(sorted(src.iterdir())):
                (root / name / sub / f"{i:05d}").symlink_to(f)
    return len(CASES)


def command(export: Path, out: Path, index: Path, cluster: str | None) -> list[str]:
    """The ``monai-tumor batch`` command of one configuration."""
    cmd = [
        sys.executable,
        "-c",
        "from monai_tumor.cli.main import main; main()",  # as the console script starts
        "batch",
        str(export),
        "--bundle",
        str(BUNDLE),
        "--out",
        str(out),
        "--index",
        str(index),
        "--seeds-from-rtstruct",
        "--device",
        "cpu",
        "--no-progress",
    ]
    return cmd + (["--cluster", cluster] if cluster else [])


def masks(out: Path) -> dict[str, Any]:
    """Mask voxels per series folder of a run."""
    import nibabel as nib
    import numpy as np

    summary = json.loads((out / "summary.json").read_text())
    found = {}
    for row in summary["series"]:
        if row["status"] != "done":
            raise RuntimeError(f"series not done: {row['status']} {row['reason']}")
        image = nib.Nifti1Image.from_filename(out / row["folder"] / "mask.nii.gz")
        found[row["folder"]] = np.asarray(image.dataobj)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    import numpy as np

    data = data_root()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    configs: list[tuple[str, str | None]] = [("plain batch (one process)", None)]
    configs += [(f"--cluster local:{n}", f"local:{n}") for n in args.workers]
    times: dict[str, list[float]] = {name: [] for name, _ in configs}
    fixed: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        series = build_export(tmp / "export", data)
        index = tmp / "index.sqlite"
        reference: dict[str, Any] | None = None
        for run in range(args.runs):
            for name, cluster in configs:
                out = tmp / f"out-{run}-{len(times[name])}-{cluster or 'plain'}".replace(":", "")
                wall, _, _ = run_timed(command(tmp / "export", out, index, cluster), env=env)
                times[name].append(wall)
                got = masks(out)
                if reference is None:
                    reference = got
                assert got.keys() == reference.keys()
                for key, mask in got.items():
                    np.testing.assert_array_equal(mask, reference[key])
                print(f"run {run + 1} {name}: {wall:.1f} s", flush=True)
            wall, _, stdout = run_timed([sys.executable, "-c", _FIXED, str(BUNDLE)], env=env)
            fixed.append(float(stdout.strip().splitlines()[-1]))
    medians = {name: statistics.median(t) for name, t in times.items()}
    plain = medians[configs[0][0]]
    fixed_s = statistics.median(fixed)
    rows = []
    for name, _ in configs:
        rows.append(
            {
                "configuration": name,
                "wall_s": round(medians[name], 2),
                "runs_s": [round(t, 2) for t in times[name]],
                "series_per_min": round(series / medians[name] * 60, 2),
                "speedup": round(plain / medians[name], 2),
            }
        )
    one = medians.get("--cluster local:1")
    overhead = None if one is None else round((one - plain - fixed_s) / series, 2)
    result = {
        **run_info(),
        "export": {name: list(paths) for name, paths in CASES.items()},
        "series": series,
        "bundle": "lung_nodule_ct",
        "rows": rows,
        "cluster_fixed_s": round(fixed_s, 2),
        "cluster_fixed_runs_s": [round(t, 2) for t in fixed],
        "overhead_per_series_s": overhead,
        "masks_identical": True,
    }
    out_path = ROOT / "benchmarks" / "results" / "dask.json"
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| configuration | wall s (median) | series/min | speed-up vs one process |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['configuration']} | {row['wall_s']} | {row['series_per_min']} "
            f"| {row['speedup']} |"
        )
    print(f"\nfixed cluster cost {fixed_s:.1f} s; Dask overhead per series {overhead} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
