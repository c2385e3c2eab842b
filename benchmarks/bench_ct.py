"""Benchmark: the CT side of CPU inference -- nodule VOI speed and Dice, a 512 x 512 x 400 CT's
memory through the whole pipeline, batch throughput.

Parts (``--parts``, default all):

``voi``
    Warm time per volume of interest of ``bundles/lung_nodule_ct``, the bundle loaded once as
    in ``batch``: the held-out LIDC VOIs of fold 0 (``data/datasets/lidc_nodules_split.json``)
    cut around their reference nodule's centroid (``seeds_from_mask``) and segmented by
    ``LoadedBundle.segment``, for each inference configuration (the released loop over the 8
    mirrored copies; the copies batched into one network call; bfloat16; fewer mirrors; no
    mirroring). Where the time goes: cutting and pasting the VOI, the bundle's preprocessing,
    the network (inferer), its postprocessing (softmax, ``Invertd``, threshold, largest
    component). Same process, configurations interleaved.
``dice``
    Held-out mean Dice per nodule of each configuration on the 154 VOIs, through the stock
    path: ``python -m monai.bundle run`` with the bundle's ``inference.json`` +
    ``evaluate.json`` (``SupervisedEvaluator``), switches given as overrides; its wall and CPU
    time per VOI are the stock numbers.
``memory``
    A 512 x 512 x 400 CT built at run time from LUNG1-001's real slices (each of its 134
    slices 3 mm apart used for 3 consecutive new slices 1 mm apart: real HU, new positions,
    new Study/Series/SOP Instance and Frame of Reference UIDs) into ``--work`` (never into
    the data or the repository), seeded at GTV-1's centroid, run through ``run_batch`` in a
    fresh process (scan, select, read, seed, segment, SEG + NIfTI + lesions + overlay +
    viewer + radiomics): peak RSS of the whole process and the peak of each stage (the
    kernel's high-water mark reset at every stage start, ``/proc/self/clear_refs``). The
    readers of ``bench_read.py`` on the same CT for comparison (MONAI ``LoadImage``,
    SimpleITK).
``batch``
    ``monai-tumor batch`` (one process, prefetching reads) on the sample export of
    ``bench_dask.py`` (STS_001..003 and LUNG1-001, seeded from their RTSTRUCTs): series per
    minute, and the read / segment / write seconds of each series from ``summary.json``,
    whose sum against the wall shows what the prefetch overlaps.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_ct.py --work /tmp/bench_ct [--parts voi dice]

Writes ``benchmarks/results/ct.json`` (parts not run keep their previous result) and prints
markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import run_info, run_timed  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402

BUNDLE = ROOT / "bundles" / "lung_nodule_ct"
SPLIT = ROOT / "data" / "datasets" / "lidc_nodules_split.json"
RESULT = ROOT / "benchmarks" / "results" / "ct.json"

#: Inference configurations: FlipTTAInferer attributes, and the same as ``monai.bundle run``
#: overrides for the Dice part.
CONFIGS: dict[str, dict[str, Any]] = {
    "released 0.3.2: loop over 8 copies, fp32": {"flips_per_call": 1, "precision": "float32"},
    "8 copies in one call, fp32": {"precision": "float32"},
    "8 copies in one call, bf16 (default here)": {"precision": "bfloat16"},
    "4 copies (axes 0, 1), fp32": {"spatial_axes": [0, 1], "precision": "float32"},
    "4 copies (axes 0, 1), bf16": {"spatial_axes": [0, 1], "precision": "bfloat16"},
    "no mirroring, fp32": {"enabled": False, "precision": "float32"},
    "no mirroring, bf16": {"enabled": False, "precision": "bfloat16"},
}


def _held_out_cases(limit: int) -> list[str]:
    split = json.loads(SPLIT.read_text(encoding="utf-8"))
    cases: list[str] = list(split["folds"][0]["validation"])
    return cases[:limit] if limit else cases


def _configured(bundle: Any, changes: dict[str, Any]) -> Any:
    """The loaded bundle with a configuration: FlipTTAInferer attributes set (the bundle's
    defaults first), bfloat16 through the pipeline's own switch (``LoadedBundle.precision``)."""
    import dataclasses

    inferer = bundle.inferer
    inferer.flips_per_call, inferer.spatial_axes, inferer.enabled = 8, (0, 1, 2), True
    for key, value in changes.items():
        if key != "precision":
            setattr(inferer, key, tuple(value) if key == "spatial_axes" else value)
    bf16 = changes.get("precision") == "bfloat16"
    return dataclasses.replace(bundle, precision="bf16" if bf16 else "fp32")


