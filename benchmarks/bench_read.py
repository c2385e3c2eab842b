"""Benchmark: reading a 134-slice CT series (lung1) with a warm file cache.

Compared in the same run:

* ``monai_tumor.ingest.read_series`` (float32 HU; default one thread, and two threads)
* SimpleITK ``ImageSeriesReader`` (GDCM file ordering + read + numpy view)
* MONAI ``LoadImage(reader="PydicomReader")``
* the ``dcm2niix`` command (whole process, uncompressed NIfTI into a temp folder)

Reported per method: median and min wall time of N runs after one warm-up run,
median CPU time (process_time: all threads; robust when the machine is shared),
ratio to read_series, and peak memory: the rise in peak RSS of a fresh child
process doing one read (works for C/C++ libraries too), plus the tracemalloc
peak for in-process Python/numpy allocations (blind to ITK's C++ buffers).

Usage::

    .venv/bin/python benchmarks/bench_read.py [--runs 9] [--series PATH]

Writes ``benchmarks/results/read.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import data_label, run_info, run_timed  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402

DEFAULT_SERIES = data_root() / "lung1" / "LUNG1-001" / "image"


def read_series_f32(folder: Path) -> Any:
    from monai_tumor.ingest.reader import read_series

    return read_series(folder)


def read_series_two_threads(folder: Path) -> Any:
    from monai_tumor.ingest.reader import ReadOptions, read_series

    return read_series(folder, options=ReadOptions(workers=2))


def simpleitk(folder: Path) -> Any:
    import SimpleITK as sitk  # noqa: N813

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    return image, sitk.GetArrayViewFromImage(image)


def monai_pydicom(folder: Path) -> Any:
    from monai.transforms import LoadImage

    return LoadImage(reader="PydicomReader", image_only=True)(str(folder))


IN_PROCESS: dict[str, Callable[[Path], Any]] = {
    "read_series (float32, default: 1 thread)": read_series_f32,
    "read_series (workers=2)": read_series_two_threads,
    "SimpleITK ImageSeriesReader": simpleitk,
    "MONAI LoadImage(PydicomReader)": monai_pydicom,
}


def _dcm2niix(folder: Path, out: Path) -> tuple[float, float]:
    """Run dcm2niix once; wall seconds and max RSS (MiB)."""
    cmd = ["dcm2niix", "-z", "n", "-b", "n", "-f", "vol", "-o", str(out), str(folder)]
    elapsed, rss, _ = run_timed(cmd)
    return elapsed, rss


def _child_rss_rise(name: str, folder: Path) -> float:
    """Peak-RSS rise (MiB) of one read in a fresh interpreter, imports done first.

    The high-water mark is reset after the imports (``/proc/self/clear_refs``) so
    only the read itself counts.
    """
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(Path(__file__).parent)!r})
import bench_read as b
from pathlib import Path
import monai.transforms, SimpleITK, pydicom, torch
from monai_tumor.ingest import reader

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
b.IN_PROCESS[{name!r}](Path({str(folder)!r}))  # warm lazy imports and caches
import gc; gc.collect()
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
result = b.IN_PROCESS[{name!r}](Path({str(folder)!r}))
print(status("VmHWM") - base)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "read.json")
    args = parser.parse_args()
    folder: Path = args.series
    n_files = sum(1 for p in folder.iterdir() if p.is_file())

    rows: list[dict[str, Any]] = []
    for name, fn in IN_PROCESS.items():
        fn(folder)  # warm-up: file cache and lazy imports
        times, cpu = [], []
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = fn(folder)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            del result
        tracemalloc.start()
        result = fn(folder)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del result
        rows.append(
            {
                "method": name,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "cpu_s": statistics.median(cpu),
                "tracemalloc_peak_mib": peak / 2**20,
                "rss_rise_mib": _child_rss_rise(name, folder),
            }
        )

    if shutil.which("dcm2niix"):
        with tempfile.TemporaryDirectory() as tmp:
            _dcm2niix(folder, Path(tmp))  # warm-up
            runs = []
            for i in range(args.runs):
                out = Path(tmp) / str(i)
                out.mkdir()
                runs.append(_dcm2niix(folder, out))
        rows.append(
            {
                "method": "dcm2niix (process)",
                "median_s": statistics.median(t for t, _ in runs),
                "min_s": min(t for t, _ in runs),
                "cpu_s": None,
                "tracemalloc_peak_mib": None,
                "rss_rise_mib": max(r for _, r in runs),  # whole process max RSS
            }
        )

    ref = rows[0]["median_s"]
    for row in rows:
        row["ratio_to_read_series"] = row["median_s"] / ref

    report = {
        "benchmark": "read a DICOM series, warm file cache",
        "series": data_label(folder, data_root()),
        "files": n_files,
        "runs": args.runs,
        **run_info(),
        "results": rows,
        "notes": [
            "read_series returns float32 HU (2 bytes more per voxel than SimpleITK's int16);",
            "SimpleITK time includes GDCM's file ordering;",
            "its C++ buffers are invisible to tracemalloc (see the RSS column);",
            "dcm2niix memory is the whole process's max RSS.",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    load = report["machine"]["load_average_1min"]
    print(f"{n_files} files from {folder}, {args.runs} runs, load avg {load:.1f}\n")
    print(
        "| method | median s | min s | CPU s | x read_series | peak RSS rise MiB "
        "| tracemalloc peak MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        tm = "-" if row["tracemalloc_peak_mib"] is None else f"{row['tracemalloc_peak_mib']:.0f}"
        cpu_s = "-" if row["cpu_s"] is None else f"{row['cpu_s']:.3f}"
        print(
            f"| {row['method']} | {row['median_s']:.3f} | {row['min_s']:.3f} | {cpu_s} | "
            f"{row['ratio_to_read_series']:.2f} | {row['rss_rise_mib']:.0f} | {tm} |"
        )


if __name__ == "__main__":
    main()
