"""Radiomics worker processes: the same features as in the caller, robust to dying workers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monai_tumor.radiomics import pool as pool_module
from monai_tumor.radiomics.extract import compute_features_in_memory
from monai_tumor.radiomics.pool import (
    FAMILY_COST,
    WORKER_NICENESS,
    FeaturePool,
    merge_in_output_order,
    split_families,
)
from monai_tumor.radiomics.settings import RadiomicsSettings
from tests.support.lidc_voi import lidc_voi, nodule_radiomics_settings

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


FAMILIES = tuple(FAMILY_COST)


@given(
    families=st.lists(st.sampled_from(FAMILIES), min_size=1, unique=True),
    groups=st.integers(1, 6),
)
def test_split_families_covers_every_family_once(families: list[str], groups: int) -> None:
    parts = split_families(families, groups)
    assert 1 <= len(parts) <= min(groups, len(families))
    flat = [f for part in parts for f in part]
    assert sorted(flat) == sorted(families)
    rank = {f: i for i, f in enumerate(families)}
    assert all(list(part) == sorted(part, key=rank.__getitem__) for part in parts)


def test_split_families_balances_the_cost() -> None:
    parts = split_families(FAMILIES, 2)
    costs = [sum(FAMILY_COST[f] for f in part) for part in parts]
    assert max(costs) - min(costs) <= max(FAMILY_COST.values())
    assert sorted(split_families(("glcm", "unknown"), 2)) == [("glcm",), ("unknown",)]


def test_merge_puts_the_families_back_in_mirps_order() -> None:
    parts = [{"cm_a": 1.0, "ngl_b": 2.0}, {"morph_volume": 3.0, "stat_mean": 4.0}, {"x_y": 5.0}]
    merged = merge_in_output_order(parts)
    assert list(merged) == ["morph_volume", "stat_mean", "cm_a", "ngl_b", "x_y"]


@pytest.fixture(scope="module")
def pool() -> Iterator[FeaturePool]:
    with FeaturePool(workers=2) as started:
        yield started


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return list(a) == list(b) and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


@pytest.mark.parametrize("case", ["LIDC-IDRI-0686_R_5", "LIDC-IDRI-0018_R_4"])
def test_the_pool_gives_the_callers_features(pool: FeaturePool, data_dir: Path, case: str) -> None:
    """Families split over two processes: the same values in the same order, Monte Carlo
    estimates included (LIDC-IDRI-0018_R_4 has over 1000 voxels at 1 mm)."""
    settings = nodule_radiomics_settings()
    image, mask = lidc_voi(data_dir, case)
    here = compute_features_in_memory(image, mask, settings=settings, sample_name=case)
    there = pool.compute(image, mask, settings=settings, sample_name=case)
    assert _same(here, there)
    assert not pool.broken


def test_worker_log_records_reach_the_callers_logging(
    pool: FeaturePool, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MIRP's records in a worker go where this process's logging sends them."""
    settings = nodule_radiomics_settings()
    image, mask = lidc_voi(data_dir, "LIDC-IDRI-0686_R_5")
    with caplog.at_level("INFO"):
        pool.compute(image, mask, settings=settings, sample_name="logged-region")
        deadline = time.monotonic() + 10  # the records travel on their own queue
        while "logged-region" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert any(
        "logged-region" in r.getMessage() and str(r.processName).startswith("SpawnProcess")
        for r in caplog.records
    )


def test_a_mirp_error_in_a_worker_reaches_the_caller(pool: FeaturePool, data_dir: Path) -> None:
    from monai_tumor.errors import RadiomicsError

    image, mask = lidc_voi(data_dir, "LIDC-IDRI-0686_R_5")
    empty = nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine)
    with pytest.raises(RadiomicsError, match="empty-region"):
        pool.compute(image, empty, settings=RadiomicsSettings(), sample_name="empty-region")
    assert not pool.broken  # a bad region is not a broken pool


