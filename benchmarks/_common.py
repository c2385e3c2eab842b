"""What every benchmark records beside its numbers: when, and on what machine."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from typing import Any


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