# ----------------------------------------------------------------------------- voi


class _Timed:
    """A callable that adds its wall time to ``totals[name]``."""

    def __init__(self, fn: Callable[..., Any], name: str, totals: dict[str, float]) -> None:
        self.fn, self.name, self.totals = fn, name, totals

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - start


def part_voi(args: argparse.Namespace) -> dict[str, Any]:
    """Warm seconds per VOI run of each configuration, where they go, and agreement of the
    masks with the released configuration's."""
    import dataclasses

    import numpy as np
    import torch

    from monai_tumor.inference import load_bundle, seeds_from_mask
    from monai_tumor.ingest import read_series

    lidc = data_root() / "lidc_nodules"
    cases = []
    for case in _held_out_cases(args.vois):
        image = read_series(lidc / "image" / f"{case}.nii.gz")
        ref = read_series(lidc / "nodule_mask" / f"{case}.nii.gz")[0] > 0
        cases.append((image, seeds_from_mask(ref, image)))
    bundle = load_bundle(BUNDLE, device="cpu", num_threads=args.threads)
    totals: dict[str, dict[str, float]] = {name: {} for name in CONFIGS}
    runs: dict[str, int] = dict.fromkeys(CONFIGS, 0)
    cpu: dict[str, float] = dict.fromkeys(CONFIGS, 0.0)
    masks: dict[str, list[Any]] = {name: [] for name in CONFIGS}
    for changes in CONFIGS.values():  # warm-up: one case per configuration
        _configured(bundle, changes).segment(cases[0][0], seeds=cases[0][1])
    for repeat in range(args.runs):
        for name, changes in CONFIGS.items():
            configured = _configured(bundle, changes)
            t = totals[name]
            timed = dataclasses.replace(
                configured,
                preprocessing=_Timed(configured.preprocessing, "preprocessing", t),
                inferer=_Timed(configured.inferer, "network", t),
                postprocessing=_Timed(configured.postprocessing, "postprocessing", t),
            )
            start, start_cpu = time.perf_counter(), time.process_time()
            for image, seeds in cases:
                mask = timed.segment(image, seeds=seeds)
                if repeat == 0:
                    runs[name] += sum(f["runs"] for f in mask.meta["fields_of_view"])
                    masks[name].append(mask[0].numpy() > 0)
            t["total"] = t.get("total", 0.0) + time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    released = masks[next(iter(CONFIGS))]
    rows = []
    for name in CONFIGS:
        n = runs[name] * args.runs
        t = totals[name]
        other = t["total"] - t["preprocessing"] - t["network"] - t["postprocessing"]
        agreement = [
            float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1)) if a.any() or b.any() else 1.0
            for a, b in zip(masks[name], released, strict=True)
        ]
        rows.append(
            {
                "configuration": name,
                "vois": len(cases),
                "network_runs": runs[name],
                "s_per_run": round(t["total"] / n, 4),
                "cpu_s_per_run": round(cpu[name] / n, 4),
                "network_s": round(t["network"] / n, 4),
                "preprocessing_s": round(t["preprocessing"] / n, 4),
                "postprocessing_s": round(t["postprocessing"] / n, 4),
                "crop_paste_other_s": round(other / n, 4),
                "s_per_voi": round(t["total"] / (len(cases) * args.runs), 4),
                "dice_vs_released_min": round(min(agreement), 4),
                "dice_vs_released_mean": round(float(np.mean(agreement)), 4),
                "identical_masks": sum(
                    bool(np.array_equal(a, b)) for a, b in zip(masks[name], released, strict=True)
                ),
            }
        )
    return {"threads": args.threads, "torch_threads": torch.get_num_threads(), "rows": rows}


# ---------------------------------------------------------------------------- dice


