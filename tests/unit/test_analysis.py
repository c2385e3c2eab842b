"""Lesion analysis after segmentation: features in the caller or in worker processes."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

import monai_tumor
from monai_tumor.errors import MonaiTumorError
from monai_tumor.pipeline.analysis import AnalysisSpec, analysis_spec_for
from monai_tumor.postprocess.lesions import lesions_report, measure_lesions
from monai_tumor.radiomics.pool import FeaturePool

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.fixture(scope="module")
def pool() -> Iterator[FeaturePool]:
    with FeaturePool(workers=2) as started:
        yield started


def _case(data_dir: Path, case: str) -> tuple[MetaTensor, MetaTensor]:
    load = LoadImage(image_only=True, ensure_channel_first=True)
    image = load(data_dir / "lidc_nodules" / "image" / f"{case}.nii.gz")
    mask = load(data_dir / "lidc_nodules" / "nodule_mask" / f"{case}.nii.gz")
    label = MetaTensor((mask.as_tensor() > 0).to(torch.uint8), affine=mask.affine)
    return image, label


def _report(image: MetaTensor, mask: MetaTensor) -> tuple[dict[str, Any], list[Any]]:
    lesions = measure_lesions(mask, image)
    return lesions_report(lesions, provenance={}), lesions


def test_features_from_the_pool_equal_the_callers(pool: FeaturePool, data_dir: Path) -> None:
    spec = analysis_spec_for(BUNDLES / "lung_nodule_ct", classifier=None)
    assert spec.radiomics is not None
    image, mask = _case(data_dir, "LIDC-IDRI-0018_R_4")
    report, lesions = _report(image, mask)
    here, there = copy.deepcopy(report), copy.deepcopy(report)
    spec.load().annotate(here, image=image, mask=mask, lesions=lesions)
    analysis = spec.load(pool=pool)
    assert analysis.pool is pool
    pending = analysis.start(image=image, mask=mask, lesions=lesions)
    pending.apply(there)
    assert here == there
    features = there["lesions"][0]["radiomics"]["features"]
    assert len(features) > 150 and "morph_moran_i" in features
    assert (
        there["lesions"][0]["malignancy_probability"]
        == here["lesions"][0]["malignancy_probability"]
    )


def test_no_pool_without_features(pool: FeaturePool) -> None:
    assert AnalysisSpec().load(pool=pool).pool is None  # nothing to compute there


@pytest.mark.parametrize("use_pool", [False, True], ids=["caller", "pool"])
def test_a_failed_feature_computation_is_raised_by_apply(
    pool: FeaturePool, data_dir: Path, use_pool: bool
) -> None:
    """A failing feature computation (here: lesions measured on another mask) fails the
    series from the caller's thread, whichever thread or process computed it."""
    spec = analysis_spec_for(BUNDLES / "lung_nodule_ct", classifier=None)
    image, mask = _case(data_dir, "LIDC-IDRI-0686_R_5")
    report, lesions = _report(image, mask)
    empty = MetaTensor(torch.zeros_like(mask.as_tensor()), affine=mask.affine)
    analysis = AnalysisSpec(radiomics=spec.radiomics).load(pool=pool if use_pool else None)
    pending = analysis.start(image=image, mask=empty, lesions=lesions)
    with pytest.raises(MonaiTumorError, match="not a connected component"):
        pending.apply(report)


@pytest.mark.parametrize("changed", ["monai_tumor", "settings"])
def test_the_cache_token_follows_the_feature_code_and_settings(
    monkeypatch: pytest.MonkeyPatch, changed: str
) -> None:
    """A resumed run recomputes features made by other code or settings, never reuses them."""
    spec = analysis_spec_for(BUNDLES / "lung_nodule_ct", classifier=None)
    assert spec.radiomics is not None
    before = spec.cache_token()
    if changed == "monai_tumor":
        monkeypatch.setattr(monai_tumor, "__version__", monai_tumor.__version__ + ".post1")
    else:
        settings = dataclasses.replace(
            spec.radiomics, bin_width=(spec.radiomics.bin_width or 0) + 5
        )
        spec = dataclasses.replace(spec, radiomics=settings)
    assert spec.cache_token() != before
    assert spec.cache_token() == spec.cache_token()
