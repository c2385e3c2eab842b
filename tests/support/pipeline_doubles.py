"""Test doubles shared by the pipeline tests (batch, infer, outputs, Dask cluster).

``ThresholdSegmenter`` stands in for ``LoadedBundle`` so the orchestration is tested without
a network; ``DyingSegmenter`` also kills its process on chosen series (Dask fault tests);
``fake_bundle_info`` describes a one-input CT bundle with one segment. Real-data tests use the
real bundles instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import MetaTensor

from monai_tumor.export.seg import SegmentSpec
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.inference.seeds import Seed


class ThresholdSegmenter:
    """Test double of ``LoadedBundle``: label 1 where the image is above 100.

    ``calls`` lists the SeriesInstanceUID of every image segmented; ``fail_on`` makes it raise
    on an image whose maximum equals that value.
    """

    def __init__(self, fail_on: float | None = None) -> None:
        self.fail_on = fail_on
        self.calls: list[str] = []

    def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor:
        self.calls.append(str(image.meta.get("SeriesInstanceUID")))
        if self.fail_on is not None and float(image.max()) == self.fail_on:
            raise RuntimeError("model exploded on this series")
        mask = torch.as_tensor(image[:1] > 100).to(torch.uint8)
        return MetaTensor(mask, affine=image.affine.clone(), meta=dict(image.meta))


def fake_bundle_info(root: Path, *, selection_rules: Path | None = None) -> BundleInfo:
    """A whole-image, one-input ("ct") bundle description with segment 1 "Tumour"."""
    return BundleInfo(
        root=root,
        name="fake_ct",
        version="1.0",
        weights_sha256="ab" * 32,
        kind="whole_image",
        input_names=("ct",),
        segments=(SegmentSpec(1, "Tumour"),),
        selection_rules=selection_rules or root / "rules.json",
        reference_input="ct",
    )


class DyingSegmenter(ThresholdSegmenter):
    """``ThresholdSegmenter`` that kills its process on chosen series (Dask fault tests).

    On an image whose maximum is in ``poison`` the process exits at once, every time (a series
    that kills workers). On one whose maximum is in ``die_once`` it exits only on the first
    attempt: the attempt leaves a marker file in ``marker_dir``, shared by every worker process.
    ``pause_s`` waits before each segmentation so a test can act while a series is running.
    Picklable: Dask ships it to the workers.
    """

    def __init__(
        self,
        *,
        poison: Sequence[float] = (),
        die_once: Sequence[float] = (),
        marker_dir: Path | None = None,
        pause_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.poison = tuple(poison)
        self.die_once = tuple(die_once)
        self.marker_dir = marker_dir
        self.pause_s = pause_s

    def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor:
        peak = float(image.max())
        if peak in self.poison:
            os._exit(1)
        if peak in self.die_once and self.marker_dir is not None:
            marker = self.marker_dir / f"died-on-{peak:g}"
            if not marker.exists():
                marker.touch()
                os._exit(1)
        if self.pause_s:
            time.sleep(self.pause_s)
        return super().segment(image, seeds=seeds)
