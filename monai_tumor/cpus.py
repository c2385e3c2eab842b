"""How many CPUs this process may use.

Light on purpose (no torch): helper processes are sized before a command's heavy imports.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus"]

#: cgroup v2 CPU limit of this process's container (``"max 100000"`` or ``"150000 100000"``).
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _cgroup_cpu_limit(path: Path = _CGROUP_CPU_MAX) -> int | None:
    try:
        quota, period = path.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus(*, cgroup_cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """Return the number of CPUs this process may run on (at least 1).

    The CPUs of the process's affinity mask (``os.sched_getaffinity``: what ``taskset``,
    a batch scheduler or ``docker --cpuset-cpus`` allow), further limited by a cgroup v2
    CPU quota (``docker --cpus``, Kubernetes CPU limits), rounded up. ``os.cpu_count()``
    counts the host's CPUs instead, and torch's default counts physical cores: in a
    container both can exceed what the process gets, and more torch threads than CPUs
    only slow every thread down.

    Parameters
    ----------
    cgroup_cpu_max
        The cgroup v2 ``cpu.max`` file to read (tests point it elsewhere).

    Returns
    -------
    int
        CPUs to give torch's intra-op thread pool.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(cgroup_cpu_max)
    return max(1, min(count, limit) if limit is not None else count)
