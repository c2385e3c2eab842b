"""monai_tumor.ingest.reader: synthetic series (hypothesis), error handling, real data,
and agreement with SimpleITK and dcm2niix."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_tumor import geometry
from monai_tumor.errors import IngestError, InvalidSeriesError, UnsupportedInputError
from monai_tumor.ingest import reader as reader_module
from monai_tumor.ingest.multiframe import frames_of
from monai_tumor.ingest.native_header import scan_native
from monai_tumor.ingest.pixels import decode_frames
from monai_tumor.ingest.reader import (
    DuplicateSliceWarning,
    ReadOptions,
    is_nifti,
    read_series,
    read_stacks,
)
from tests.support.dicom_factory import RLE_LOSSLESS, lps_affine, random_rotation, write_series
from tests.support.typed_io import pydicom_testdata

STS = [f"STS_00{p}/{m}" for p in (1, 2, 3) for m in ("CT", "MR_T1", "PET")]


def _volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 3000, shape).astype(np.int16)


def _expected(stored: np.ndarray, slopes, intercepts) -> np.ndarray:
    n = stored.shape[2]
    s = np.broadcast_to(np.asarray(slopes, dtype=np.float64), (n,))
    b = np.broadcast_to(np.asarray(intercepts, dtype=np.float64), (n,))
    return stored.astype(np.float64) * s + b


AXIAL = lps_affine(pixel_spacing=(0.8, 0.7), slice_step=2.5, origin=(10.0, -20.0, 30.0))


# ---------------------------------------------------------------------- synthetic


@settings(max_examples=25, deadline=None)
@given(
    rot=st.tuples(st.floats(0, 0.999), st.floats(0, 0.999), st.floats(0, 0.999)),
    ps=st.tuples(st.floats(0.3, 3.0), st.floats(0.3, 3.0)),
    step=st.floats(0.5, 8.0),
    origin=st.tuples(*(st.floats(-300, 300),) * 3),
    shape=st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(1, 7)),
    slope=st.sampled_from([1.0, 0.5, 2.0, 0.0123]),
    intercept=st.sampled_from([0.0, -1024.0, 3.25]),
    per_slice=st.booleans(),
    descending=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_oblique_series_round_trips(
    rot, ps, step, origin, shape, slope, intercept, per_slice, descending, seed
) -> None:
    """Written in any order with any names and InstanceNumbers, read back sorted along
    the normal: if the files' positions run against the normal (``descending``), the
    reader's slice k is the written slice n-1-k and its affine starts at the last one."""
    r = random_rotation(*rot)
    written_step = -step if descending else step
    aff = lps_affine(
        iop=[*r[:, 0], *r[:, 1]], pixel_spacing=ps, slice_step=written_step, origin=origin
    )
    stored = _volume(shape, seed)
    rng = np.random.default_rng(seed)
    slopes = slope * (1 + rng.integers(0, 3, shape[2])) if per_slice else slope
    with tempfile.TemporaryDirectory() as tmp:
        write_series(
            tmp,
            stored,
            affine_lps=aff,
            slopes=slopes,
            intercepts=intercept,
            shuffle_names=True,
            instance_numbers="random",
            rng=rng,
        )
        img = read_series(tmp)
    expected = _expected(stored, slopes, intercept)
    expected_lps = aff.copy()
    if descending:
        expected = expected[..., ::-1]
        expected_lps[:3, 3] = aff[:3, 3] + (shape[2] - 1) * aff[:3, 2]
        expected_lps[:3, 2] = -aff[:3, 2]
    assert img.shape == (1, *shape)
    assert img.dtype == torch.float32
    np.testing.assert_allclose(img[0].numpy(), expected, rtol=1e-6, atol=1e-4)
    expected_affine = geometry.lps_to_ras(expected_lps)
    if shape[2] == 1:
        # No second position: the slice axis length is unknowable (SliceThickness is used).
        cols = [0, 1, 3]
        np.testing.assert_allclose(img.affine.numpy()[:, cols], expected_affine[:, cols], atol=1e-5)
    else:
        np.testing.assert_allclose(img.affine.numpy(), expected_affine, atol=1e-5)
    # The slice axis always points along row x column (the DICOM slice normal).
    normal = np.cross(r[:, 0], r[:, 1])
    k_axis = geometry.ras_to_lps(img.affine.numpy())[:3, 2]
    assert float(k_axis @ normal) > 0


