"""Tests for monai_tumor.training: train a bundle through its train.json, export TorchScript."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_tumor.errors import BundleError
from monai_tumor.training import export_torchscript, train_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"

SMOKE = {
    "limit_train": 4,
    "limit_val": 2,
    "batch_size": 2,
    "num_samples": 1,
    "max_epochs": 1,
    "val_interval": 1,
}


@pytest.mark.realdata
@pytest.mark.slow
def test_train_then_export(data_dir: Path, tmp_path: Path) -> None:
    best = train_bundle(BUNDLE, dataset_dir=data_dir, output_dir=tmp_path, overrides=SMOKE)

    assert best == tmp_path / "model.pt"
    state = torch.load(best, map_location="cpu")
    assert any(k.endswith("weight") for k in state)
    assert (tmp_path / "checkpoints" / "checkpoint_last.pt").is_file()

    ts = export_torchscript(BUNDLE, ckpt_file=best, filepath=tmp_path / "model.ts")
    scripted = torch.jit.load(str(ts), map_location="cpu")
    with torch.no_grad():
        out = scripted(torch.zeros(1, 1, 48, 48, 16))
    assert tuple(out.shape) == (1, 2, 48, 48, 16)


@pytest.mark.realdata
@pytest.mark.slow
def test_training_resumes_from_last_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    train_bundle(BUNDLE, dataset_dir=data_dir, output_dir=tmp_path, overrides=SMOKE)
    train_bundle(
        BUNDLE,
        dataset_dir=data_dir,
        output_dir=tmp_path,
        overrides={**SMOKE, "max_epochs": 2},
        resume=True,
    )

    rows = (tmp_path / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]


def test_missing_train_config_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"train\.json"):
        train_bundle(tmp_path, dataset_dir=tmp_path, output_dir=tmp_path / "out")


def test_export_without_checkpoint_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="checkpoint not found"):
        export_torchscript(BUNDLE, ckpt_file=tmp_path / "absent.pt", filepath=tmp_path / "m.ts")


def test_failing_training_is_a_bundle_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="training failed"):
        train_bundle(
            BUNDLE,
            dataset_dir=data_dir,
            output_dir=tmp_path,
            overrides={**SMOKE, "split_file": str(tmp_path / "no_such_split.json")},
        )
