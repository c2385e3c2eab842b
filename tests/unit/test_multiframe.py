"""Enhanced multi-frame images: pydicom-data files and synthetic enhanced MR/CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from monai_tumor import geometry
from monai_tumor.errors import InvalidSeriesError
from monai_tumor.ingest.multiframe import frames_of
from monai_tumor.ingest.pixels import decode_frames
from monai_tumor.ingest.reader import read_series
from tests.support.dicom_factory import RLE_LOSSLESS, lps_affine, random_rotation, write_enhanced
from tests.support.typed_io import pydicom_testdata

EMRI = [
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
]


def test_enhanced_ct_from_pydicom_data() -> None:
    path = Path(pydicom_testdata("eCT_Supplemental.dcm"))
    ds = pydicom.dcmread(path)
    img = read_series(path)
    assert img.shape == (1, 512, 512, 2)
    # IOP row (-1, 0, 0), column (0, 1, 0): normal (0, 0, -1), so frame 2 (z = -149)
    # comes first along the normal and frame 1 (z = -159) second.
    assert img.meta["frame_numbers"] == [2, 1]
    assert img.meta["sop_instance_uids"] == [ds.SOPInstanceUID] * 2
    expected_lps = np.array(
        [[-0.388672, 0, 0, 99.5], [0, 0.388672, 0, -301.5], [0, 0, -10.0, -149.0], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(img.affine.numpy(), geometry.lps_to_ras(expected_lps), atol=1e-6)
    # Per-frame PixelValueTransformationSequence: slope 1, intercept -1024.
    raw = ds.pixel_array.astype(np.float32) - 1024
    np.testing.assert_array_equal(img[0, :, :, 0].numpy(), raw[1].T)
    np.testing.assert_array_equal(img[0, :, :, 1].numpy(), raw[0].T)
    assert img.meta["Modality"] == "CT"


def test_enhanced_mr_without_geometry_is_refused_but_decodes() -> None:
    """emri_small has no functional groups: no position, so no volume; pixels still decode."""
    with pytest.raises(InvalidSeriesError, match="no ImagePositionPatient"):
        read_series(pydicom_testdata(EMRI[0]))
    frames = []
    for name in EMRI:
        ds = pydicom.dcmread(pydicom_testdata(name))
        frames.append(decode_frames(ds, Path(name), str(ds.file_meta.TransferSyntaxUID)))
    assert frames[0].shape == (10, 64, 64)
    for name, arr in zip(EMRI, frames, strict=True):
        np.testing.assert_array_equal(arr, frames[0], err_msg=name)


@pytest.mark.parametrize("shared_rescale", [False, True])
def test_synthetic_enhanced_mr_with_shuffled_frames(tmp_path: Path, shared_rescale: bool) -> None:
    rot = random_rotation(0.2, 0.7, 0.4)
    aff = lps_affine(
        iop=[*rot[:, 0], *rot[:, 1]], pixel_spacing=(0.9, 1.1), slice_step=3.3, origin=(5, 6, 7)
    )
    stored = np.random.default_rng(3).integers(0, 4000, (7, 6, 5)).astype(np.int16)
    slopes = [0.5, 1.0, 2.0, 1.5, 0.25]
    order = [3, 0, 4, 1, 2]
    path = write_enhanced(
        tmp_path / "mr.dcm",
        stored,
        affine_lps=aff,
        slopes=slopes,
        intercepts=-10,
        frame_order=order,
        shared_rescale=shared_rescale,
    )
    img = read_series(path)
    used = np.full(5, slopes[0]) if shared_rescale else np.asarray(slopes)
    np.testing.assert_allclose(img[0].numpy(), stored * used - 10, rtol=1e-6)
    np.testing.assert_allclose(img.affine.numpy(), geometry.lps_to_ras(aff), atol=1e-5)
    # frame_numbers[k]: the stored frame (1-based) holding slice k.
    assert img.meta["frame_numbers"] == [order.index(k) + 1 for k in range(5)]
    infos = frames_of(pydicom.dcmread(path, stop_before_pixels=True), path)
    assert [f.frame_number for f in infos] == [1, 2, 3, 4, 5]


def test_compressed_enhanced_equals_uncompressed(tmp_path: Path) -> None:
    stored = np.random.default_rng(4).integers(-100, 900, (9, 8, 4)).astype(np.int16)
    aff = lps_affine(slice_step=2.0)
    a = write_enhanced(tmp_path / "raw.dcm", stored, affine_lps=aff, modality="CT")
    b = write_enhanced(
        tmp_path / "rle.dcm", stored, affine_lps=aff, modality="CT", transfer_syntax=RLE_LOSSLESS
    )
    assert torch.equal(read_series(a).as_tensor(), read_series(b).as_tensor())


def test_rt_dose_frames_placed_by_grid_frame_offsets() -> None:
    path = Path(pydicom_testdata("rtdose.dcm"))
    ds = pydicom.dcmread(path)
    img = read_series(path)
    assert img.shape == (1, 10, 10, 15)
    expected_lps = np.array(
        [[10.0, 0, 0, 189.43125], [0, 10.0, 0, 199.43125], [0, 0, 5.0, -761.87], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(img.affine.numpy(), geometry.lps_to_ras(expected_lps), atol=1e-6)
    np.testing.assert_array_equal(
        img[0].numpy(), ds.pixel_array.transpose(2, 1, 0).astype(np.float32)
    )


def test_multiframe_without_positions_is_refused(tmp_path: Path) -> None:
    path = write_enhanced(
        tmp_path / "e.dcm", np.zeros((4, 4, 3), np.int16), affine_lps=lps_affine()
    )
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
    ds.ImagePositionPatient = [0, 0, 0]
    ds.save_as(path)
    with pytest.raises(InvalidSeriesError, match="no per-frame positions"):
        read_series(path)