def test_meta_follows_the_contract(tmp_path: Path) -> None:
    files = write_series(
        tmp_path,
        _volume((6, 5, 4)),
        affine_lps=AXIAL,
        shuffle_names=True,
        instance_numbers="descending",
        intercepts=-1024,
    )
    img = read_series(tmp_path)
    meta = img.meta
    for key in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "SeriesDescription",
        "sop_class_uid",
    ):
        assert meta[key], key
    assert meta["space"] == "RAS"
    assert meta["filename_or_obj"] == str(tmp_path)
    assert meta["sop_instance_uids"] == [pydicom.dcmread(f).SOPInstanceUID for f in files]
    assert meta["frame_numbers"] == [1, 1, 1, 1]
    assert list(meta["spatial_shape"]) == [6, 5, 4]
    assert img.affine.dtype == torch.float64
    np.testing.assert_allclose(meta["original_affine"], img.affine.numpy())
    np.testing.assert_allclose(meta["spacing"], [0.7, 0.8, 2.5])


def test_file_list_input_and_stored_dtype(tmp_path: Path) -> None:
    stored = _volume((5, 4, 3))
    files = write_series(tmp_path, stored, affine_lps=AXIAL)
    img = read_series(list(reversed(files)), options=ReadOptions(dtype="stored"))
    assert img.dtype == torch.int16
    np.testing.assert_array_equal(img[0].numpy(), stored)
    # Not an identity rescale: float32 anyway.
    other = tmp_path / "rescaled"
    write_series(other, stored, affine_lps=AXIAL, intercepts=-1024)
    assert read_series(other, options=ReadOptions(dtype="stored")).dtype == torch.float32


def test_compressed_series_equals_uncompressed(tmp_path: Path) -> None:
    stored = _volume((8, 6, 3))
    write_series(tmp_path / "raw", stored, affine_lps=AXIAL)
    write_series(tmp_path / "rle", stored, affine_lps=AXIAL, transfer_syntax=RLE_LOSSLESS)
    assert torch.equal(
        read_series(tmp_path / "raw").as_tensor(), read_series(tmp_path / "rle").as_tensor()
    )


# -------------------------------------------------------------------------- errors


def test_gap_is_an_error_by_default(tmp_path: Path) -> None:
    write_series(tmp_path, _volume((4, 4, 8)), affine_lps=AXIAL, skip=(3, 4))
    with pytest.raises(InvalidSeriesError, match=r"non-uniform slice spacing.*gap"):
        read_series(tmp_path)


def test_gap_resampled_keeps_existing_slices(tmp_path: Path) -> None:
    stored = _volume((4, 4, 8))
    write_series(tmp_path, stored, affine_lps=AXIAL, skip=(3, 4), intercepts=-1024)
    img = read_series(tmp_path, options=ReadOptions(nonuniform="resample"))
    assert img.shape == (1, 4, 4, 8)
    np.testing.assert_allclose(img.affine.numpy(), geometry.lps_to_ras(AXIAL), atol=1e-6)
    kept = [0, 1, 2, 5, 6, 7]
    np.testing.assert_array_equal(
        img[0].numpy()[..., kept], stored[..., kept].astype(np.float32) - 1024
    )
    # The missing slices are interpolated between their neighbours (2 and 5).
    low, high = stored[..., 2].astype(np.float64), stored[..., 5].astype(np.float64)
    np.testing.assert_allclose(img[0].numpy()[..., 3], low + (high - low) / 3 - 1024, rtol=1e-6)
    assert img.meta["resampled"] is True
    assert img.meta["sop_instance_uids"][3] == "" and img.meta["frame_numbers"][3] == 0
    assert all(img.meta["sop_instance_uids"][k] for k in kept)
    np.testing.assert_allclose(
        np.diff(
            geometry.voxel_to_patient(img.affine.numpy(), [[0, 0, k] for k in range(8)]), axis=0
        ),
        np.tile([0, 0, 2.5], (7, 1)),
        atol=1e-9,
    )


