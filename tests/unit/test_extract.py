"""MIRP in memory: same geometry as its ITK reader, same features as from files."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from monai_tumor.errors import RadiomicsError
from monai_tumor.radiomics import extract
from monai_tumor.radiomics.extract import (
    compute_features,
    compute_features_in_memory,
    mirp_geometry,
)
from monai_tumor.radiomics.settings import RadiomicsSettings
from tests.support.lidc_voi import lidc_voi, nodule_radiomics_settings

#: MIRP's Monte Carlo estimates (regions of 1000 voxels or more), seeded from the inputs'
#: attributes: a file's folder path, a region's name in memory.
ESTIMATED = {"morph_moran_i", "morph_geary_c"}


def _itk_geometry(path: Path) -> tuple[tuple[float, ...], np.ndarray, tuple[float, ...]]:
    from mirp._data_import.itk_file import ImageITKFile

    f = ImageITKFile(file_path=str(path))
    f._complete_image_origin()
    f._complete_image_orientation()
    f._complete_image_spacing()
    return f.image_origin, f.image_orientation, f.image_spacing


def _assert_same_geometry(image: nib.Nifti1Image, folder: Path) -> None:
    path = folder / "g.nii.gz"
    nib.save(image, path)
    origin, orientation, spacing = mirp_geometry(image)
    i_origin, i_orientation, i_spacing = _itk_geometry(path)
    assert origin == i_origin
    assert np.array_equal(orientation, i_orientation)
    assert spacing == i_spacing


@pytest.mark.parametrize(
    "relative",
    [
        "brats/validation/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz",
        "lidc_nodules/image/LIDC-IDRI-0018_R_4.nii.gz",
        "sts/STS_001/CT/nifti/image/image.nii.gz",
    ],
)
def test_geometry_is_the_itk_readers_on_real_images(
    data_dir: Path, tmp_path: Path, relative: str
) -> None:
    affine = nib.Nifti1Image.from_filename(data_dir / relative).affine
    _assert_same_geometry(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), affine), tmp_path)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    spacing=st.tuples(*[st.floats(0.3, 5.0)] * 3),
    origin=st.tuples(*[st.floats(-400.0, 400.0)] * 3),
)
def test_geometry_is_the_itk_readers_for_any_affine(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
) -> None:
    """Oblique, anisotropic, any origin: what ITK reads back from the saved file."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.random(random_state=seed).as_matrix() * np.asarray(spacing)
    affine[:3, 3] = origin
    image = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine)
    _assert_same_geometry(image, tmp_path_factory.mktemp("geometry"))


def _from_files(
    image: nib.Nifti1Image, mask: nib.Nifti1Image, folder: Path, settings: RadiomicsSettings
) -> dict[str, float]:
    folder.mkdir(parents=True)
    nib.save(image, folder / "image.nii.gz")
    nib.save(mask, folder / "mask.nii.gz")
    return compute_features(folder / "image.nii.gz", folder / "mask.nii.gz", settings=settings)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize(
    ("case", "estimated"),
    [("LIDC-IDRI-0686_R_5", False), ("LIDC-IDRI-0018_R_4", True)],
)
def test_in_memory_features_equal_the_files_features(
    data_dir: Path, tmp_path: Path, case: str, estimated: bool
) -> None:
    """Every feature, in MIRP's order; below 1000 voxels Moran's I and Geary's C too."""
    settings = nodule_radiomics_settings()
    image, mask = lidc_voi(data_dir, case)
    in_memory = compute_features_in_memory(image, mask, settings=settings, sample_name="n")
    files = _from_files(image, mask, tmp_path / "n", settings)
    assert list(in_memory) == list(files)
    assert len(in_memory) > 150
    different = {k for k in files if not _same(files[k], in_memory[k])}
    assert different == (ESTIMATED if estimated else set())
    again = compute_features_in_memory(image, mask, settings=settings, sample_name="n")
    assert all(_same(in_memory[k], again[k]) for k in in_memory)  # a function of the name
    if estimated:  # the estimate is seeded by the name
        other = compute_features_in_memory(image, mask, settings=settings, sample_name="m")
        assert any(not _same(in_memory[k], other[k]) for k in ESTIMATED)
        for k in ESTIMATED:  # estimates of the same quantity
            assert abs(in_memory[k] - files[k]) < 0.05


@pytest.mark.parametrize(
    ("phantom", "settings"),
    [
        (
            "ibsi_1_digital_phantom",
            RadiomicsSettings(
                modality="MR",
                new_spacing_mm=None,
                resegmentation_range=None,
                discretisation="fixed_bin_number",
                n_bins=6,
                bin_width=None,
            ),
        ),
        ("ibsi_1_ct_radiomics_phantom", RadiomicsSettings()),
    ],
)
def test_in_memory_features_equal_the_files_features_on_the_ibsi_phantoms(
    data_dir: Path, tmp_path: Path, phantom: str, settings: RadiomicsSettings
) -> None:
    """The in-memory path computes what the IBSI-verified file path computes."""
    folder = data_dir / "ibsi" / phantom / "nifti"
    image_file = next((folder / "image").glob("*.nii.gz"))
    mask_file = next((folder / "mask").glob("*.nii.gz"))
    source, roi = (
        nib.Nifti1Image.from_filename(image_file),
        nib.Nifti1Image.from_filename(mask_file),
    )
    image = nib.Nifti1Image(np.asarray(source.dataobj, dtype=np.float32), source.affine)
    mask = nib.Nifti1Image((np.asarray(roi.dataobj) > 0).astype(np.uint8), roi.affine)
    in_memory = compute_features_in_memory(image, mask, settings=settings, sample_name="p")
    files = _from_files(image, mask, tmp_path / "p", settings)
    assert list(in_memory) == list(files)
    print(f"{phantom}: {len(files)} features compared")
    assert {k for k in files if not _same(files[k], in_memory[k])} <= ESTIMATED


def test_other_mirp_versions_go_through_files(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without MIRP's numpy classes: files in a folder named after the region, then removed."""
    settings = nodule_radiomics_settings()
    image, mask = lidc_voi(data_dir, "LIDC-IDRI-0686_R_5")
    direct = compute_features_in_memory(image, mask, settings=settings, sample_name="q")
    monkeypatch.setattr(extract, "_mirp_numpy_classes", lambda: None)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    through_files = compute_features_in_memory(image, mask, settings=settings, sample_name="q")
    assert list(direct) == list(through_files)
    assert all(_same(direct[k], through_files[k]) for k in direct)
    assert not list((tmp_path / "monai-tumor-radiomics").iterdir())


def test_a_mirp_failure_names_the_region(data_dir: Path) -> None:
    image, mask = lidc_voi(data_dir, "LIDC-IDRI-0686_R_5")
    empty = nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine)
    with pytest.raises(RadiomicsError, match="region-7"):
        compute_features_in_memory(
            image, empty, settings=RadiomicsSettings(), sample_name="region-7"
        )
