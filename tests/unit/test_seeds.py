"""Tests for monai_tumor.inference.seeds: seed points from CSV, masks, RTSTRUCT and SEG."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_tumor.errors import ConfigError
from monai_tumor.geometry import lps_to_ras, patient_to_voxel, ras_to_lps, voxel_to_patient
from monai_tumor.inference.seeds import (
    Seed,
    seeds_from_csv,
    seeds_from_mask,
    seeds_from_nifti,
    seeds_from_rtstruct,
    seeds_from_seg,
)
from monai_tumor.ingest.groundtruth import rtstruct_to_mask, seg_to_mask
from monai_tumor.ingest.reader import read_series

SERIES_A = "1.2.826.0.1.3680043.8.498.1"
SERIES_B = "1.2.826.0.1.3680043.8.498.2"


def _write(tmp_path: Path, text: str, name: str = "seeds.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- CSV


def test_csv_minimal_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "x,y,z\n-102.4,37,-188.5\n1,2,3\n")
    assert seeds_from_csv(path) == [
        Seed((-102.4, 37.0, -188.5), "", "seeds.csv"),
        Seed((1.0, 2.0, 3.0), "", "seeds.csv"),
    ]


def test_csv_header_case_order_labels_comments_and_bom(tmp_path: Path) -> None:
    text = "\ufeff# exported from a viewer\nLabel, Z ,Y,X\n\nnodule 1,3,2,1\n# done\n"
    assert seeds_from_csv(_write(tmp_path, text)) == [
        Seed((1.0, 2.0, 3.0), "nodule 1", "seeds.csv")
    ]


def test_csv_filters_by_series_and_study(tmp_path: Path) -> None:
    text = (
        "x,y,z,label,SeriesInstanceUID,StudyInstanceUID\n"
        f"1,1,1,a,{SERIES_A},S1\n"
        f"2,2,2,b,{SERIES_B},S1\n"
        "3,3,3,c,,\n"
        f"4,4,4,d,{SERIES_A},S2\n"
    )
    path = _write(tmp_path, text)
    assert [s.label for s in seeds_from_csv(path)] == ["a", "b", "c", "d"]
    assert [s.label for s in seeds_from_csv(path, series_uid=SERIES_A)] == ["a", "c", "d"]
    assert [s.label for s in seeds_from_csv(path, series_uid=SERIES_A, study_uid="S1")] == [
        "a",
        "c",
    ]
    # a file without the filter column applies to every series
    plain = _write(tmp_path, "x,y,z\n1,2,3\n", "plain.csv")
    assert len(seeds_from_csv(plain, series_uid=SERIES_B)) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x,y\n1,2\n", r"lacks column\(s\) \['z'\]"),
        ("x,y,z\n1,2,3\n4,five,6\n", r"line 3: column 'y' is 'five'"),
        ("x,y,z\n1,2,3\n\n4,,6\n", r"line 4: column 'y' is ''"),
        ("x,y,z\n1,2,nan\n", r"line 2: column 'z' is 'nan'"),
        ("x,y,z\n1,2\n", r"line 2: 2 field\(s\)"),
        ("", "empty"),
        ("# only a comment\n", "empty"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text, "bad.csv")
    with pytest.raises(ConfigError, match=message) as info:
        seeds_from_csv(path)
    assert info.value.path == path


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        seeds_from_csv(tmp_path / "absent.csv")


# --------------------------------------------------------------------------- masks


def test_mask_components_become_seeds_at_their_centroids() -> None:
    """Flipped, anisotropic grid: each blob's seed is its LPS centroid, largest first."""
    affine_lps = np.diag([-0.8, 0.8, -2.5, 1.0])
    affine_lps[:3, 3] = [40.0, -60.0, 100.0]
    mask = np.zeros((30, 30, 12), dtype=np.uint8)
    mask[2:5, 3:6, 1:3] = 1  # small: 3 x 3 x 2, centroid (3, 4, 1.5)
    mask[10:20, 12:18, 4:10] = 1  # large: centroid (14.5, 14.5, 6.5)
    mask[25, 25, 11] = 1  # one voxel, diagonal-free from the others
    ref = MetaTensor(torch.zeros(1, *mask.shape), affine=torch.as_tensor(lps_to_ras(affine_lps)))
    seeds = seeds_from_mask(mask[None], ref, label="blob", source="m.nii.gz")
    assert len(seeds) == 3
    expected = voxel_to_patient(
        affine_lps, [[14.5, 14.5, 6.5], [3.0, 4.0, 1.5], [25.0, 25.0, 11.0]]
    )
    np.testing.assert_allclose([s.point_lps for s in seeds], expected, atol=1e-9)
    assert {s.label for s in seeds} == {"blob"} and {s.source for s in seeds} == {"m.nii.gz"}