def test_uneven_spacing_detected(tmp_path: Path) -> None:
    z = np.array([0.0, 2.0, 4.0, 7.0, 9.0])
    positions = np.c_[np.zeros(5), np.zeros(5), z]
    write_series(tmp_path, _volume((4, 4, 5)), affine_lps=AXIAL, positions=positions)
    with pytest.raises(InvalidSeriesError, match="non-uniform"):
        read_series(tmp_path)


def _tilted(tmp_path: Path, shift_mm: float) -> tuple[np.ndarray, np.ndarray]:
    # Each slice moves shift_mm along the column direction (rows, +y): a tilt about x.
    aff = lps_affine(pixel_spacing=(1.0, 1.0), slice_step=(0.0, shift_mm, 2.0))
    stored = _volume((6, 12, 5))
    write_series(tmp_path, stored, affine_lps=aff)
    return stored, aff


def test_tilt_is_detected(tmp_path: Path) -> None:
    _tilted(tmp_path, 1.0)
    with pytest.raises(InvalidSeriesError, match=r"gantry tilt 26\.565 degrees"):
        read_series(tmp_path)


def test_tilt_shear_keeps_exact_affine(tmp_path: Path) -> None:
    stored, aff = _tilted(tmp_path, 1.0)
    img = read_series(tmp_path, options=ReadOptions(tilt="shear"))
    np.testing.assert_allclose(img.affine.numpy(), geometry.lps_to_ras(aff), atol=1e-6)
    np.testing.assert_array_equal(img[0].numpy(), stored)
    assert img.meta["gantry_tilt_degrees"] == pytest.approx(26.565, abs=1e-3)


def test_tilt_resample_shifts_slices_onto_straight_grid(tmp_path: Path) -> None:
    stored, _ = _tilted(tmp_path, 1.0)  # exactly one row per slice
    img = read_series(tmp_path, options=ReadOptions(tilt="resample"))
    straight = lps_affine(pixel_spacing=(1.0, 1.0), slice_step=2.0)
    np.testing.assert_allclose(img.affine.numpy(), geometry.lps_to_ras(straight), atol=1e-6)
    out = img[0].numpy()
    for k in range(5):
        # Straight voxel (i, j, k) is stored voxel (i, j - k, k).
        np.testing.assert_array_equal(out[:, k:, k], stored[:, : 12 - k, k])


def test_duplicate_identical_slices_warn_and_keep_one(tmp_path: Path) -> None:
    stored = _volume((4, 4, 3))
    files = write_series(tmp_path, stored, affine_lps=AXIAL)
    copy = tmp_path / "copy.dcm"
    shutil.copy(files[1], copy)
    ds = pydicom.dcmread(copy)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(copy)
    with pytest.warns(DuplicateSliceWarning, match="same position and pixels"):
        img = read_series(tmp_path)
    np.testing.assert_array_equal(img[0].numpy(), stored)


def test_duplicate_positions_with_different_pixels_name_the_files(tmp_path: Path) -> None:
    files = write_series(tmp_path, _volume((4, 4, 3)), affine_lps=AXIAL)
    other = write_series(
        tmp_path / "b",
        _volume((4, 4, 3), seed=1),
        affine_lps=AXIAL,
        name_prefix="b",
        series_uid=str(pydicom.dcmread(files[0]).SeriesInstanceUID),
    )
    with pytest.raises(InvalidSeriesError, match="different pixels") as err:
        read_series(tmp_path)
    assert files[0].name in str(err.value) and other[0].name in str(err.value)


