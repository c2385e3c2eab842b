"""Soak benchmark: a batch over 1,000 small series with injected faults, killed and rerun.

The export (built by the script in a temporary folder) holds ``--series`` small CT series
(8 slices of 32 x 28 with a bright block, one study each) and these faults:

* **unreadable files**: in 3 % of the series one slice is replaced by bytes that are not
  DICOM (the series then misses a slice and must end ``failed`` with the reason); in
  another 3 % a truncated copy of one slice sits in a ``junk`` folder beside the intact
  one (the series must end ``done``);
* **permission errors** that hold even for root (a ``chmod 000`` file is readable by
  root): entries that ``open()`` refuses, a dangling symlink (``ENOENT``) and a symlink
  loop (``ELOOP``), in 3 % of the series folders;
* **a full disk for the output folder**: in the interrupted runs before half the kills,
  every ``fsync`` of a file in 10 % of the series' output folders fails with ``ENOSPC``
  (``os.fsync`` patched in the batch process: the point where a full disk surfaces for the
  atomic writer); those series end ``failed`` in that run and are redone by the next;
* **kills**: the batch process is killed with SIGKILL at a random moment ``--kills``
  times (seeded), then run once more to completion. Each run is killed after a uniform
  random share (``--kill-window``) of ``clean run time / (2 x kills)``, so the kills fall
  along the first half of the work rather than after it is finished; a run that finishes
  before its kill does not count as one.

A clean run of the same export into another folder is the reference. Checked at the end:
every series is ``done`` with valid outputs or ``failed`` with a reason; the statuses,
reasons, mask voxels, affines, ``lesions.json``, SEG pixel data and UIDs and cache keys
equal the clean run's; no temporary file is left anywhere; every report file parses. After
every kill the report files present must parse too.

The segmentation model is a threshold stand-in (``tests/support/pipeline_doubles.py``):
the soak exercises scanning, reading, writing, resuming and reporting, not a network.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_soak.py [--series 1000] [--kills 20]

With ``--keep DIR`` the work folder is kept, and a rerun with the same folder reuses its
export and its finished clean run (recorded in ``DIR/clean_run.json``) and redoes the
interrupted runs.

Writes ``benchmarks/results/soak.json`` and prints a summary table.
"""

from __future__ import annotations

import argparse
import csv
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import run_info  # noqa: E402

FAULTY_SHARE = 0.03
DISK_FULL_SHARE = 0.10
RULES = {"selections": [{"name": "ct", "conditions": {"Modality": "(?i)^CT$"}}]}


def _pick(key: str, salt: str, share: float) -> bool:
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < share


def _series_faults(name: str) -> tuple[str | None, bool]:
    """The faults of series ``name``: its slice fault (if any) and whether it has unopenable
    entries. Decided from the name alone, so the export and its fault counts agree."""
    slice_fault = None
    if _pick(name, "not-dicom", FAULTY_SHARE):
        slice_fault = "not_dicom_slice"
    elif _pick(name, "truncated", FAULTY_SHARE):
        slice_fault = "truncated_copy"
    return slice_fault, _pick(name, "unopenable", FAULTY_SHARE)


def fault_counts(n_series: int) -> dict[str, int]:
    """How many faults of each kind the export of ``n_series`` series holds."""
    counts = {"not_dicom_slice": 0, "truncated_copy": 0, "unopenable_entries": 0}
    for i in range(n_series):
        slice_fault, unopenable = _series_faults(f"s{i:04d}")
        if slice_fault is not None:
            counts[slice_fault] += 1
        counts["unopenable_entries"] += 2 * unopenable
    return counts


