"""Tests for monai_tumor.inference.device.select_device."""

from __future__ import annotations

import pytest
import torch

from monai_tumor.errors import ConfigError
from monai_tumor.inference.device import select_device


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
