"""monai_tumor.pipeline.cluster: a worker runs only the bundle the client described."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monai_tumor.errors import BundleError
from monai_tumor.inference.bundle import read_bundle_info
from monai_tumor.pipeline.cluster import SegmenterPlugin

NODULE = Path(__file__).resolve().parents[2] / "bundles" / "lung_nodule_ct"


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(NODULE, tmp_path / "lung_nodule_ct"))


def test_the_same_copy_is_accepted(bundle_copy: Path) -> None:
    client = read_bundle_info(bundle_copy)
    assert SegmenterPlugin(client, device="cpu")._same_bundle_here() == client


@pytest.mark.parametrize("changed", ["configs/inference.json", "models/model.pt"])
def test_a_worker_copy_that_differs_is_refused(bundle_copy: Path, changed: str) -> None:
    client = read_bundle_info(bundle_copy)
    with open(bundle_copy / changed, "ab") as handle:  # the worker's copy is another version
        handle.write(b"\n" if changed.endswith(".json") else b"\0")
    plugin = SegmenterPlugin(client, device="cpu")
    with pytest.raises(BundleError, match="this worker's copy of the bundle differs"):
        plugin._same_bundle_here()
