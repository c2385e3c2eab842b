"""Benchmark: segmenting one glioma case, ours (cold and warm, NIfTI and DICOM in) vs stock MONAI.

Compared in the same run, on the same BraTS validation case (FLAIR + T1c) and the same
weights (``bundles/brats_glioma_mri``):

* stock MONAI: ``python -m monai.bundle run --config_file configs/inference.json`` as a
  whole process on a one-case dataset folder (the Model Zoo way: the bundle's own thread
  setting, one torch thread, float32; writes the mask only);
* ``monai-tumor infer`` as a whole process on the NIfTI files (start-up, bundle load, read,
  segment, every output: mask, lesions.json with radiomics features, overlay, viewer,
  manifest), with and without ``--no-features``, on both CPUs (the default: two radiomics
  worker processes, ``radiomics.pool``) and pinned to one CPU with ``taskset`` (the stock
  run's one thread; no worker processes on one CPU); CPU time and peak RSS are the
  command's own (``/usr/bin/time`` reports the largest process, not the workers' sum);
* the same command on the case written as a DICOM MR study (two series folders in, DICOM
  SEG out: ``tests/support/brats_dicom.py``);
* warm, in one process started as ``infer`` starts (``prepare_inference_process``; ``batch``
  also makes OpenMP's threads passive), with the bundle loaded once (as ``batch`` and the
  annotation server run it):
  ``LoadedBundle.segment`` on the image in memory (default, one thread, one thread in
  float32 as before), where its seconds go (preprocessing, network, postprocessing), and
  ``infer_one`` with the loaded model (read, segment and every output) on the NIfTI files
  and on the DICOM series, with two feature worker processes as ``batch`` has them.

"After imports" subtracts the time a bare ``python -c "import torch, monai, nibabel"``
takes in the same run (both sides pay it). CPU time and peak RSS are the child process's
(``/usr/bin/time``). The label maps of the whole-process runs are scored against the
case's reference (Dice of TC, WT, ET as the model card reads them) and against the stock
run's.

Usage::

    .venv/bin/python benchmarks/bench_infer.py [--runs 3] [--case PATH]

Writes ``benchmarks/results/infer.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import data_label, run_info  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402

BUNDLE = ROOT / "bundles" / "brats_glioma_mri"
DEFAULT_CASE = data_root() / "brats" / "validation" / "brats_2013_pat0003_1"
REGIONS = {"TC": (1, 3, 4), "WT": (1, 2, 3, 4), "ET": (4,)}

_WARM = r"""
import json, resource, statistics, sys, time
from pathlib import Path
from monai_tumor.startup import prepare_inference_process
prepare_inference_process()  # as the console script starts `infer`
import torch
from monai.data import MetaTensor
from monai_tumor.inference.bundle import load_bundle
from monai_tumor.ingest.selection import load_inputs
from monai_tumor.pipeline.infer import InferOptions, infer_one
from monai_tumor.radiomics.pool import FeaturePool

case, bundle, runs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
dicom, scratch = sys.argv[4], Path(sys.argv[5])
flair, t1c = next(case.glob("Flair*.nii*")), next(case.glob("T1c*.nii*"))
image = load_inputs({"flair": flair, "t1c": t1c}, reference="flair", order=("flair", "t1c"))
out = {}

def timed(fn):
    t = time.perf_counter()
    fn()  # first call: lazy initialisation, caches (reported as first_s)
    first = time.perf_counter() - t
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {
        "median_s": statistics.median(wall),
        "cpu_s": statistics.median(cpu),
        "times": wall,
        "first_s": first,
    }

t0 = time.perf_counter()
default = load_bundle(bundle, device="cpu")
out["load_s"] = time.perf_counter() - t0
out["default"] = {"threads": default.num_threads, "precision": default.precision}
out["segment_default"] = timed(lambda: default.segment(image))
one = load_bundle(bundle, device="cpu", num_threads=1)
out["segment_1thread"] = timed(lambda: one.segment(image))
fp32 = load_bundle(bundle, device="cpu", num_threads=1, precision="fp32")
out["segment_1thread_fp32"] = timed(lambda: fp32.segment(image))