def test_mixed_stacks_are_split(tmp_path: Path) -> None:
    first = write_series(tmp_path, _volume((6, 6, 5)), affine_lps=AXIAL, name_prefix="ax")
    uid = str(pydicom.dcmread(first[0]).SeriesInstanceUID)
    sagittal = lps_affine(iop=(0, 1, 0, 0, 0, -1), pixel_spacing=(1.0, 1.0), slice_step=3.0)
    write_series(
        tmp_path, _volume((4, 3, 3)), affine_lps=sagittal, name_prefix="sag", series_uid=uid
    )
    with pytest.raises(
        InvalidSeriesError,
        match=r"2 stacks(.|\n)*stack 0: 5 slice\(s\), 6x6 axial(.|\n)*stack 1: 3 slice",
    ):
        read_series(tmp_path)
    stacks = read_stacks(tmp_path)
    assert [s.shape for s in stacks] == [(1, 6, 6, 5), (1, 4, 3, 3)]
    assert read_series(tmp_path, stack=1).shape == (1, 4, 3, 3)
    # Row direction +y LPS (posterior), column -z (inferior), normal row x column = -x (right).
    assert geometry.axis_codes(stacks[1].affine.numpy()) == "PIR"


def test_several_series_need_a_choice(tmp_path: Path) -> None:
    a = write_series(tmp_path / "a", _volume((4, 4, 3)), affine_lps=AXIAL)
    write_series(tmp_path / "b", _volume((4, 4, 2)), affine_lps=AXIAL, modality="MR")
    uid = str(pydicom.dcmread(a[0]).SeriesInstanceUID)
    with pytest.raises(InvalidSeriesError, match="2 series") as err:
        read_series(tmp_path)
    assert uid in str(err.value)
    assert read_series(tmp_path, series_uid=uid).shape == (1, 4, 4, 3)


def test_non_dicom_files_are_skipped_in_folders_but_refused_in_lists(tmp_path: Path) -> None:
    files = write_series(tmp_path, _volume((4, 4, 3)), affine_lps=AXIAL)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    assert read_series(tmp_path).shape == (1, 4, 4, 3)
    with pytest.raises(IngestError, match="not a DICOM file") as err:
        read_series([*files, notes])
    assert str(notes) in str(err.value)


def test_truncated_file_names_its_path(tmp_path: Path) -> None:
    files = write_series(tmp_path, _volume((16, 16, 3)), affine_lps=AXIAL)
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) - 100])
    with pytest.raises(IngestError) as err:
        read_series(tmp_path)
    assert str(files[1]) in str(err.value)


def test_volume_files_come_out_the_same_way(tmp_path: Path) -> None:
    stored = _volume((6, 5, 4))
    write_series(tmp_path / "dcm", stored, affine_lps=AXIAL, intercepts=-1024)
    img = read_series(tmp_path / "dcm")
    nib.save(nib.Nifti1Image(img[0].numpy(), img.affine.numpy()), tmp_path / "v.nii.gz")
    sitk_img = sitk.GetImageFromArray(np.ascontiguousarray(img[0].numpy().transpose(2, 1, 0)))
    lps = geometry.ras_to_lps(img.affine.numpy())
    sp = geometry.spacing_from_affine(lps)
    sitk_img.SetSpacing(sp.tolist())
    sitk_img.SetDirection((lps[:3, :3] / sp).ravel().tolist())
    sitk_img.SetOrigin(lps[:3, 3].tolist())
    for name in ("v.mha", "v.nrrd"):
        sitk.WriteImage(sitk_img, str(tmp_path / name))
    for name in ("v.nii.gz", "v.mha", "v.nrrd"):
        other = read_series(tmp_path / name)
        assert other.shape == img.shape and other.dtype == torch.float32, name
        assert torch.equal(other.as_tensor(), img.as_tensor()), name
        np.testing.assert_allclose(
            other.affine.numpy(), img.affine.numpy(), atol=1e-5, err_msg=name
        )
        assert other.meta["space"] == "RAS"
    nib.save(
        nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4)),
        tmp_path / "i.nii",
    )
    assert read_series(tmp_path / "i.nii", options=ReadOptions(dtype="stored")).dtype == torch.int16
    assert read_series(tmp_path / "i.nii").dtype == torch.float32


# ------------------------------------------------------------------------ real data