def _overrides(changes: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in changes.items():
        if key == "enabled":
            out += ["--tta", "true" if value else "false"]
        else:
            out += [
                f"--inferer#{key}",
                json.dumps(value) if isinstance(value, list) else str(value),
            ]
    return out


def _mean_dice(folder: Path) -> tuple[float, int]:
    with (folder / "mean_dice_raw.csv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    values = [float(r[1]) for r in rows[1:] if len(r) > 1]
    return statistics.fmean(values), len(values)


def part_dice(args: argparse.Namespace) -> dict[str, Any]:
    """Held-out Dice of each configuration through ``monai.bundle run`` (the stock path)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MONAI_TUMOR_DATA=str(data_root()))
    configs = ["['configs/inference.json','configs/evaluate.json']"]
    rows = []
    for name, changes in CONFIGS.items():
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                configs[0].replace("configs/", f"{BUNDLE}/configs/"),
                "--bundle_root",
                str(BUNDLE),
                "--output_dir",
                tmp,
                *(["--limit", str(args.dice_limit)] if args.dice_limit else []),
                *_overrides(changes),
            ]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall, rss, _ = run_timed(cmd, env=env)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            mean, count = _mean_dice(Path(tmp))
        cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        rows.append(
            {
                "configuration": name,
                "overrides": _overrides(changes),
                "vois": count,
                "mean_dice": round(mean, 4),
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu_s, 1),
                "peak_rss_mib": round(rss),
            }
        )
        print(f"dice {name}: {mean:.4f} over {count} VOIs, {wall:.0f} s", flush=True)
    return {"split": "fold 0 validation", "threads": 1, "rows": rows}


# -------------------------------------------------------------------------- memory


def build_ct(out: Path, *, slices: int = 400, copy: int = 0) -> tuple[Path, Path]:
    """Write a ``slices`` x 512 x 512 CT re-stacked from LUNG1-001's real slices; seeds CSV.

    Slice ``k`` of the new series lies at ``first + k * span / (slices - 1)`` along the
    original stack (same first and last positions, orientation and pixel spacing) and
    carries the pixels of the original slice nearest to that position, so anatomy and HU
    are real and GTV-1 stays where it was. Every UID is new (``copy`` > 0: another series
    of new UIDs, folder ``ct400-<copy>``). Returns the series folder and a seeds CSV holding
    GTV-1's centroid (LPS mm).
    """
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from monai_tumor.geometry import ras_to_lps, voxel_to_patient
    from monai_tumor.ingest import read_series, rtstruct_to_mask

    case = data_root() / "lung1" / "LUNG1-001"
    series = out / "export" / (f"ct400-{copy}" if copy else "ct400")
    seeds = out / "seeds.csv"
    if series.is_dir() and len(list(series.iterdir())) == slices and seeds.is_file():
        return series, seeds
    series.mkdir(parents=True, exist_ok=True)
    source = [pydicom.dcmread(p) for p in sorted((case / "image").iterdir())]
    normal = np.cross(
        np.asarray(source[0].ImageOrientationPatient[:3], dtype=float),
        np.asarray(source[0].ImageOrientationPatient[3:], dtype=float),
    )
    source.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    first = np.asarray(source[0].ImagePositionPatient, dtype=float)
    last = np.asarray(source[-1].ImagePositionPatient, dtype=float)
    step = float(np.linalg.norm(last - first)) / (slices - 1)
    uids = {
        key: generate_uid(entropy_srcs=["bench_ct", key, str(slices), str(copy)])
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
    }
    for k in range(slices):
        src = source[round(k * (len(source) - 1) / (slices - 1))]
        ds = src.copy()
        for key, uid in uids.items():
            setattr(ds, key, uid)
        sop = generate_uid(entropy_srcs=["bench_ct", uids["SeriesInstanceUID"], str(k)])
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        position = first + (last - first) * k / (slices - 1)
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceLocation = round(float(np.dot(normal, position)), 4)
        ds.InstanceNumber = k + 1
        ds.SliceThickness = round(step, 4)
        ds.SeriesDescription = f"LUNG1-001 re-stacked {slices} slices"
        ds.save_as(series / f"{k:04d}.dcm", enforce_file_format=True)
    original = read_series(case / "image")
    rs = next((case / "mask_rtstruct").rglob("*.dcm"))
    gtv = rtstruct_to_mask(rs, original, roi="GTV-1").as_tensor()[0].numpy() > 0
    centre = voxel_to_patient(
        ras_to_lps(original.affine.numpy()), np.argwhere(gtv).mean(axis=0)[None]
    )[0]
    seeds.write_text(f"x,y,z,label\n{centre[0]:.3f},{centre[1]:.3f},{centre[2]:.3f},GTV-1\n")
    return series, seeds


_STAGES = (
    ("monai_tumor.pipeline.batch", "scan_export", "scan"),
    ("monai_tumor.pipeline.batch", "plan_batch", "select (plan)"),
    ("monai_tumor.pipeline.runner", "read_series", "read"),
    ("monai_tumor.pipeline.runner", "read_source_headers", "source headers"),
    ("monai_tumor.pipeline.runner", "_load_seeds", "seed"),
    ("monai_tumor.pipeline.runner", "_review", "review"),
    ("monai_tumor.pipeline.outputs", "write_nifti", "write NIfTI"),
    ("monai_tumor.pipeline.outputs", "write_dicom_seg", "write SEG"),
    ("monai_tumor.pipeline.outputs", "measure_lesions", "lesions"),
    ("monai_tumor.pipeline.outputs", "render_overlay", "overlay"),
    ("monai_tumor.pipeline.outputs", "write_viewer", "viewer"),
)


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def _stage(name: str, record: dict[str, dict[str, float]]) -> Iterator[None]:
    """Peak RSS of one stage: reset the kernel's high-water mark, read it at the end."""
    start_rss = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    try:
        yield
    finally:
        row = record.setdefault(name, {"seconds": 0.0, "peak_rss_mib": 0.0, "rise_mib": 0.0})
        peak = _status_mib("VmHWM")
        row["seconds"] += time.perf_counter() - start
        row["peak_rss_mib"] = max(row["peak_rss_mib"], peak)
        row["rise_mib"] = max(row["rise_mib"], peak - start_rss)


def stages_child(export: Path, seeds: Path, out: Path, threads: int) -> dict[str, Any]:
    """Run one batch over the big CT in this process, recording each stage's peak RSS.

    The stage functions are wrapped where the pipeline looks them up; the kernel's
    high-water mark is reset at every stage start, so the whole process's peak is
    measured in a separate, uninstrumented process.
    """
    import functools
    import importlib

    import torch

    from monai_tumor.inference.bundle import LoadedBundle, read_bundle_info
    from monai_tumor.pipeline import run_batch
    from monai_tumor.pipeline.analysis import LesionAnalysis, PendingAnalysis
    from monai_tumor.pipeline.infer import load_segmenter

    torch.set_num_threads(threads)
    record: dict[str, dict[str, float]] = {}

    def wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*a: Any, **k: Any) -> Any:
            with _stage(name, record):
                return fn(*a, **k)

        return inner

    for module_name, attr, name in _STAGES:
        module = importlib.import_module(module_name)
        setattr(module, attr, wrap(getattr(module, attr), name))
    LoadedBundle.segment = wrap(LoadedBundle.segment, "segment")  # type: ignore[method-assign]
    # Without a feature pool (as here) start() computes the features, apply() classifies.
    LesionAnalysis.start = wrap(LesionAnalysis.start, "radiomics + classifier")  # type: ignore[method-assign]
    PendingAnalysis.apply = wrap(PendingAnalysis.apply, "radiomics + classifier")  # type: ignore[method-assign]
    with _stage("load bundle", record):
        segmenter = load_segmenter(read_bundle_info(BUNDLE), device="cpu")
    result = run_batch(
        export, out, bundle=BUNDLE, options=_batch_options(seeds, out), segmenter=segmenter
    )
    row = result.records[0]
    return {
        "status": row.status.value,
        "reason": row.reason,
        "stages": {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in record.items()},
    }


def _batch_options(seeds: Path, out: Path) -> Any:
    from monai_tumor.pipeline import BatchOptions

    return BatchOptions(
        seeds_csv=seeds, index_path=out / "index.sqlite", device="cpu", progress=False
    )


def whole_child(export: Path, seeds: Path, out: Path, threads: int) -> dict[str, Any]:
    """Run one batch over the big CT in this process (peak RSS measured from outside)."""
    import torch

    from monai_tumor.pipeline import run_batch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = run_batch(export, out, bundle=BUNDLE, options=_batch_options(seeds, out))
    series = []
    for row in result.records:
        manifest = json.loads((out / str(row.folder) / "manifest.json").read_text(encoding="utf-8"))
        series.append(
            {
                "status": row.status.value,
                "reason": row.reason,
                "total_volume_ml": row.total_volume_ml,
                "fields_of_view": manifest.get("fields_of_view"),
            }
        )
    return {"wall_s": round(time.perf_counter() - start, 1), "series": series}


def _child(
    mode: str, export: Path, seeds: Path, out: Path, threads: int
) -> tuple[dict[str, Any], float, float]:
    """Run a child mode of this script in a fresh process: (its JSON, wall s, peak RSS MiB)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MONAI_TUMOR_DATA=str(data_root()))
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        str(export),
        str(seeds),
        str(out),
        str(threads),
    ]
    wall, rss, stdout = run_timed(cmd, env=env)
    return json.loads(stdout.strip().splitlines()[-1]), wall, rss


def part_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of the pipeline on the 512 x 512 x 400 CT, whole and per stage; readers."""
    import bench_read

    work = Path(args.work)
    series, seeds = build_ct(work / "ct400")
    export = series.parent
    rows: dict[str, Any] = {}
    for mode in ("whole", "stages"):
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            found, wall, rss = _child(mode, export, seeds, Path(tmp) / "out", args.threads)
        rows[mode] = {**found, "process_wall_s": round(wall, 1), "process_peak_rss_mib": round(rss)}
        print(f"memory {mode}: peak RSS {rss:.0f} MiB, {wall:.0f} s", flush=True)
        for name, stage in found.get("stages", {}).items():
            print(f"  {name}: {stage}", flush=True)
    # Three such CTs in one batch: one read ahead, one segmented, one being written.
    for copy in (1, 2):
        several, _ = build_ct(work / "ct400x3", copy=copy)
    first = several.parent / "ct400"
    first.mkdir(exist_ok=True)
    for f in series.iterdir():
        if not (first / f.name).exists():
            (first / f.name).symlink_to(f)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        found, wall, rss = _child("whole", first.parent, seeds, Path(tmp) / "out", args.threads)
    rows["whole, 3 CTs"] = {
        **found,
        "process_wall_s": round(wall, 1),
        "process_peak_rss_mib": round(rss),
    }
    print(f"memory 3 CTs in one batch: peak RSS {rss:.0f} MiB, {wall:.0f} s", flush=True)
    readers = {}
    for name in bench_read.IN_PROCESS:
        readers[name] = round(bench_read._child_rss_rise(name, series))
        print(f"read {name}: peak RSS rise {readers[name]} MiB", flush=True)
    return {
        "ct": "LUNG1-001 re-stacked to 400 x 512 x 512 (1.0 mm slices, real HU, new UIDs)",
        "voxels": 400 * 512 * 512,
        "float32_volume_mib": round(400 * 512 * 512 * 4 / 2**20),
        "pipeline": rows,
        "reader_peak_rss_rise_mib": readers,
    }


# --------------------------------------------------------------------------- batch


#: ``batch`` environments compared: as shipped (``batch`` sets ``OMP_WAIT_POLICY=PASSIVE``
#: unless the environment has it: idle OpenMP threads sleep), and with them spinning.
BATCH_ENVS: dict[str, dict[str, str]] = {
    "default": {},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
}


def _batch_run(export: Path, out: Path, index: Path, env: dict[str, str]) -> dict[str, Any]:
    import bench_dask

    wall, rss, _ = run_timed(bench_dask.command(export, out, index, None), env=env)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    per_series = []
    for row in summary["series"]:
        manifest = json.loads((out / row["folder"] / "manifest.json").read_text(encoding="utf-8"))
        per_series.append(
            {
                "status": row["status"],
                "read_s": manifest.get("seconds_read"),
                "segment_s": manifest.get("seconds_inference"),
                "total_s": row.get("seconds"),
            }
        )
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(rss),
        "series_per_min": round(len(per_series) / wall * 60, 2),
        "sum_of_series_s": round(sum(float(r["total_s"] or 0.0) for r in per_series), 1),
        "read_s": round(sum(float(r["read_s"] or 0.0) for r in per_series), 1),
        "segment_s": round(sum(float(r["segment_s"] or 0.0) for r in per_series), 1),
        "series": per_series,
    }


