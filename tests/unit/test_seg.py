"""Tests for monai_tumor.export.seg: every SEG frame lands on its source slice."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from monai_tumor.errors import ExportError
from monai_tumor.export.seg import (
    AlgorithmInfo,
    SegExportConfig,
    SegmentSpec,
    read_back_seg,
    write_dicom_seg,
)
from monai_tumor.ingest.groundtruth import seg_to_mask
from monai_tumor.ingest.reader import read_series
from tests.support.dicom_factory import lps_affine, random_rotation, write_enhanced, write_series

ALGO = AlgorithmInfo(name="test-bundle", version="1.2.3", parameters=(("fold", "0"),))
TUMOR = [SegmentSpec(number=1, label="Tumour")]
BRATS = [
    SegmentSpec(1, "Necrosis", property_type=codes.SCT.Necrosis, color_rgb=(255, 0, 0)),
    SegmentSpec(2, "Edema", property_type=codes.SCT.Edema, color_rgb=(0, 255, 0)),
    SegmentSpec(4, "Enhancing tumour", property_type=codes.SCT.Neoplasm, color_rgb=(0, 0, 255)),
]
SHAPE = (12, 9, 7)  # [column, row, slice]: non-square frames, so a row/column swap fails


def _asymmetric_labels(values: tuple[int, ...] = (1,)) -> npt.NDArray[np.uint8]:
    """A label map with no symmetry: any flip, transpose or slice shift changes it."""
    rng = np.random.default_rng(7)
    arr = np.zeros(SHAPE, dtype=np.uint8)
    for k in (1, 2, 4, 5):  # slices 0, 3 and 6 stay empty (omitted frames)
        for value in values:
            i, j = rng.integers(0, SHAPE[0] - 3), rng.integers(0, SHAPE[1] - 2)
            arr[i : i + 3, j : j + 2, k] = value
        arr[k, 0, k] = values[0]
    return arr


@pytest.fixture(params=["axial", "oblique"])
def series(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[MetaTensor, list[pydicom.Dataset]]:
    if request.param == "axial":
        aff = lps_affine(pixel_spacing=(0.7, 0.8), slice_step=2.5, origin=(-40.0, 20.0, -100.0))
    else:
        rot = random_rotation(0.3, 0.6, 0.2)
        aff = lps_affine(
            iop=(*rot[:, 0], *rot[:, 1]),
            pixel_spacing=(0.7, 0.8),
            slice_step=2.5,
            origin=(5.0, -7.0, 12.0),
        )
    stored = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    files = write_series(
        tmp_path / "src", stored, affine_lps=aff, shuffle_names=True, instance_numbers="random"
    )
    image = read_series(tmp_path / "src")
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return image, datasets


def _mask(
    image: MetaTensor, labels: npt.NDArray[np.uint8] | npt.NDArray[np.floating[Any]]
) -> MetaTensor:
    meta = {k: image.meta[k] for k in ("sop_instance_uids", "frame_numbers", "FrameOfReferenceUID")}
    return MetaTensor(torch.from_numpy(labels[None]), affine=image.affine, meta=meta)


def _frame_refs(seg: pydicom.Dataset) -> list[tuple[str, list[float], int]]:
    """(referenced source UID, frame IPP, segment number) for each SEG frame."""
    out = []
    shared = seg.SharedFunctionalGroupsSequence[0]
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        ident = item if "SegmentIdentificationSequence" in item else shared
        number = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out.append((str(uid), ipp, number))
    return out


def _check_seg(
    path: Path,
    mask: MetaTensor,
    datasets: list[pydicom.Dataset],
    segments: list[SegmentSpec],
) -> pydicom.Dataset:
    """Every check that does not go through highdicom's own reader."""
    seg = pydicom.dcmread(path)
    labels = np.asarray(mask[0]).astype(np.int64)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    k_of = {uid: k for k, uid in enumerate(mask.meta["sop_instance_uids"])}
    # Every source instance is referenced.
    referenced = {
        str(inst.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for inst in series.ReferencedInstanceSequence
    }
    assert referenced == set(by_uid)
    # Each frame sits at its source slice's position and holds that slice's mask.
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    seen = np.zeros((len(segments), labels.shape[2]), dtype=bool)
    for f, (uid, ipp, number) in enumerate(_frame_refs(seg)):
        np.testing.assert_allclose(
            ipp, [float(v) for v in by_uid[uid].ImagePositionPatient], atol=1e-3
        )
        k = k_of[uid]
        expected = (labels[:, :, k] == segments[number - 1].number).T  # (rows, columns)
        np.testing.assert_array_equal(frames[f].astype(bool), expected)
        seen[number - 1, k] = True
    # Frames left out are exactly the empty ones.
    for s, spec in enumerate(segments):
        present = (labels == spec.number).any(axis=(0, 1))
        np.testing.assert_array_equal(seen[s], present)
    return seg


def test_roundtrip_on_synthetic_series(
    series: tuple[MetaTensor, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    image, datasets = series
    mask = _mask(image, _asymmetric_labels())
    out = write_dicom_seg(
        mask, datasets, tmp_path / "out" / "seg.dcm", segments=TUMOR, algorithm=ALGO
    )
    seg = _check_seg(out, mask, datasets, TUMOR)
    np.testing.assert_array_equal(read_back_seg(out, datasets), np.asarray(mask[0]))
    # Placed by plane positions alone (independent of references) it is the same mask.
    placed = seg_to_mask(out, image, as_label_map=True)
    np.testing.assert_array_equal(np.asarray(placed[0]), np.asarray(mask[0]))
    # Descriptive content.
    assert seg.SegmentationType == "BINARY"
    assert seg.Modality == "SEG"
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert seg.PatientID == datasets[0].PatientID and "PatientBirthDate" in seg
    item = seg.SegmentSequence[0]
    assert item.SegmentLabel == "Tumour"
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Neoplasm.value
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    algo = item.SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("test-bundle", "1.2.3")
    rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
    assert np.abs(np.subtract(rgb, (255, 64, 64))).max() <= 2


def test_shuffled_sources_give_the_same_seg(
    series: tuple[MetaTensor, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    image, datasets = series
    mask = _mask(image, _asymmetric_labels())
    cfg = SegExportConfig(series_instance_uid="1.2.3.4", sop_instance_uid="1.2.3.4.5")
    a = write_dicom_seg(
        mask, datasets, tmp_path / "a.dcm", segments=TUMOR, algorithm=ALGO, config=cfg
    )
    shuffled = [datasets[i] for i in np.random.default_rng(3).permutation(len(datasets))]
    b = write_dicom_seg(
        mask, shuffled, tmp_path / "b.dcm", segments=TUMOR, algorithm=ALGO, config=cfg
    )
    seg_a, seg_b = pydicom.dcmread(a), pydicom.dcmread(b)
    assert _frame_refs(seg_a) == _frame_refs(seg_b)
    np.testing.assert_array_equal(seg_a.pixel_array, seg_b.pixel_array)


def test_multi_segment_brats_labels(
    series: tuple[MetaTensor, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    image, datasets = series
    mask = _mask(image, _asymmetric_labels(values=(1, 2, 4)))
    out = write_dicom_seg(mask, datasets, tmp_path / "seg.dcm", segments=BRATS, algorithm=ALGO)
    seg = _check_seg(out, mask, datasets, BRATS)
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2, 3]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [
        "Necrosis",
        "Edema",
        "Enhancing tumour",
    ]
    back = read_back_seg(out, datasets, segments=BRATS)
    np.testing.assert_array_equal(back, np.asarray(mask[0]))
    assert set(np.unique(back)) == {0, 1, 2, 4}


def test_refuses_masks_off_the_source_grid(
    series: tuple[MetaTensor, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    image, datasets = series
    labels = _asymmetric_labels()
    out = tmp_path / "seg.dcm"
    # Slice order reversed relative to the source instances: the worst bug, refused.
    flipped = _mask(image, labels)
    flipped.meta["sop_instance_uids"] = list(reversed(image.meta["sop_instance_uids"]))
    with pytest.raises(ExportError, match="not on the source grid"):
        write_dicom_seg(flipped, datasets, out, segments=TUMOR, algorithm=ALGO)
    # Affine shifted by one slice.
    shifted = _mask(image, labels)
    aff = shifted.affine.clone()
    aff[:3, 3] += aff[:3, 2]
    shifted.affine = aff
    with pytest.raises(ExportError, match="not on the source grid"):
        write_dicom_seg(shifted, datasets, out, segments=TUMOR, algorithm=ALGO)
    # Rows and columns swapped.
    swapped = _mask(image, np.ascontiguousarray(labels[:9, :, :].transpose(1, 0, 2)))
    with pytest.raises(ExportError, match="rows"):
        write_dicom_seg(swapped, datasets, out, segments=TUMOR, algorithm=ALGO)
    with pytest.raises(ExportError, match="not among"):
        write_dicom_seg(_mask(image, labels), datasets[1:], out, segments=TUMOR, algorithm=ALGO)
    with pytest.raises(ExportError, match="without a SegmentSpec"):
        write_dicom_seg(_mask(image, labels * 3), datasets, out, segments=TUMOR, algorithm=ALGO)
    assert not out.exists()


def test_instances_off_the_grid_are_still_referenced(
    series: tuple[MetaTensor, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    image, datasets = series
    extra = copy.deepcopy(datasets[2])  # e.g. a duplicate slice the reader dropped
    extra.SOPInstanceUID = generate_uid()
    mask = _mask(image, _asymmetric_labels())
    out = write_dicom_seg(
        mask, [*datasets, extra], tmp_path / "seg.dcm", segments=TUMOR, algorithm=ALGO
    )
    _check_seg(out, mask, [*datasets, extra], TUMOR)


def test_float_masks(series: tuple[MetaTensor, list[pydicom.Dataset]], tmp_path: Path) -> None:
    image, datasets = series
    labels = _asymmetric_labels()
    as_float = _mask(image, labels.astype(np.float32))  # e.g. an argmax kept as float
    out = write_dicom_seg(as_float, datasets, tmp_path / "seg.dcm", segments=TUMOR, algorithm=ALGO)
    np.testing.assert_array_equal(read_back_seg(out, datasets), labels)
    with pytest.raises(ExportError, match="non-integer"):
        write_dicom_seg(
            _mask(image, labels * 0.5), datasets, tmp_path / "x.dcm", segments=TUMOR, algorithm=ALGO
        )


def test_empty_mask_is_a_valid_seg(
    series: tuple[MetaTensor, list[pydicom.Dataset]], tmp_path: Path
) -> None:
    image, datasets = series
    mask = _mask(image, np.zeros(SHAPE, dtype=np.uint8))
    out = write_dicom_seg(mask, datasets, tmp_path / "seg.dcm", segments=TUMOR, algorithm=ALGO)
    assert not read_back_seg(out, datasets).any()


def test_multiframe_source(tmp_path: Path) -> None:
    aff = lps_affine(pixel_spacing=(0.7, 0.8), slice_step=2.5, origin=(1.0, 2.0, 3.0))
    stored = np.zeros(SHAPE, dtype=np.int16)
    path = write_enhanced(
        tmp_path / "mf.dcm", stored, affine_lps=aff, frame_order=[3, 0, 6, 2, 5, 1, 4]
    )
    image = read_series(path)
    assert len(set(image.meta["sop_instance_uids"])) == 1
    mask = _mask(image, _asymmetric_labels())
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = write_dicom_seg(mask, [ds], tmp_path / "seg.dcm", segments=TUMOR, algorithm=ALGO)
    np.testing.assert_array_equal(read_back_seg(out, [ds]), np.asarray(mask[0]))
    placed = seg_to_mask(out, image, as_label_map=True)
    np.testing.assert_array_equal(np.asarray(placed[0]), np.asarray(mask[0]))


@pytest.mark.realdata
def test_sts_ct_reference_mask(data_dir: Path, tmp_path: Path) -> None:
    import nibabel as nib

    case = data_dir / "sts" / "STS_001" / "CT"
    image = read_series(case / "dicom" / "image")
    nii = nib.Nifti1Image.from_filename(case / "nifti" / "mask" / "mask.nii.gz")
    np.testing.assert_allclose(nii.affine, image.affine.numpy(), atol=1e-4)
    mask = _mask(image, np.asarray(nii.dataobj).astype(np.uint8))
    files = sorted((case / "dicom" / "image").glob("*.dcm"))
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    specs = [SegmentSpec(1, "GTV", property_type=codes.SCT.Neoplasm)]
    out = write_dicom_seg(mask, datasets, tmp_path / "seg.dcm", segments=specs, algorithm=ALGO)
    seg = _check_seg(out, mask, datasets, specs)
    assert int(seg.NumberOfFrames) == int(np.asarray(nii.dataobj).any(axis=(0, 1)).sum())  # 31
    np.testing.assert_array_equal(read_back_seg(out, datasets), np.asarray(nii.dataobj))
    shuffled = [datasets[i] for i in np.random.default_rng(0).permutation(len(datasets))]
    np.testing.assert_array_equal(read_back_seg(out, shuffled), np.asarray(nii.dataobj))
    # The SEG read back by highdicom is a valid object.
    hd_seg = hd.seg.segread(out)
    assert hd_seg.number_of_segments == 1


@pytest.mark.parametrize(
    ("charset", "expected"),
    [
        (None, None),
        ("", None),
        (["", ""], None),
        ("ISO_IR 100", "ISO_IR 100"),
        (["ISO_IR 192"], "ISO_IR 192"),
        (["", "ISO 2022 IR 87"], ["ISO 2022 IR 6", "ISO 2022 IR 87"]),
    ],
)
def test_source_character_set_is_carried_or_defaulted(
    series: tuple[MetaTensor, list[pydicom.Dataset]],
    tmp_path: Path,
    charset: str | list[str] | None,
    expected: str | list[str] | None,
) -> None:
    """Exports often carry an empty SpecificCharacterSet, which highdicom rejects as given."""
    image, datasets = series
    sources = [copy.deepcopy(ds) for ds in datasets]
    for ds in sources:
        if charset is None:
            if "SpecificCharacterSet" in ds:
                del ds.SpecificCharacterSet
        else:
            ds.SpecificCharacterSet = charset
    labels = _asymmetric_labels()
    out = write_dicom_seg(
        _mask(image, labels), sources, tmp_path / "seg.dcm", segments=TUMOR, algorithm=ALGO
    )
    seg = pydicom.dcmread(out)
    stored = seg.get("SpecificCharacterSet")
    if isinstance(stored, pydicom.multival.MultiValue):
        stored = list(stored)
    assert stored == expected
    np.testing.assert_array_equal(read_back_seg(out, sources), labels)


def test_source_with_rounded_positions(tmp_path: Path) -> None:
    # Positions stored to 0.1 mm (steps 2.4 or 2.5 mm around 2.47 mm): the reader
    # accepts them (each within 0.06 mm of its grid), and the SEG frames sit on the
    # stored source positions; a mask one slice off is still refused.
    aff = lps_affine(pixel_spacing=(0.7, 0.8), slice_step=2.47, origin=(-40.0, 20.0, -100.0))
    exact = aff[:3, 3] + np.arange(SHAPE[2])[:, None] * aff[:3, 2]
    stored = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    files = write_series(tmp_path / "src", stored, affine_lps=aff, positions=np.round(exact, 1))
    image = read_series(tmp_path / "src")
    assert 0.01 < image.meta["slice_residual_mm"] <= 0.06
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    mask = _mask(image, _asymmetric_labels())
    mask.meta["slice_residual_mm"] = image.meta["slice_residual_mm"]
    out = write_dicom_seg(mask, datasets, tmp_path / "seg.dcm", segments=TUMOR, algorithm=ALGO)
    _check_seg(out, mask, datasets, TUMOR)
    shifted = _mask(image, _asymmetric_labels())
    shifted.meta["slice_residual_mm"] = image.meta["slice_residual_mm"]
    moved = shifted.affine.clone()
    moved[:3, 3] += moved[:3, 2]
    shifted.affine = moved
    with pytest.raises(ExportError, match="not on the source grid"):
        write_dicom_seg(shifted, datasets, tmp_path / "off.dcm", segments=TUMOR, algorithm=ALGO)