def _worker_processes(started: FeaturePool) -> list[Any]:
    executor = started._executor
    assert executor is not None
    return list((getattr(executor, "_processes", None) or {}).values())


def _workers(started: FeaturePool) -> list[int]:
    return [p.pid for p in _worker_processes(started) if p.pid is not None]


def test_workers_run_at_a_lower_priority(pool: FeaturePool) -> None:
    pids = _workers(pool)
    assert len(pids) == 2
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
    deadline = time.monotonic() + 60  # a worker may still be starting
    while time.monotonic() < deadline:
        if all(os.getpriority(os.PRIO_PROCESS, pid) == expected for pid in pids):
            break
        time.sleep(0.1)
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [expected] * 2


def test_a_killed_worker_falls_back_to_the_caller(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = nodule_radiomics_settings()
    image, mask = lidc_voi(data_dir, "LIDC-IDRI-0686_R_5")
    expected = compute_features_in_memory(image, mask, settings=settings, sample_name="k")
    with FeaturePool(workers=2, warm=False) as broken:
        for future in broken._warming:
            future.result(timeout=120)
        os.kill(_workers(broken)[0], signal.SIGKILL)
        time.sleep(0.5)
        with caplog.at_level("WARNING"):
            values = broken.compute(image, mask, settings=settings, sample_name="k")
        assert broken.broken
        assert "in this process from now on" in caplog.text
        assert _same(values, expected)
        assert _same(broken.compute(image, mask, settings=settings, sample_name="k"), expected)


def test_close_terminates_the_workers() -> None:
    """close() does not ask idle workers to exit (their interpreter shutdown would keep
    the caller waiting): it terminates them, and they are gone afterwards."""
    started = FeaturePool(workers=2)
    for future in started._warming:
        future.result(timeout=120)
    processes = _worker_processes(started)
    assert len(processes) == 2
    started.close()
    started.close()  # twice is fine
    assert "closed" in repr(started)
    # The executor's own thread may reap a worker first (our join then returns at once
    # with no exit code yet): wait until the exit code is known, from whichever thread.
    deadline = time.monotonic() + 10
    while any(p.exitcode is None for p in processes) and time.monotonic() < deadline:
        for process in processes:
            process.join(timeout=0.05)
    assert [p.exitcode for p in processes] == [-signal.SIGTERM] * 2


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, or a process reaped while we look, is gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_workers_end_when_their_caller_is_killed(tmp_path: Path) -> None:
    """A caller killed with SIGKILL never closes the pool: its workers notice and exit,
    also one that was still starting when the caller died."""
    code = textwrap.dedent(
        """
        import json, sys, time
        from monai_tumor.radiomics.pool import FeaturePool
        if __name__ == "__main__":
            pool = FeaturePool(workers=2, warm=False)
            for f in pool._warming:
                f.result(timeout=120)
            print(json.dumps([p.pid for p in pool._executor._processes.values()]), flush=True)
            time.sleep(600)
        """
    )
    script = tmp_path / "caller.py"
    script.write_text(code, encoding="utf-8")
    caller = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert caller.stdout is not None
        pids = json.loads(caller.stdout.readline())
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        caller.kill()
        caller.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)
    finally:
        caller.kill()


def test_for_bundle_starts_workers_only_when_they_pay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert FeaturePool.for_bundle(BUNDLES / "brats_glioma_mri", features=False) is None
    assert FeaturePool.for_bundle(tmp_path) is None  # no configs/radiomics.json
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "radiomics.json").write_text("{not json", encoding="utf-8")
    assert FeaturePool.for_bundle(tmp_path) is None  # the run reports the bad config
    monkeypatch.setattr(pool_module, "available_cpus", lambda: 1)
    assert FeaturePool.for_bundle(BUNDLES / "brats_glioma_mri") is None
    monkeypatch.setattr(pool_module, "available_cpus", lambda: 8)
    started = FeaturePool.for_bundle(BUNDLES / "brats_glioma_mri")
    assert started is not None
    with started:
        assert started.workers == 2
