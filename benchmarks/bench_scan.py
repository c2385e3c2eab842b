"""Benchmark: scanning a 10,000-file DICOM export (headers only, warm file cache).

The export is built in a temporary folder from the real sts/ and lung1/ files:
each round copies every source file with its SOPInstanceUID and
SeriesInstanceUID rewritten in place (same length, so the file stays valid),
spread over nested folders, names without extensions.

Compared in the same run, each in a fresh child process (so peak RSS is its own),
timed after the imports (the rate of a library call in a running process):

* ``scan_export`` end to end (walk + parse + SQLite index + series summaries),
  with a process pool, a thread pool, and serially, cold index;
* ``scan_export`` rescan of the unchanged export (stat only);
* the ``monai-tumor scan --json`` command, whole process, start-up and output included;
* the header parser alone: ``inspect_file`` in a loop;
* the obvious alternative: ``pydicom.dcmread(path, stop_before_pixels=True)`` in
  a loop (no grouping, no index).

Reported per method: median wall time of N runs, files/s, files per CPU-second
(user+sys of the child and its workers: comparable across machine load), ratio
to the pydicom loop, peak RSS of the child and of its largest worker (MiB).

Usage::

    .venv/bin/python benchmarks/bench_scan.py [--files 10000] [--runs 3] [--keep DIR]

Writes ``benchmarks/results/scan.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import run_info, run_timed  # noqa: E402

from monai_tumor.config import data_root  # noqa: E402

METHODS = {
    "scan_export (process pool)": "scan-process",
    "scan_export (thread pool)": "scan-thread",
    "scan_export (serial)": "scan-serial",
    "scan_export rescan, nothing changed": "rescan",
    "`monai-tumor scan --json` whole process (start-up included)": "cli",
    "inspect_file loop (parser only)": "inspect",
    "pydicom.dcmread(stop_before_pixels) loop": "pydicom",
}
BASELINE = "pydicom.dcmread(stop_before_pixels) loop"


def _sources() -> list[Path]:
    data = data_root()
    files = sorted(data.glob("sts/STS_*/*/dicom/image/*.dcm"))
    lung = sorted((data / "lung1" / "LUNG1-001" / "image").glob("*.dcm"))
    return files + lung


def build_export(dest: Path, n_files: int) -> int:
    """Write ``n_files`` DICOM files with unique UIDs under ``dest``."""
    import pydicom

    sources = []
    for path in _sources():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sources.append((path.read_bytes(), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)))
    written = 0
    round_ = 0
    while written < n_files:
        tag = f"{round_ + 10:02d}"
        for i, (data, sop, series) in enumerate(sources):
            if written >= n_files:
                break
            # Same-length UIDs keep every element length (and the file) valid.
            new_sop = tag + sop[2:]
            new_series = tag + series[2:]
            blob = data.replace(sop.encode(), new_sop.encode()).replace(
                series.encode(), new_series.encode()
            )
            folder = dest / f"R{round_:03d}" / f"S{i % 17:02d}" / f"T{i % 5}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"IM{i:05d}").write_bytes(blob)
            written += 1
        round_ += 1
    return written


def _files(export: Path) -> list[str]:
    return [
        os.path.join(d, f)
        for d, dirs, names in os.walk(export)
        for f in names
        if ".monai-tumor" not in d
    ]


def child(method: str, export: Path, index: Path) -> dict[str, Any]:
    """Run one method once in this process; return its timing and peak memory."""
    # Imports first: the scan rate is that of a library call in a running
    # process (the batch pipeline, a service); the CLI row adds start-up.
    import pydicom

    from monai_tumor.config import patient_key
    from monai_tumor.ingest.headers import inspect_file
    from monai_tumor.ingest.scan import scan_export

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu_start = sum(u.ru_utime + u.ru_stime for u in usage)
    start = time.perf_counter()
    if method.startswith("scan-") or method == "rescan":
        executor = {"scan-process": "process", "scan-thread": "thread"}.get(method, "serial")
        result = scan_export(
            export, index_path=index, progress=False, executor=executor, workers=os.cpu_count()
        )
        files = result.stats.files_found
        extra = {
            "series": len(result.series),
            "parsed": result.stats.files_parsed,
            "workers": result.stats.workers,
        }
    elif method == "inspect":
        paths = _files(export)
        key = patient_key()  # looked up once, as scan_export does
        for path in paths:
            inspect_file(path, patient_key=key)
        files, extra = len(paths), {}
    else:
        paths = _files(export)
        for path in paths:
            pydicom.dcmread(path, stop_before_pixels=True)
        files, extra = len(paths), {}
    seconds = time.perf_counter() - start
    self_usage = resource.getrusage(resource.RUSAGE_SELF)
    child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = self_usage.ru_maxrss / 1024
    children = child_usage.ru_maxrss / 1024
    cpu = sum(u.ru_utime + u.ru_stime for u in (self_usage, child_usage)) - cpu_start
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "files": files,
        "peak_rss_mib": own,
        "peak_rss_workers_mib": children,
        **extra,
    }


def run_cli(export: Path, index: Path) -> dict[str, Any]:
    """Time the ``monai-tumor scan --json`` command as a whole process (start-up included)."""
    cli = Path(sys.executable).with_name("monai-tumor")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, rss, stdout = run_timed(
        [str(cli), "scan", str(export), "--index", str(index), "--json"]
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(stdout)
    return {
        "seconds": seconds,
        "cpu_seconds": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "files": result["stats"]["files_found"],
        "peak_rss_mib": rss,
        "peak_rss_workers_mib": float("nan"),
        "series": sum(len(st["series"]) for p in result["patients"] for st in p["studies"]),
        "parsed": result["stats"]["files_parsed"],
        "workers": result["stats"]["workers"],
    }


def run_child(method: str, export: Path, index: Path) -> dict[str, Any]:
    if method == "cli":
        return run_cli(export, index)
    # The child's own ru_maxrss would include this process's high-water mark (Linux keeps it
    # across fork and exec); run_timed measures the child alone with /usr/bin/time.
    _, rss, stdout = run_timed(
        [
            sys.executable,
            __file__,
            "--child",
            method,
            "--export",
            str(export),
            "--index",
            str(index),
        ]
    )
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = rss
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build/reuse the export here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.export, args.index)))
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="bench_scan_"))
    export = args.keep or tmp / "export"
    try:
        if not export.exists() or not any(export.iterdir()):
            t0 = time.perf_counter()
            n = build_export(export, args.files)
            print(
                f"built {n} files in {time.perf_counter() - t0:.1f} s under {export}",
                file=sys.stderr,
            )
        for path in _files(export):  # warm the page cache for every method alike
            with open(path, "rb") as fh:
                fh.read(16384)
        rows: list[dict[str, Any]] = []
        for label, method in METHODS.items():
            runs = []
            for r in range(args.runs):
                index = tmp / f"index-{method}-{r}.sqlite"
                if method == "rescan":
                    index = tmp / "index-rescan.sqlite"
                    if r == 0:
                        run_child("scan-process", export, index)  # build it once
                runs.append(run_child(method, export, index))
            seconds = statistics.median(x["seconds"] for x in runs)
            files = runs[0]["files"]
            rows.append(
                {
                    "method": label,
                    "files": files,
                    "median_s": seconds,
                    "min_s": min(x["seconds"] for x in runs),
                    "files_per_s": files / seconds,
                    "files_per_cpu_s": files / statistics.median(x["cpu_seconds"] for x in runs),
                    "peak_rss_mib": max(x["peak_rss_mib"] for x in runs),
                    "peak_rss_workers_mib": max(x["peak_rss_workers_mib"] for x in runs),
                    **{k: runs[0][k] for k in ("series", "parsed", "workers") if k in runs[0]},
                }
            )
            print(f"{label}: {files / seconds:,.0f} files/s", file=sys.stderr)
        base = next(r for r in rows if r["method"] == BASELINE)
        for row in rows:
            row["speedup_vs_pydicom"] = row["files_per_s"] / base["files_per_s"]
        report = {
            "benchmark": "scan a DICOM export (headers only), warm file cache",
            "files": rows[0]["files"],
            "runs": args.runs,
            **run_info(),
            "results": rows,
        }
        out = ROOT / "benchmarks" / "results" / "scan.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(
            "| method | files | median s | files/s | files per CPU-s | vs pydicom loop "
            "| peak RSS MiB (workers) |"
        )
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print(
                f"| {row['method']} | {row['files']} | {row['median_s']:.2f} | "
                f"{row['files_per_s']:,.0f} | {row['files_per_cpu_s']:,.0f} | "
                f"{row['speedup_vs_pydicom']:.1f}x | "
                f"{row['peak_rss_mib']:.0f} ({row['peak_rss_workers_mib']:.0f}) |"
            )
        print(
            f"\n{report['date']}, {report['machine']['cpus']} CPUs, "
            f"load {report['machine']['load_average_1min']:.1f}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
