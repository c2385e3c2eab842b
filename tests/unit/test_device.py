"""Tests for monai_tumor.inference.device: device, CPU threads, native bfloat16."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from monai_tumor.errors import ConfigError
from monai_tumor.inference.device import available_cpus, native_bf16, select_device


@pytest.mark.parametrize("option", ["cpu", "CPU", " cpu "])
def test_cpu(option: str) -> None:
    assert select_device(option) == torch.device("cpu")


def test_auto_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("option", ["cuda", "cuda:0"])
def test_cuda_without_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, option: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU") as info:
        select_device(option)
    assert "cpu" in str(info.value)


def test_cuda_index_beyond_device_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        select_device("cuda:3")


@pytest.mark.parametrize("option", ["gpu", "", "meta", "cuda:x"])
def test_unknown_options_are_refused(option: str) -> None:
    with pytest.raises(ConfigError, match="device"):
        select_device(option)


@pytest.mark.parametrize(
    ("cpu_max", "limit"),
    [("max 100000\n", None), ("50000 100000\n", 1), ("150000 100000\n", 2), ("garbage", None)],
)
def test_available_cpus_follows_affinity_and_the_container_quota(
    tmp_path: Path, cpu_max: str, limit: int | None
) -> None:
    affinity = len(os.sched_getaffinity(0))
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max, encoding="ascii")
    expected = affinity if limit is None else min(affinity, limit)
    assert available_cpus(cgroup_cpu_max=path) == expected
    assert available_cpus(cgroup_cpu_max=tmp_path / "missing") == affinity


def test_available_cpus_never_exceeds_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert available_cpus() == 1


def test_native_bf16_is_a_cpu_feature_probe() -> None:
    import torch.cpu

    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16() is expected