def test_diagonal_neighbours_are_one_component() -> None:
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True
    ref = MetaTensor(torch.zeros(1, 5, 5, 5), affine=torch.eye(4, dtype=torch.float64))
    assert len(seeds_from_mask(mask, ref)) == 1
    assert seeds_from_mask(np.zeros((5, 5, 5)), ref) == []


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_rtstruct_seed_is_the_gtv_centroid(data_dir: Path) -> None:
    root = data_dir / "sts" / "STS_001" / "CT" / "dicom"
    ct = read_series(root / "image")
    rs = root / "mask" / "RS.dcm"
    seeds = seeds_from_rtstruct(rs, ct, roi="gtv")
    assert [(s.label, s.source) for s in seeds] == [("GTV_Mass_CT", "RS.dcm")]
    gtv = rtstruct_to_mask(rs, ct, roi=re.compile("GTV"))[0].numpy() > 0
    centroid = np.argwhere(gtv).mean(axis=0)
    affine_lps = ras_to_lps(ct.affine.numpy())
    np.testing.assert_allclose(seeds[0].point_lps, voxel_to_patient(affine_lps, centroid))
    # every ROI when none is named; an unknown name lists the ROIs
    assert seeds_from_rtstruct(rs, ct) == seeds
    with pytest.raises(ConfigError, match="GTV_Mass_CT"):
        seeds_from_rtstruct(rs, ct, roi="Spinal-Cord")


@pytest.mark.realdata
def test_seg_seeds_one_per_segment_component(data_dir: Path) -> None:
    ct = read_series(data_dir / "dcmqi_seg" / "ct-3slice")
    path = data_dir / "dcmqi_seg" / "liver.dcm"
    seeds = seeds_from_seg(path, ct)
    masks = seg_to_mask(path, ct)
    assert len(seeds) >= masks.shape[0]
    assert {s.label for s in seeds} == set(masks.meta["segment_labels"])
    assert {s.source for s in seeds} == {"liver.dcm"}
    # the largest component's seed lies inside the image
    ijk = patient_to_voxel(ras_to_lps(ct.affine.numpy()), seeds[0].point_lps)
    assert np.all(ijk > -0.5) and np.all(ijk < np.asarray(ct.shape[1:]) - 0.5)


# --------------------------------------------------------------------------- NIfTI masks


def _blob_nifti(path: Path, affine_ras: np.ndarray, centres: list[tuple[int, int, int]]) -> Path:
    data = np.zeros((30, 28, 12), dtype=np.uint8)
    for radius, (i, j, k) in enumerate(centres, start=2):
        data[i - radius : i + radius + 1, j - radius : j + radius + 1, k - 1 : k + 2] = 1
    nib.save(nib.Nifti1Image(data, affine_ras), str(path))
    return path


@settings(max_examples=25, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.4, 3.0) for _ in range(3)]),
    flips=st.tuples(*[st.sampled_from([-1.0, 1.0]) for _ in range(3)]),
    origin=st.tuples(*[st.floats(-200.0, 200.0) for _ in range(3)]),
)
def test_nifti_seeds_lie_at_the_blobs_in_patient_space(
    tmp_path_factory: pytest.TempPathFactory,
    spacing: tuple[float, float, float],
    flips: tuple[float, float, float],
    origin: tuple[float, float, float],
) -> None:
    """Seeds come from the mask's own header: any spacing, axis direction and origin."""
    affine_ras = np.diag([*(s * f for s, f in zip(spacing, flips, strict=True)), 1.0])
    affine_ras[:3, 3] = origin
    centres = [(20, 8, 6), (8, 18, 5)]  # the second blob is the larger one
    path = _blob_nifti(tmp_path_factory.mktemp("nifti") / "mask.nii.gz", affine_ras, centres)
    seeds = seeds_from_nifti(path)
    assert [s.source for s in seeds] == ["mask.nii.gz"] * 2
    # the header stores the affine in float32: the file's own affine is the reference
    stored = nib.Nifti1Image.from_filename(path).affine
    np.testing.assert_allclose(stored, affine_ras, rtol=1e-6, atol=1e-4)
    affine_lps = ras_to_lps(stored)
    for seed, centre in zip(seeds, reversed(centres), strict=True):
        expected = voxel_to_patient(affine_lps, np.asarray(centre, dtype=np.float64))
        np.testing.assert_allclose(seed.point_lps, expected, atol=1e-6)


@pytest.mark.realdata
def test_nifti_and_rtstruct_of_one_tumour_give_one_seed(data_dir: Path) -> None:
    """STS_002's NIfTI reference mask and its RTSTRUCT seed the same point (within a voxel)."""
    case = data_dir / "sts" / "STS_002" / "CT"
    image = read_series(case / "dicom" / "image")
    (from_rtstruct,) = seeds_from_rtstruct(case / "dicom" / "mask" / "RS.dcm", image, roi="")
    from_nifti = seeds_from_nifti(case / "nifti" / "mask" / "mask.nii.gz")
    assert len(from_nifti) >= 1
    distance = np.linalg.norm(np.subtract(from_nifti[0].point_lps, from_rtstruct.point_lps))
    assert distance < 1.0


@pytest.mark.parametrize("defect", ["empty", "not_nifti"])
def test_a_useless_nifti_mask_is_refused_by_name(tmp_path: Path, defect: str) -> None:
    path = tmp_path / f"{defect}.nii.gz"
    if defect == "empty":
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(path))
        message = "the mask holds no non-zero voxel"
    else:
        path.write_bytes(b"not a NIfTI file at all")
        message = "cannot read it as a NIfTI mask"
    with pytest.raises(ConfigError, match=rf"{defect}\.nii\.gz: {message}"):
        seeds_from_nifti(path)