def build_export(root: Path, n_series: int) -> None:
    """Write the export of ``n_series`` series with their faults (see :func:`fault_counts`)."""
    import numpy as np

    from tests.support.dicom_factory import lps_affine, write_series

    aff = lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 0.8), slice_step=2.0)
    for i in range(n_series):
        name = f"s{i:04d}"
        stored = np.zeros((32, 28, 8), dtype=np.int16)
        stored[5 + i % 10 : 12 + i % 10, 4:11, 2:6] = 300 + i % 50
        folder = root / f"p{i // 10:03d}" / name
        files = write_series(
            folder, stored, affine_lps=aff, study_uid=f"1.2.826.0.1.3680043.8.498.{i + 1}"
        )
        slice_fault, unopenable = _series_faults(name)
        if slice_fault == "not_dicom_slice":
            files[3].write_bytes(b"this is not a DICOM file\n" * 40)
        elif slice_fault == "truncated_copy":
            junk = folder.parent / f"{name}_junk"
            junk.mkdir()
            data = files[4].read_bytes()
            (junk / "cut.dcm").write_bytes(data[: len(data) // 3])
        if unopenable:
            (folder / "dangling.dcm").symlink_to(folder / "no-such-file")
            (folder / "loop.dcm").symlink_to(folder / "loop.dcm")


def _disk_full_hook(out: Path) -> None:
    """In the batch process: fsync of files in 10 % of the series folders fails (ENOSPC)."""
    real_fsync = os.fsync
    out_text = str(out.resolve())

    def fsync(fd: Any) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        try:
            path = os.readlink(f"/proc/self/fd/{number}")
        except OSError:
            path = ""
        if path.startswith(out_text):
            parts = Path(path).relative_to(out_text).parts
            if len(parts) >= 3 and _pick(parts[1], "disk-full", DISK_FULL_SHARE):
                raise OSError(errno.ENOSPC, "No space left on device (simulated)", path)
        real_fsync(fd)

    os.fsync = fsync


def child(export: Path, out: Path, index: Path, disk_full: bool) -> int:
    """One batch run (in its own process, so that it can be killed)."""
    from monai_tumor.pipeline.batch import BatchOptions, run_batch
    from tests.support.pipeline_doubles import ThresholdSegmenter, fake_bundle_info

    bundle_root = index.parent / "bundle"
    bundle_root.mkdir(parents=True, exist_ok=True)
    rules = bundle_root / "rules.json"
    if not rules.exists():
        rules.write_text(json.dumps(RULES))
    if disk_full:
        _disk_full_hook(out)
    result = run_batch(
        export,
        out,
        bundle=fake_bundle_info(bundle_root, selection_rules=rules),
        options=BatchOptions(progress=False, workers=1, index_path=index),
        segmenter=ThresholdSegmenter(),
    )
    return 0 if result is not None else 1


def _command(export: Path, out: Path, index: Path, disk_full: bool) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(export),
        str(out),
        str(index),
        "1" if disk_full else "0",
    ]


def _run_to_end(command: list[str]) -> float:
    """Run one batch process to completion; its wall time (s)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command[3:5]}: the batch failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def _check_reports(out: Path) -> None:
    if (out / "summary.json").exists():
        json.loads((out / "summary.json").read_text())
    if (out / "summary.csv").exists():
        with open(out / "summary.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or any(len(r) != len(rows[0]) for r in rows):
            raise AssertionError("summary.csv is half-written")
    if (out / "index.html").exists() and not (
        (out / "index.html").read_text().rstrip().endswith("</html>")
    ):
        raise AssertionError("index.html is half-written")


def _state(out: Path) -> tuple[dict[str, Any], list[str]]:
    """Comparable content of every series (validating each output) and any problem found."""
    import nibabel as nib
    import numpy as np
    import pydicom

    from monai_tumor.pipeline.outputs import MANIFEST_NAME, completed_manifest

    problems: list[str] = []
    _check_reports(out)
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if ".tmp" in p.name]
    problems += [f"temporary file left: {p}" for p in leftovers]
    summary = json.loads((out / "summary.json").read_text())
    state: dict[str, Any] = {}
    for row in summary["series"]:
        key = row["series_instance_uid"]
        entry: dict[str, Any] = {"status": row["status"]}
        if row["status"] != "done":  # a done series' reason says whether it was reused
            entry["reason"] = row["reason"]
        else:
            folder = out / row["folder"]
            manifest = json.loads((folder / MANIFEST_NAME).read_text())
            if completed_manifest(folder, manifest["cache_key"]) is None:
                problems.append(f"{row['folder']}: manifest does not match its files")
            seg = pydicom.dcmread(folder / "seg.dcm")
            mask = nib.Nifti1Image.from_filename(folder / "mask.nii.gz")
            entry.update(
                mask=hashlib.sha256(np.asarray(mask.dataobj).tobytes()).hexdigest(),
                affine=np.asarray(mask.affine).round(6).tolist(),
                lesions=json.loads((folder / "lesions.json").read_text()),
                seg_pixels=hashlib.sha256(seg.pixel_array.tobytes()).hexdigest(),
                seg_uids=[str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID)],
                cache_key=manifest["cache_key"],
            )
        if row["status"] == "failed" and not row["reason"]:
            problems.append(f"{key}: failed without a reason")
        state[key] = entry
    return state, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--kill-window",
        type=float,
        nargs=2,
        default=(0.05, 1.0),
        metavar=("LOW", "HIGH"),
        help="each kill comes after a uniform random share of clean run time / (2 x kills)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    export = work / "export"
    try:
        start = time.perf_counter()
        if not export.exists():
            build_export(export, args.series)
        faults = fault_counts(args.series)
        build_s = time.perf_counter() - start

        record = work / "clean_run.json"
        kept = json.loads(record.read_text()) if record.exists() else {}
        if kept.get("series") == args.series and (work / "clean" / "summary.json").exists():
            clean_s = float(kept["clean_run_s"])  # a kept work folder's finished clean run
        else:
            clean_s = _run_to_end(_command(export, work / "clean", work / "clean.sqlite", False))
            record.write_text(json.dumps({"series": args.series, "clean_run_s": clean_s}))
        shutil.rmtree(work / "soak", ignore_errors=True)
        (work / "soak.sqlite").unlink(missing_ok=True)

        rng = random.Random(args.seed)
        killed = survived = 0
        disk_full_runs = 0
        runs_s: list[float] = []
        # Runs go on until --kills of them were killed (a run that finishes before its kill
        # does not count; at most 3 x --kills runs); the first half run with a full disk.
        share = clean_s / (2 * args.kills)  # the kills fall in the first half of the work
        while killed < args.kills and len(runs_s) < 3 * args.kills:
            disk_full = killed < args.kills // 2
            disk_full_runs += int(disk_full)
            cmd = _command(export, work / "soak", work / "soak.sqlite", disk_full)
            begin = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=rng.uniform(*args.kill_window) * share)
                survived += 1
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
                proc.wait()
            runs_s.append(time.perf_counter() - begin)
            _check_reports(work / "soak")
        final_s = _run_to_end(_command(export, work / "soak", work / "soak.sqlite", False))

        reference, ref_problems = _state(work / "clean")
        resumed, problems = _state(work / "soak")
        differences = [
            key
            for key in sorted(set(reference) | set(resumed))
            if reference.get(key) != resumed.get(key)
        ]
        statuses: dict[str, int] = {}
        for entry in resumed.values():
            statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
        result = {
            **run_info(),
            "series": args.series,
            "files": sum(1 for p in export.rglob("*") if p.is_file() or p.is_symlink()),
            "faults": {**faults, "disk_full_runs": disk_full_runs, "kills": killed},
            "kill_window": list(args.kill_window),
            "runs_finished_before_their_kill": survived,
            "statuses": statuses,
            "differences_from_clean_run": len(differences),
            "first_differences": differences[:20],
            "problems": ref_problems + problems,
            "build_s": round(build_s, 1),
            "clean_run_s": round(clean_s, 1),
            "interrupted_runs": len(runs_s),
            "interrupted_runs_s": round(sum(runs_s), 1),
            "final_run_s": round(final_s, 1),
        }
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| measure | value |\n|---|---|")
    for key in ("series", "files", "faults", "statuses", "differences_from_clean_run"):
        print(f"| {key} | {result[key]} |")
    print(f"| problems | {len(result['problems'])} |")
    print(
        f"| times | clean run {result['clean_run_s']} s, {result['interrupted_runs']} "
        f"interrupted runs {result['interrupted_runs_s']} s, final run {result['final_run_s']} s |"
    )
    return 1 if result["differences_from_clean_run"] or result["problems"] else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, export_arg, out_arg, index_arg, full = sys.argv
        raise SystemExit(child(Path(export_arg), Path(out_arg), Path(index_arg), full == "1"))
    raise SystemExit(main())