def _nifti_world(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    canon = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asarray(canon.dataobj), canon.affine


@pytest.mark.realdata
@pytest.mark.parametrize("series", STS)
def test_sts_equals_reference_nifti(data_dir: Path, series: str) -> None:
    img = read_series(data_dir / "sts" / series / "dicom" / "image")
    ref = nib.Nifti1Image.from_filename(
        data_dir / "sts" / series / "nifti" / "image" / "image.nii.gz"
    )
    np.testing.assert_array_equal(img[0].numpy(), np.asarray(ref.dataobj).astype(np.float32))
    np.testing.assert_allclose(img.affine.numpy(), ref.affine, atol=1e-4)


@pytest.mark.realdata
def test_lung1_shape_and_spacing(data_dir: Path) -> None:
    img = read_series(data_dir / "lung1" / "LUNG1-001" / "image")
    assert img.shape == (1, 512, 512, 134)
    np.testing.assert_allclose(img.meta["spacing"], [0.977, 0.977, 3.0], atol=1e-3)
    assert geometry.axis_codes(img.affine.numpy()) == "LPS"
    assert img.min() >= -1024 and img.max() < 4000


@pytest.mark.realdata
def test_ct_jpeg2000_decodes_on_the_reference_grid(data_dir: Path) -> None:
    img = read_series(data_dir / "ct_jpeg2000" / "dicom")
    assert img.shape == (1, 512, 512, 20)
    assert img.min().item() == -1024 and 1000 < img.max().item() < 4000
    ref = nib.Nifti1Image.from_filename(data_dir / "ct_jpeg2000" / "reference_seg.nii.gz")
    # The reference stores the rows bottom-up (j flipped); same grid in world space.
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine.numpy()),
        nib.orientations.io_orientation(ref.affine),
    )
    reoriented = img.affine.numpy() @ nib.orientations.inv_ornt_aff(ornt, img.shape[1:])
    np.testing.assert_allclose(reoriented, ref.affine, atol=1e-4)


@pytest.mark.realdata
def test_dcm_qa_ts_all_transfer_syntaxes_identical(data_dir: Path) -> None:
    files = [data_dir / "dcm_qa_ts" / "In" / f"{i}.dcm" for i in range(1, 10)]
    images = [read_series(f) for f in files]
    syntaxes = {
        str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files
    }
    assert len(syntaxes) == 7  # two files each for JPEG lossless and JPEG-LS
    assert images[0].shape == (1, 64, 64, 35)  # the Siemens mosaic, split into slices
    for f, img in zip(files, images, strict=True):
        assert torch.equal(img.as_tensor(), images[0].as_tensor()), f.name
        np.testing.assert_allclose(img.affine.numpy(), images[0].affine.numpy(), atol=1e-6)
    # The fast path (view of the bytes) equals pydicom's decoder (12-bit unsigned here).
    ds = pydicom.dcmread(files[0])
    np.testing.assert_array_equal(
        decode_frames(ds, files[0], str(ds.file_meta.TransferSyntaxUID))[0], ds.pixel_array
    )
    tiled = read_series(files[0], options=ReadOptions(mosaic=False))
    np.testing.assert_array_equal(tiled[0, :, :, 0].numpy(), ds.pixel_array.T)


@pytest.mark.realdata
@pytest.mark.parametrize("number", range(1, 10))
def test_dcm_qa_ts_mosaic_equals_dcm2niix_reference(data_dir: Path, number: int) -> None:
    img = read_series(data_dir / "dcm_qa_ts" / "In" / f"{number}.dcm")
    ref = nib.Nifti1Image.from_filename(data_dir / "dcm_qa_ts" / "Ref" / f"{number}.nii")
    ours, our_affine = _nifti_world(img[0].numpy(), img.affine.numpy())
    theirs, their_affine = _nifti_world(np.asarray(ref.dataobj).astype(np.float32), ref.affine)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(our_affine, their_affine, atol=1e-4)
    assert img.meta["frame_numbers"] == [1] * 35


# ------------------------------------------------------ agreement with other readers