# where the seconds of a default segment go
stages = {"preprocessing": [], "network": [], "postprocessing": []}
torch.set_num_threads(default.num_threads)
for _ in range(runs):
    with torch.inference_mode():
        src = MetaTensor(image.as_tensor().float().clone(), affine=image.affine.clone(),
                         meta={k: v for k, v in image.meta.items() if k != "affine"})
        t = time.perf_counter(); data = default.preprocessing({"image": src})
        stages["preprocessing"].append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=default.precision == "bf16"):
            pred = default.inferer(data["image"].unsqueeze(0), default._network_to_run())
        data["pred"] = pred[0].float()
        stages["network"].append(time.perf_counter() - t)
        t = time.perf_counter(); default.postprocessing(data)
        stages["postprocessing"].append(time.perf_counter() - t)
out["segment_stages"] = {k: statistics.median(v) for k, v in stages.items()}

pool = FeaturePool(workers=2)  # as `batch` runs it: features in two worker processes

def case_run(inputs, features, name):
    opts = InferOptions(device="cpu", force=True, features=features)
    return lambda: infer_one(
        inputs, bundle=bundle, out_dir=scratch / name, options=opts, segmenter=default,
        feature_pool=pool,
    )

out["infer_one_nifti"] = timed(case_run([flair, t1c], True, "nifti"))
out["infer_one_nifti_no_features"] = timed(case_run([flair, t1c], False, "nifti_nf"))
if dicom:
    dirs = [Path(p) for p in dicom.split(",")]
    out["infer_one_dicom"] = timed(case_run(dirs, True, "dicom"))
    out["infer_one_dicom_no_features"] = timed(case_run(dirs, False, "dicom_nf"))
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
pool.close()
print(json.dumps(out))
"""


def run_measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a command; return its wall and CPU seconds, peak RSS (MiB) and stdout."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "time.txt"
        start = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M %U %S", "-o", str(report), *cmd],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[:4]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        rss_kib, user, system = report.read_text().split()[-3:]
    return {
        "wall_s": wall,
        "cpu_s": float(user) + float(system),
        "rss_mib": float(rss_kib) / 1024,
        "stdout": done.stdout,
    }


def _regions_dice(label: Any, ref: Any) -> dict[str, float]:
    import numpy as np

    out = {}
    for name, values in REGIONS.items():
        a, b = np.isin(label, values), np.isin(ref, values)
        total = int(a.sum() + b.sum())
        out[name] = 1.0 if total == 0 else round(float(2 * (a & b).sum() / total), 4)
    return out


def _mask(path: Path) -> Any:
    import nibabel as nib
    import numpy as np

    return np.rint(np.asarray(nib.Nifti1Image.from_filename(path).dataobj)).astype(np.int16)


def _dicom_study(case: Path, tmp: Path) -> list[Path]:
    """The case as a DICOM MR study; one folder of symlinks per series (FLAIR, T1c)."""
    from tests.support.brats_dicom import write_brats_study

    study = write_brats_study(case, tmp / "study", seed=7, distractors=())
    folders = []
    for role in ("flair", "t1c"):
        folder = tmp / f"series_{role}"
        folder.mkdir()
        for index, path in enumerate(study.series[role].files):
            (folder / f"{index:04d}.dcm").symlink_to(path)
        folders.append(folder)
    return folders


def _summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(s["wall_s"] for s in samples),
        "cpu_s": statistics.median(s["cpu_s"] for s in samples),
        "peak_rss_mib": max(s["rss_mib"] for s in samples),
        "times": [round(s["wall_s"], 3) for s in samples],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "infer.json")
    args = parser.parse_args()

    python = sys.executable
    cli = str(Path(python).parent / "monai-tumor")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    one_cpu = ["taskset", "-c", str(min(os.sched_getaffinity(0)))]
    flair = next(args.case.glob("Flair*.nii*"))
    t1c = next(args.case.glob("T1c*.nii*"))
    reference = _mask(args.case / "OTMultiClass.nii.gz")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dataset = tmp / "in" / args.case.name
        dataset.mkdir(parents=True)
        for src in (flair, t1c):
            (dataset / src.name).symlink_to(src)
        dicom_dirs = _dicom_study(args.case, tmp)

        commands: dict[str, list[str]] = {
            "imports": [python, "-c", "import torch, monai, nibabel"],
            "stock": [
                python, "-m", "monai.bundle", "run",
                "--config_file", str(BUNDLE / "configs" / "inference.json"),
                "--bundle_root", str(BUNDLE),
                "--dataset_dir", str(tmp / "in"), "--output_dir", str(tmp / "stock"),
            ],
            "ours": [cli, "infer", str(flair), str(t1c), "--bundle", str(BUNDLE),
                     "--out", str(tmp / "ours"), "--device", "cpu", "--force"],
            "ours_no_features": [cli, "infer", str(flair), str(t1c), "--bundle", str(BUNDLE),
                                 "--out", str(tmp / "ours_nf"), "--device", "cpu", "--force",
                                 "--no-features"],
            "ours_dicom": [cli, "infer", *map(str, dicom_dirs), "--bundle", str(BUNDLE),
                           "--out", str(tmp / "ours_dicom"), "--device", "cpu", "--force"],
            "ours_dicom_no_features": [cli, "infer", *map(str, dicom_dirs), "--bundle",
                                       str(BUNDLE), "--out", str(tmp / "ours_dicom_nf"),
                                       "--device", "cpu", "--force", "--no-features"],
        }  # fmt: skip
        commands["help"] = [cli, "--help"]
        commands["scan"] = [
            cli, "scan", str(data_root() / "sts" / "STS_001"), "--index", str(tmp / "index.sqlite")
        ]  # fmt: skip
        commands["ours_1cpu"] = [*one_cpu, *commands["ours"]]
        commands["ours_no_features_1cpu"] = [*one_cpu, *commands["ours_no_features"]]
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
        for _ in range(args.runs):  # interleaved, so load changes hit every method alike
            for name, cmd in commands.items():
                if name == "stock":
                    shutil.rmtree(tmp / "stock", ignore_errors=True)
                if name == "scan":  # a first scan of the folder every time
                    (tmp / "index.sqlite").unlink(missing_ok=True)
                samples[name].append(run_measured(cmd, env))
        masks = {
            "stock": _mask(tmp / "stock" / f"{args.case.name}.nii.gz"),
            "ours": _mask(tmp / "ours" / "mask.nii.gz"),
            "ours_no_features": _mask(tmp / "ours_nf" / "mask.nii.gz"),
            "ours_dicom": _mask(tmp / "ours_dicom" / "mask.nii.gz"),
        }
        seg_written = (tmp / "ours_dicom" / "seg.dcm").is_file()
        warm_run = run_measured(
            [python, "-c", _WARM, str(args.case), str(BUNDLE), str(args.runs),
             ",".join(map(str, dicom_dirs)), str(tmp / "warm")],
            env,
        )  # fmt: skip
        warm = json.loads(warm_run["stdout"].strip().splitlines()[-1])

    imports = _summary(samples["imports"])["median_s"]
    stock = _summary(samples["stock"])
    stock_after = stock["median_s"] - imports
    dice_ref = {name: _regions_dice(mask, reference) for name, mask in masks.items()}
    dice_stock = {name: _regions_dice(mask, masks["stock"]) for name, mask in masks.items()}
    labels = {
        "imports": "python -c 'import torch, monai, nibabel' (start-up floor, both sides)",
        "stock": "python -m monai.bundle run, stock MONAI (1 thread, float32; mask only)",
        "ours": "monai-tumor infer, NIfTI in, all outputs (default: 2 threads, bf16)",
        "ours_no_features": "monai-tumor infer --no-features, NIfTI in",
        "ours_1cpu": "monai-tumor infer, NIfTI in, all outputs, pinned to 1 CPU",
        "ours_no_features_1cpu": "monai-tumor infer --no-features, pinned to 1 CPU",
        "ours_dicom": "monai-tumor infer, DICOM in (2 series), SEG + all outputs",
        "ours_dicom_no_features": "monai-tumor infer --no-features, DICOM in, SEG",
        "help": "monai-tumor --help (start-up of the CLI)",
        "scan": "monai-tumor scan sts/STS_001 (3 series, fresh index)",
    }
    results: list[dict[str, Any]] = []
    for name, label in labels.items():
        row = {"method": label, "key": name, "kind": "cold process", **_summary(samples[name])}
        if name not in ("imports", "help", "scan"):
            row["after_imports_s"] = row["median_s"] - imports
            row["speedup_after_imports_vs_stock"] = stock_after / row["after_imports_s"]
        results.append(row)
    warm_rows = {
        "segment_default": "LoadedBundle.segment, warm (default: 2 threads, bf16)",
        "segment_1thread": "LoadedBundle.segment, warm, 1 thread (bf16)",
        "segment_1thread_fp32": "LoadedBundle.segment, warm, 1 thread, float32 (as before)",
        "infer_one_nifti": "infer_one with the model loaded, NIfTI in, all outputs",
        "infer_one_nifti_no_features": "infer_one with the model loaded, NIfTI in, no features",
        "infer_one_dicom": "infer_one with the model loaded, DICOM in, SEG + all outputs",
        "infer_one_dicom_no_features": "infer_one with the model loaded, DICOM in, no features",
    }
    for name, label in warm_rows.items():
        entry = warm[name]
        results.append(
            {
                "method": label,
                "key": name,
                "kind": "warm (in-process)",
                "median_s": entry["median_s"],
                "cpu_s": entry["cpu_s"],
                "peak_rss_mib": warm["rss_mib"],
                "times": [round(t, 3) for t in entry["times"]],
                "first_call_s": entry["first_s"],
                "speedup_after_imports_vs_stock": stock_after / entry["median_s"],
            }
        )
    for row in results:
        row["ratio_to_stock"] = row["median_s"] / stock["median_s"]
    payload = {
        "benchmark": "segment one BraTS case (240x240x155, FLAIR+T1c) with brats_glioma_mri",
        "case": data_label(args.case, data_root()),
        "runs": args.runs,
        **run_info(),
        "import_floor_s": imports,
        "stock_after_imports_s": stock_after,
        "default_path": warm["default"],
        "bundle_load_s": warm["load_s"],
        "segment_stages_s": warm["segment_stages"],
        "dice_vs_reference": dice_ref,
        "dice_vs_stock": dice_stock,
        "dicom_seg_written": seg_written,
        "results": results,
        "notes": [
            "cold rows: medians of fresh processes, interleaved; CPU time and peak RSS of the "
            "child (/usr/bin/time); 'pinned to 1 CPU': taskset to one CPU, so the default "
            "thread choice gives torch one thread, as the stock run has;",
            "warm rows: one process, bundle loaded once, median of the timed calls after one "
            "untimed call; peak RSS of that process;",
            "after imports: median wall minus the import floor measured in the same run.",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print("| method | median s | CPU s | peak RSS MiB | ratio to stock | after imports: x faster |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in results:
        speed = row.get("speedup_after_imports_vs_stock")
        print(
            f"| {row['method']} | {row['median_s']:.2f} | {row['cpu_s']:.2f} "
            f"| {row['peak_rss_mib']:.0f} | {row['ratio_to_stock']:.2f} "
            f"| {'' if speed is None else f'{speed:.2f}'} |"
        )
    print(f"\nsegment stages (default): {warm['segment_stages']}")
    print(f"Dice vs reference: {dice_ref}\nDice vs stock: {dice_stock}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