def part_batch(args: argparse.Namespace) -> dict[str, Any]:
    """Series per minute of a one-process ``batch`` on the sample export (prefetching reads)."""
    import bench_dask

    base = dict(os.environ, PYTHONPATH=str(ROOT), MONAI_TUMOR_DATA=str(data_root()))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in BATCH_ENVS}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp_name:
        tmp = Path(tmp_name)
        series = bench_dask.build_export(tmp / "export", data_root())
        index = tmp / "index.sqlite"
        for run in range(args.runs):
            for n, (name, extra) in enumerate(BATCH_ENVS.items()):
                out = tmp / f"out-{run}-{n}"
                row = _batch_run(tmp / "export", out, index, {**base, **extra})
                runs[name].append(row)
                print(f"batch {name} run {run + 1}: {row['wall_s']} s, {row['series_per_min']}/min")
    return {
        "export": {name: list(paths) for name, paths in bench_dask.CASES.items()},
        "series": series,
        "rows": [
            {
                "environment": name,
                "median_wall_s": statistics.median(r["wall_s"] for r in rows),
                "median_series_per_min": statistics.median(r["series_per_min"] for r in rows),
                "runs": rows,
            }
            for name, rows in runs.items()
        ],
    }


# ------------------------------------------------------------------------- startup