def _sitk_read(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    arr = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    return arr, geometry.affine_from_itk(
        image.GetDirection(), image.GetSpacing(), image.GetOrigin()
    )


def _agreement_cases() -> list[pytest.ParameterSet]:
    cases = [pytest.param(f"sts/{s}/dicom/image", id=s) for s in STS]
    cases.append(pytest.param("lung1/LUNG1-001/image", id="lung1", marks=pytest.mark.slow))
    cases.append(pytest.param("ct_jpeg2000/dicom", id="ct_jpeg2000"))
    return cases


@pytest.mark.realdata
@pytest.mark.parametrize("rel", _agreement_cases())
def test_agrees_with_simpleitk(data_dir: Path, rel: str) -> None:
    img = read_series(data_dir / rel)
    arr, affine = _sitk_read(data_dir / rel)
    np.testing.assert_allclose(img.affine.numpy(), affine, atol=1e-4)
    if img.meta["rescaled"] and img.meta["Modality"] == "PT":
        np.testing.assert_allclose(img[0].numpy(), arr, rtol=1e-6)  # ITK rescales in float64
    else:
        np.testing.assert_array_equal(img[0].numpy(), arr)


@pytest.mark.realdata
@pytest.mark.tools
@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix is not installed")
@pytest.mark.parametrize("rel", _agreement_cases())
def test_agrees_with_dcm2niix(data_dir: Path, tmp_path: Path, rel: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for f in (data_dir / rel).iterdir():
        (src / f.name).symlink_to(f)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "vol", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    nii = nib.Nifti1Image.from_filename(out / "vol.nii")
    img = read_series(data_dir / rel)
    ours, our_affine = _nifti_world(img[0].numpy(), img.affine.numpy())
    theirs, their_affine = _nifti_world(nii.get_fdata(dtype=np.float32), nii.affine)
    np.testing.assert_allclose(our_affine, their_affine, atol=1e-3)
    if img.meta["Modality"] == "PT":  # dcm2niix requantises per-slice slopes into one
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * float(np.abs(theirs).max()))
    else:
        np.testing.assert_array_equal(ours, theirs)


def test_image_without_geometry_only_matters_when_chosen(tmp_path: Path) -> None:
    files = write_series(tmp_path / "ct", _volume((4, 4, 3)), affine_lps=AXIAL)
    shot = write_series(tmp_path / "sc", _volume((4, 4, 1)), affine_lps=AXIAL, modality="MR")[0]
    ds = pydicom.dcmread(shot)
    del ds.ImagePositionPatient
    ds.save_as(shot)
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert read_series(tmp_path, series_uid=uid).shape == (1, 4, 4, 3)
    with pytest.raises(InvalidSeriesError, match="no ImagePositionPatient") as err:
        read_series(tmp_path, series_uid=str(ds.SeriesInstanceUID))
    assert str(shot) in str(err.value)


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("PixelSpacing", ["0", "0.7"], "expected two positive"),
        ("ImageOrientationPatient", ["1", "0", "0", "1", "0", "0"], "orthogonal"),
    ],
)
def test_broken_geometry_is_refused(
    tmp_path: Path, keyword: str, value: list[str], message: str
) -> None:
    files = write_series(tmp_path, _volume((4, 4, 3)), affine_lps=AXIAL)
    ds = pydicom.dcmread(files[1])
    setattr(ds, keyword, value)
    ds.save_as(files[1])
    with pytest.raises(InvalidSeriesError, match=message) as err:
        read_series(tmp_path)
    assert str(files[1]) in str(err.value)


# ------------------------------------------------------- fast native header scan


def _assert_scan_matches_pydicom(path: Path) -> bool:
    data = path.read_bytes()
    fast = scan_native(data)
    if fast is None:
        return False
    full = pydicom.dcmread(path)
    assert frames_of(fast, path) == frames_of(full, path)
    for key in (
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "Modality",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "SamplesPerPixel",
        "StudyInstanceUID",
        "FrameOfReferenceUID",
        "SeriesDescription",
    ):
        assert fast.get(key) == full.get(key), key
    assert bytes(fast.PixelData) == full.PixelData
    assert fast.file_meta.TransferSyntaxUID == full.file_meta.TransferSyntaxUID
    return True


