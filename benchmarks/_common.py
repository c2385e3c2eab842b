"""What every benchmark records beside its numbers (when, on what machine), and how a whole
process is timed."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_TIME = Path("/usr/bin/time")


def run_info() -> dict[str, Any]:
    """``{"date": ISO UTC, "machine": {...}}`` with the 1-minute load average (timings on a
    shared machine are only comparable within one run)."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
        },
    }


def data_label(path: Path, root: Path) -> str:
    """How a result file names an input: relative to the data root (``$MONAI_TUMOR_DATA``),
    never as an absolute path of the machine that ran it."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def run_timed(cmd: list[str], env: Mapping[str, str] | None = None) -> tuple[float, float, str]:
    """Run a command to completion; return (wall seconds, its max RSS in MiB, its stdout).

    The RSS comes from ``/usr/bin/time -f %M`` (NaN without it). ``wait4``'s
    ru_maxrss is not used: on Linux a child keeps its parent's high-water mark across
    fork and exec, which would report this process's RSS, not the command's.
    ``env`` replaces the environment (default: inherited).
    Raises ``RuntimeError`` with the end of its stderr if the command fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "time.txt"
        timer = ["/usr/bin/time", "-f", "%M", "-o", str(report)] if _TIME.exists() else []
        start = time.perf_counter()
        done = subprocess.run(
            [*timer, *cmd], capture_output=True, text=True, env=None if env is None else dict(env)
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[:4]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        rss = float(report.read_text().split()[-1]) / 1024 if timer else float("nan")
    return elapsed, rss, done.stdout
