"""Per-series outputs: files, manifest, completeness check, SEG on the source slices."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from monai_tumor.errors import ExportError
from monai_tumor.export.seg import read_back_seg
from monai_tumor.inference.bundle import BundleInfo
from monai_tumor.ingest.reader import read_series
from monai_tumor.pipeline.outputs import (
    MANIFEST_NAME,
    TRUNCATED_SEGMENT_DESCRIPTION,
    cache_key_for,
    completed_manifest,
    series_key,
    study_key,
    write_series_outputs,
)
from monai_tumor.postprocess.review import ReviewResult
from monai_tumor.transforms.voi import FIELDS_OF_VIEW_KEY
from tests.support.dicom_factory import lps_affine, write_series
from tests.support.pipeline_doubles import fake_bundle_info


@pytest.fixture
def bundle(tmp_path: Path) -> BundleInfo:
    return fake_bundle_info(tmp_path)


@pytest.fixture
def series(tmp_path: Path) -> tuple[MetaTensor, list[pydicom.Dataset]]:
    """A small oblique-free CT series with a bright cube, read back with the reader."""
    stored = np.zeros((24, 20, 9), dtype=np.int16)
    stored[8:14, 6:12, 3:6] = 300
    stored[18:21, 15:18, 6:8] = 300  # inside: a lesion at the edge is flagged truncated
    files = write_series(
        tmp_path / "ct",
        stored,
        affine_lps=lps_affine(iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.9, 0.8), slice_step=2.0),
        shuffle_names=True,
    )
    image = read_series(tmp_path / "ct")
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return image, datasets


def _mask(image: MetaTensor) -> MetaTensor:
    return MetaTensor((image > 100).to(torch.uint8), affine=image.affine, meta=dict(image.meta))


def test_keys_are_hashes_not_uids() -> None:
    uid = "1.2.3.4.5.678"
    assert study_key(uid).startswith("study-") and uid not in study_key(uid)
    assert series_key(uid).startswith("series-") and len(series_key(uid)) == len("series-") + 16
    assert series_key(uid) == series_key(uid) != series_key(uid + "9")


def test_cache_key_changes_with_bundle_and_seeds(bundle: BundleInfo) -> None:
    key = cache_key_for(["1.2.3"], bundle)
    assert key == cache_key_for(["1.2.3"], bundle)
    assert key != cache_key_for(["1.2.4"], bundle)
    assert key != cache_key_for(["1.2.3"], bundle, seeds=["rtstruct:1.9"])
    other = BundleInfo(**{**bundle.__dict__, "weights_sha256": "cd" * 32})
    assert key != cache_key_for(["1.2.3"], other)
    edited = BundleInfo(**{**bundle.__dict__, "configs_sha256": "ef" * 32})
    assert key != cache_key_for(["1.2.3"], edited)


def test_outputs_written_and_complete(
    tmp_path: Path, bundle: BundleInfo, series: tuple[MetaTensor, list[pydicom.Dataset]]
) -> None:
    image, datasets = series
    key = cache_key_for([str(image.meta["SeriesInstanceUID"])], bundle)
    out = tmp_path / "out" / "s"
    result = write_series_outputs(
        out,
        image=image,
        mask=_mask(image),
        bundle=bundle,
        cache_key=key,
        provenance={"bundle": bundle.provenance()},
        source_datasets=datasets,
    )
    assert result.seg_status == "written"
    assert result.lesion_count == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "lesions.json",
        MANIFEST_NAME,
        "mask.nii.gz",
        "overlay.png",
        "seg.dcm",
    ]
    # mask.nii.gz: source geometry, same voxels
    nii = nib.Nifti1Image.from_filename(out / "mask.nii.gz")
    np.testing.assert_allclose(nii.affine, image.affine.numpy(), atol=1e-5)
    expected = (image[0].numpy() > 100).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(nii.dataobj), expected)
    # SEG: frames land on the source slices
    np.testing.assert_array_equal(
        read_back_seg(out / "seg.dcm", datasets, segments=bundle.segments), expected
    )
    lesions = json.loads((out / "lesions.json").read_text())
    assert lesions["lesion_count"] == 2
    big = lesions["lesions"][0]
    assert big["voxel_count"] == 6 * 6 * 3
    assert big["volume_ml"] == pytest.approx(6 * 6 * 3 * 0.9 * 0.8 * 2.0 / 1000)
    assert (big["first_slice"], big["last_slice"]) == (3, 5)
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = completed_manifest(out, key)
    assert manifest is not None and manifest["seg"] == "written"
    assert set(manifest["files"]) == {"mask.nii.gz", "seg.dcm", "lesions.json", "overlay.png"}
    assert manifest["provenance"]["bundle"]["weights_sha256"] == "ab" * 32
    # provenance travels inside the mask (NIfTI comment extension) and the picture (PNG text)
    (extension,) = nii.header.extensions
    assert json.loads(extension.get_content())["bundle"]["weights_sha256"] == "ab" * 32
    with PIL.Image.open(out / "overlay.png") as png:
        assert isinstance(png, PIL.PngImagePlugin.PngImageFile)
        assert json.loads(png.text["Description"])["bundle"]["bundle"] == bundle.name
        assert png.text["Software"].startswith("monai-tumor ")


def test_incomplete_outputs_are_detected(
    tmp_path: Path, bundle: BundleInfo, series: tuple[MetaTensor, list[pydicom.Dataset]]
) -> None:
    image, _ = series
    out = tmp_path / "o"
    write_series_outputs(
        out,
        image=image,
        mask=_mask(image),
        bundle=bundle,
        cache_key="k1",
        provenance={},
        source_datasets=None,
        no_seg_reason="not written: NIfTI input",
    )
    assert not (out / "seg.dcm").exists()
    assert completed_manifest(out, "k1") is not None
    assert completed_manifest(out, "k2") is None  # another bundle/series/seeds
    data = (out / "overlay.png").read_bytes()
    (out / "overlay.png").write_bytes(data[: len(data) // 2])  # truncated by a crash
    assert completed_manifest(out, "k1") is None
    (out / "overlay.png").write_bytes(data)
    assert completed_manifest(out, "k1") is not None
    (out / "lesions.json").unlink()
    assert completed_manifest(out, "k1") is None
    (out / MANIFEST_NAME).write_text("{not json")
    assert completed_manifest(out, "k1") is None
    # Redoing the folder removes what a killed writer left behind.
    leftover = out / ".seg.dcm.a1b2c3.tmp.dcm"
    leftover.write_bytes(b"partial")
    write_series_outputs(
        out,
        image=image,
        mask=_mask(image),
        bundle=bundle,
        cache_key="k1",
        provenance={},
        source_datasets=None,
    )
    assert not leftover.exists() and completed_manifest(out, "k1") is not None


def test_mask_off_the_source_grid_is_refused(
    tmp_path: Path, bundle: BundleInfo, series: tuple[MetaTensor, list[pydicom.Dataset]]
) -> None:
    image, datasets = series
    shifted = _mask(image)
    affine = shifted.affine.clone()
    affine[0, 3] += 0.5
    shifted = MetaTensor(shifted.as_tensor(), affine=affine)
    with pytest.raises(ExportError, match="affine"):
        write_series_outputs(
            tmp_path / "x",
            image=image,
            mask=shifted,
            bundle=bundle,
            cache_key="k",
            provenance={},
            source_datasets=datasets,
        )
    with pytest.raises(ExportError, match="shape"):
        write_series_outputs(
            tmp_path / "y",
            image=image,
            mask=torch.zeros((1, 4, 4, 4), dtype=torch.uint8),
            bundle=bundle,
            cache_key="k",
            provenance={},
            source_datasets=datasets,
        )
    assert not (tmp_path / "x" / MANIFEST_NAME).exists()


@pytest.mark.parametrize("lazy", [False, True], ids=["result", "function"])
def test_review_goes_into_lesions_json_and_manifest(
    tmp_path: Path,
    bundle: BundleInfo,
    series: tuple[MetaTensor, list[pydicom.Dataset]],
    lazy: bool,
) -> None:
    """A review given as a result, or as a function run once (after the analysis starts)."""
    image, datasets = series
    key = cache_key_for([str(image.meta["SeriesInstanceUID"])], bundle)
    result = ReviewResult(
        review=True, reasons=("90% of the segmented voxels lie within 3 mm",), measures={"a": 0.9}
    )
    calls: list[int] = []

    def later() -> ReviewResult:
        calls.append(1)
        return result

    review = later if lazy else result
    out = tmp_path / "out" / "s"
    write_series_outputs(
        out,
        image=image,
        mask=_mask(image),
        bundle=bundle,
        cache_key=key,
        provenance={},
        source_datasets=datasets,
        review=review,
    )
    lesions = json.loads((out / "lesions.json").read_text())
    assert lesions["review"] == result.to_dict()
    assert lesions["review"]["reasons"] == ["90% of the segmented voxels lie within 3 mm"]
    manifest = completed_manifest(out, key)
    assert manifest is not None and manifest["review"]["review"] is True
    assert calls == ([1] if lazy else [])


def test_truncated_lesion_is_flagged_everywhere(
    tmp_path: Path, bundle: BundleInfo, series: tuple[MetaTensor, list[pydicom.Dataset]]
) -> None:
    """A field of view that cut a lesion off: lesions.json, manifest, SEG and the result say so."""
    image, datasets = series
    mask = _mask(image)
    reason = "reaches the border of the largest volume of interest (128 x 128 x 128 mm)"
    mask.meta[FIELDS_OF_VIEW_KEY] = [
        {"seed": "GTV", "size_mm": [128, 128, 128], "runs": 4, "truncated": True,
         "reason": reason, "voxel": [10, 8, 4]},
        {"seed": "other", "size_mm": [34, 34, 20], "runs": 1, "truncated": False,
         "reason": "", "voxel": [19, 16, 7]},
    ]  # fmt: skip
    out = tmp_path / "out" / "s"
    result = write_series_outputs(
        out,
        image=image,
        mask=mask,
        bundle=bundle,
        cache_key="k",
        provenance={},
        source_datasets=datasets,
    )
    expected = f"truncated: 1 lesion(s) {reason}; the mask and volume are incomplete"
    assert result.review is not None and result.review.review
    assert result.review.reasons == (expected,)
    lesions = json.loads((out / "lesions.json").read_text())["lesions"]
    assert [(les["truncated"], les["truncation_reason"]) for les in lesions] == [
        (True, reason),
        (False, ""),
    ]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["review"]["reasons"] == [expected] and manifest["review"]["review"] is True
    assert manifest["fields_of_view"][0]["runs"] == 4
    assert json.loads((out / "lesions.json").read_text())["review"]["reasons"] == [expected]
    seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.SegmentSequence[0].SegmentDescription == TRUNCATED_SEGMENT_DESCRIPTION


def test_a_lesion_at_the_image_edge_is_flagged_everywhere(
    tmp_path: Path, bundle: BundleInfo, series: tuple[MetaTensor, list[pydicom.Dataset]]
) -> None:
    """A whole-image result whose lesion reaches the last slice: the scan may end inside it."""
    image, datasets = series
    mask = _mask(image)
    mask[0, 18:21, 15:18, 6:9] = 1  # the second cube now reaches the series' last slice
    out = tmp_path / "s"
    result = write_series_outputs(
        out, image=image, mask=mask, bundle=bundle, cache_key="k", provenance={},
        source_datasets=datasets,
    )  # fmt: skip
    reason = "reaches the image's edge (last slice): the scan ends there"
    expected = f"truncated: 1 lesion(s) {reason}; the mask and volume are incomplete"
    assert result.review is not None and result.review.reasons == (expected,)
    lesions = json.loads((out / "lesions.json").read_text())["lesions"]
    assert sorted((les["truncated"], les["truncation_reason"]) for les in lesions) == [
        (False, ""),
        (True, reason),
    ]
    seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.SegmentSequence[0].SegmentDescription == TRUNCATED_SEGMENT_DESCRIPTION


def test_untruncated_result_has_no_review(
    tmp_path: Path, bundle: BundleInfo, series: tuple[MetaTensor, list[pydicom.Dataset]]
) -> None:
    image, datasets = series
    result = write_series_outputs(
        tmp_path / "s",
        image=image,
        mask=_mask(image),
        bundle=bundle,
        cache_key="k",
        provenance={},
        source_datasets=datasets,
    )
    assert result.review is None
    assert (
        "SegmentDescription" not in pydicom.dcmread(tmp_path / "s" / "seg.dcm").SegmentSequence[0]
    )