@pytest.mark.parametrize("implicit", [False, True])
def test_scan_skips_undefined_length_sequences(tmp_path: Path, implicit: bool) -> None:
    path = write_series(tmp_path, _volume((5, 4, 1)), affine_lps=AXIAL)[0]
    ds = pydicom.dcmread(path)
    inner = pydicom.Dataset()
    inner.CodeValue = "X"
    inner.CodeMeaning = "nested"
    item = pydicom.Dataset()
    item.CodeValue = "Y"
    item.PurposeOfReferenceCodeSequence = pydicom.Sequence([inner])
    ds.DeidentificationMethodCodeSequence = pydicom.Sequence([item, pydicom.Dataset()])
    ds["DeidentificationMethodCodeSequence"].is_undefined_length = True
    ds.DeidentificationMethodCodeSequence[0].is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = pydicom.Sequence([pydicom.Dataset()])  # defined length
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    assert _assert_scan_matches_pydicom(path)


def test_scan_falls_back_on_what_it_does_not_handle(tmp_path: Path) -> None:
    stored = _volume((5, 4, 1))
    rle = write_series(tmp_path / "rle", stored, affine_lps=AXIAL, transfer_syntax=RLE_LOSSLESS)[0]
    assert scan_native(rle.read_bytes()) is None
    raw = write_series(tmp_path / "raw", stored, affine_lps=AXIAL)[0].read_bytes()
    assert scan_native(raw[:128] + b"XXXX" + raw[132:]) is None  # no DICM prefix
    assert scan_native(raw[:-200]) is None  # truncated
    assert scan_native(b"") is None


@pytest.mark.realdata
def test_scan_matches_pydicom_on_real_files(data_dir: Path) -> None:
    folders = [data_dir / "sts" / s / "dicom" / "image" for s in STS]
    folders += [data_dir / "lung1" / "LUNG1-001" / "image", data_dir / "dcm_qa_ts" / "In"]
    used = 0
    for folder in folders:
        for path in sorted(folder.iterdir())[:5]:
            used += _assert_scan_matches_pydicom(path)
    assert used >= 50  # the native files take the fast path


def test_seg_and_rtstruct_beside_the_images_are_skipped(tmp_path: Path) -> None:
    write_series(tmp_path, _volume((4, 4, 3)), affine_lps=AXIAL)
    seg = tmp_path / "seg.dcm"
    shutil.copy(pydicom_testdata("liver.dcm"), seg)  # pydicom-data DICOM SEG
    shutil.copy(pydicom_testdata("rtstruct.dcm"), tmp_path / "rs.dcm")
    assert read_series(tmp_path).shape == (1, 4, 4, 3)
    with pytest.raises(UnsupportedInputError, match="segmentation"):
        read_series([seg])


def test_header_longer_than_the_first_read_falls_back(tmp_path: Path) -> None:
    stored = _volume((6, 5, 3))
    files = write_series(tmp_path, stored, affine_lps=AXIAL, intercepts=-7)
    ds = pydicom.dcmread(files[1])
    ds.add_new(0x00420011, "OB", b"\x01" * 100_000)  # a 100 kB element before PixelData
    ds.save_as(files[1])
    img = read_series(tmp_path)
    np.testing.assert_array_equal(img[0].numpy(), stored.astype(np.float32) - 7)


@pytest.mark.parametrize("collector_on", [True, False])
@pytest.mark.parametrize("fails", [False, True])
def test_read_leaves_the_garbage_collector_as_it_found_it(
    tmp_path: Path, collector_on: bool, fails: bool
) -> None:
    """The collector is paused during a read and restored after, also when the read fails."""
    import gc

    skip = (3, 4) if fails else ()
    write_series(tmp_path, _volume((4, 4, 8)), affine_lps=AXIAL, skip=skip)
    seen: list[bool] = []
    original = reader_module._stacks_of

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    (gc.enable if collector_on else gc.disable)()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(reader_module, "_stacks_of", spy)
            for read in (read_series, read_stacks):
                if fails:
                    with pytest.raises(InvalidSeriesError):
                        read(tmp_path)
                else:
                    read(tmp_path)
                assert gc.isenabled() is collector_on
        assert seen == [False, False]
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("m.nii.gz", True), ("M.NII", True), ("rs.dcm", False), ("mask.nii.gz.bak", False)],
)
def test_nifti_files_are_told_by_name(name: str, expected: bool) -> None:
    assert is_nifti(name) is expected