def part_startup(args: argparse.Namespace) -> dict[str, Any]:
    """Whole-process seconds of ``monai-tumor --help`` and of ``scan`` on LUNG1-001 (134 files)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MONAI_TUMOR_DATA=str(data_root()))
    cli = [sys.executable, "-c", "from monai_tumor.cli.main import main; main()"]
    series = data_root() / "lung1" / "LUNG1-001" / "image"
    rows: dict[str, list[float]] = {"--help": [], "scan (LUNG1-001, 134 files)": []}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for run in range(max(3, args.runs)):
            rows["--help"].append(run_timed([*cli, "--help"], env=env)[0])
            index = Path(tmp) / f"index-{run}.sqlite"
            scan = [*cli, "scan", str(series), "--index", str(index)]
            rows["scan (LUNG1-001, 134 files)"].append(run_timed(scan, env=env)[0])
    for name, times in rows.items():
        print(f"{name}: median {statistics.median(times):.2f} s", flush=True)
    return {
        "rows": [
            {
                "command": name,
                "median_s": round(statistics.median(t), 3),
                "runs_s": [round(x, 3) for x in t],
            }
            for name, t in rows.items()
        ]
    }


# ---------------------------------------------------------------------------- main

PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "voi": part_voi,
    "dice": part_dice,
    "memory": part_memory,
    "batch": part_batch,
    "startup": part_startup,
}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, export, seeds, out, threads = sys.argv[2:7]
        fn = stages_child if mode == "stages" else whole_child
        print(json.dumps(fn(Path(export), Path(seeds), Path(out), int(threads))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (CT, outputs)")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--vois", type=int, default=40, help="held-out VOIs timed (0: all)")
    parser.add_argument("--dice-limit", type=int, default=0, help="VOIs for Dice (0: all 154)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    for part in args.parts:
        result[part] = {**run_info(), **PARTS[part](args)}
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _print_tables(result)
    return 0


def _print_tables(result: dict[str, Any]) -> None:
    if "voi" in result:
        print(
            "\n| configuration | s per VOI run | CPU s | network | pre | post | crop/paste/other "
            "| Dice vs released min / mean | identical |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in result["voi"]["rows"]:
            print(
                f"| {r['configuration']} | {r['s_per_run']:.3f} | {r['cpu_s_per_run']:.3f} "
                f"| {r['network_s']:.3f} | {r['preprocessing_s']:.3f} "
                f"| {r['postprocessing_s']:.3f} | {r['crop_paste_other_s']:.3f} "
                f"| {r['dice_vs_released_min']} / {r['dice_vs_released_mean']} "
                f"| {r['identical_masks']}/{r['vois']} |"
            )
    if "dice" in result:
        print("\n| configuration | held-out mean Dice | VOIs | stock wall s | CPU s |")
        print("|---|---:|---:|---:|---:|")
        for r in result["dice"]["rows"]:
            print(
                f"| {r['configuration']} | {r['mean_dice']:.4f} | {r['vois']} | {r['wall_s']} "
                f"| {r['cpu_s']} |"
            )
    if "memory" in result:
        mem = result["memory"]
        print(f"\nwhole pipeline peak RSS {mem['pipeline']['whole']['process_peak_rss_mib']} MiB")
        print("| stage | peak RSS MiB | rise MiB | s |\n|---|---:|---:|---:|")
        for name, row in mem["pipeline"]["stages"]["stages"].items():
            print(f"| {name} | {row['peak_rss_mib']} | {row['rise_mib']} | {row['seconds']} |")
    if "startup" in result:
        for r in result["startup"]["rows"]:
            print(f"{r['command']}: {r['median_s']} s")
    if "batch" in result:
        for b in result["batch"]["rows"]:
            print(
                f"batch {b['environment']}: {b['median_series_per_min']} series/min "
                f"(median wall {b['median_wall_s']} s)"
            )


if __name__ == "__main__":
    raise SystemExit(main())
