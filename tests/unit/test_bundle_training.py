"""training.strip_torchscript_debug_info: the archive loses its machine paths, nothing else."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from monai_tumor.errors import BundleError
from monai_tumor.training import strip_torchscript_debug_info


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.conv(x), dim=1)


def test_debug_records_removed_model_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "model.ts"
    extra = {"metadata.json": '{"version": "1"}', "inference.json": "{}"}
    scripted = torch.jit.script(_Net().eval())
    torch.jit.save(scripted, str(path), _extra_files=extra)
    before = zipfile.ZipFile(path).namelist()
    debug = [n for n in before if n.endswith(".debug_pkl")]
    assert debug  # torch.jit.save writes source ranges (with the scripting file's path)
    source_file = Path(__file__).resolve().as_posix().encode()
    assert any(source_file in zipfile.ZipFile(path).read(n) for n in debug)

    assert strip_torchscript_debug_info(path) == len(debug)
    after = zipfile.ZipFile(path).namelist()
    assert after == [n for n in before if not n.endswith(".debug_pkl")]
    assert source_file not in path.read_bytes()

    loaded_extra: dict[str, str | bytes] = {"metadata.json": "", "inference.json": ""}
    net = torch.jit.load(str(path), _extra_files=loaded_extra)
    x = torch.rand(1, 1, 6, 5, 4)
    torch.testing.assert_close(net(x), scripted(x), rtol=0, atol=0)
    assert loaded_extra["metadata.json"] == b'{"version": "1"}'
    assert strip_torchscript_debug_info(path) == 0  # idempotent


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "model.ts"
    bad.write_text("not a zip")
    with pytest.raises(BundleError, match="not a TorchScript archive"):
        strip_torchscript_debug_info(bad)
