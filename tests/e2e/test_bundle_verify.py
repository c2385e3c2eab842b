"""`monai-tumor bundle verify` passes on every bundle shipped in bundles/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from monai_tumor.bundle.verify import verify_bundle

REPO = Path(__file__).resolve().parents[2]


def _real_bundles() -> list[Path]:
    root = REPO / "bundles"
    if not root.is_dir():
        return []
    # segmentation and classification bundles alike (lung_nodule_malignancy: image_mask_folders
    # layout, predictions.csv smoke output)
    return sorted(p for p in root.iterdir() if (p / "configs").is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("bundle", _real_bundles(), ids=lambda p: p.name)
def test_real_bundle_verifies(bundle: Path) -> None:
    def scripts_modules() -> dict[str, object]:
        return {n: m for n, m in sys.modules.items() if n.split(".")[0] == "scripts"}

    path_before, modules_before = list(sys.path), scripts_modules()
    report = verify_bundle(bundle)
    assert report.passed, json.dumps(report.to_dict(), indent=1)
    # the in-process checks import the bundle's own `scripts` (the nodule ensemble) and leave
    # neither it nor the bundle root behind, so the next bundle gets its own
    assert scripts_modules() == modules_before and sys.path == path_before
