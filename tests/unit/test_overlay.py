"""Tests for monai_tumor.export.overlay: size, and contours on the right side of the picture."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
import torch
from matplotlib.image import imread
from monai.data import MetaTensor
from scipy.spatial.transform import Rotation

from monai_tumor.errors import ExportError
from monai_tumor.export.overlay import _pick_slices, render_overlay
from monai_tumor.export.seg import SegmentSpec
from monai_tumor.geometry import lps_to_ras, voxel_to_patient
from monai_tumor.postprocess.lesions import measure_lesions

RED_BLUE = [
    SegmentSpec(1, "left-anterior", color_rgb=(255, 0, 0)),
    SegmentSpec(2, "right-posterior", color_rgb=(0, 0, 255)),
]
PANEL, DPI = 3.0, 60


def _lps_affine(kind: str) -> npt.NDArray[np.float64]:
    """Voxel-to-LPS affines of differently stored grids (all 1 x 1.2 x 2 mm)."""
    cols = {
        "lps": np.eye(3),  # i -> L, j -> P, k -> S (DICOM axial)
        "ras": np.diag([-1.0, -1.0, 1.0]),  # i -> R, j -> A (NIfTI RAS+)
        "feet_first": np.diag([-1.0, 1.0, -1.0]),  # i -> R, j -> P, k -> I
        "sagittal": np.array(
            [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
        ),  # i->P, j->I, k->L
        "oblique": Rotation.from_euler("zx", [25, 15], degrees=True).as_matrix(),
    }[kind]
    aff = np.eye(4)
    aff[:3, :3] = cols @ np.diag([1.0, 1.2, 2.0])
    aff[:3, 3] = -aff[:3, :3] @ np.array([20.0, 20.0, 12.0])  # grid centre at the origin
    return aff


def _scene(kind: str) -> tuple[MetaTensor, MetaTensor]:
    """Label 1 on the patient's left-anterior, label 2 right-posterior, same z."""
    aff = _lps_affine(kind)
    shape = (41, 41, 25)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    x, y, z = np.moveaxis(voxel_to_patient(aff, idx), -1, 0)  # LPS mm
    labels = np.zeros(shape, dtype=np.uint8)
    near_z = np.abs(z) < 6
    labels[near_z & (np.hypot(x - 10, y + 10) < 5)] = 1  # x > 0: left; y < 0: anterior
    labels[near_z & (np.hypot(x + 10, y - 10) < 5)] = 2  # right, posterior
    image = np.where(labels == 1, 100.0, 0.0).astype(np.float32)  # bright where label 1 is
    affine = torch.as_tensor(lps_to_ras(aff))
    return (
        MetaTensor(torch.from_numpy(image[None]), affine=affine, meta={"Modality": "MR"}),
        MetaTensor(torch.from_numpy(labels[None]), affine=affine),
    )


def _coloured(png: npt.NDArray[np.floating], colour: str) -> npt.NDArray[np.intp]:
    """(row, col) of strongly red or blue pixels inside the panel band (not the legend)."""
    band = png[int(0.4 * DPI) : int((0.4 + PANEL) * DPI), :, :3]
    r, g, b = band[..., 0], band[..., 1], band[..., 2]
    hit = (
        (r > 0.7) & (g < 0.3) & (b < 0.3) if colour == "red" else (b > 0.7) & (r < 0.3) & (g < 0.3)
    )
    return np.argwhere(hit)


@pytest.mark.parametrize("kind", ["lps", "ras", "feet_first", "sagittal", "oblique"])
def test_radiological_orientation(kind: str, tmp_path: Path) -> None:
    image, mask = _scene(kind)
    out = render_overlay(
        image, mask, tmp_path / "o.png", n_slices=1, segments=RED_BLUE, panel_inches=PANEL, dpi=DPI
    )
    png = imread(out)
    assert png.shape[:2] == (int((PANEL + 1) * DPI), int(PANEL * DPI))
    red, blue = _coloured(png, "red"), _coloured(png, "blue")
    assert len(red) > 10 and len(blue) > 10
    centre_col = PANEL * DPI / 2
    # Patient left is on the image right; anterior is up.
    assert red[:, 1].mean() > centre_col > blue[:, 1].mean()
    assert red[:, 0].mean() < blue[:, 0].mean()
    # The red contour surrounds the bright image blob: image and contours are not flipped apart.
    band = png[int(0.4 * DPI) : int((0.4 + PANEL) * DPI), :, :3]
    white = np.argwhere(band.min(axis=-1) > 0.9)
    assert len(white) > 10
    np.testing.assert_allclose(red.mean(axis=0), white.mean(axis=0), atol=3.0)


def test_size_lesion_labels_and_several_panels(tmp_path: Path) -> None:
    image, mask = _scene("lps")
    lesions = measure_lesions(mask, image)
    out = render_overlay(
        image,
        mask,
        tmp_path / "sub" / "o.png",
        n_slices=3,
        segments=RED_BLUE,
        lesions=lesions,
        title="synthetic",
        panel_inches=PANEL,
        dpi=DPI,
    )
    png = imread(out)
    n_panels = len(_pick_slices(np.asarray(mask[0]), 3))
    assert n_panels == 3
    assert png.shape[:2] == (int((PANEL + 1) * DPI), int(3 * PANEL * DPI))
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file


def test_pick_slices_largest_first_and_spread() -> None:
    mask = np.zeros((10, 10, 20), dtype=np.uint8)
    for k, size in [(5, 6), (6, 5), (7, 4), (12, 3), (15, 2)]:
        mask[:size, :size, k] = 1
    assert _pick_slices(mask, 1) == [5]
    chosen = _pick_slices(mask, 3)
    assert chosen[0] == 5 and len(chosen) == 3
    assert min(abs(a - b) for a in chosen for b in chosen if a != b) >= 2
    assert len(_pick_slices(np.zeros((4, 4, 9)), 3)) == 3


def test_empty_mask_renders_without_contours(tmp_path: Path) -> None:
    image, mask = _scene("lps")
    empty = MetaTensor(torch.zeros_like(mask.as_tensor()), affine=mask.affine)
    png = imread(
        render_overlay(
            image,
            empty,
            tmp_path / "o.png",
            n_slices=2,
            segments=RED_BLUE,
            panel_inches=PANEL,
            dpi=DPI,
        )
    )
    assert len(_coloured(png, "red")) == 0 and len(_coloured(png, "blue")) == 0


def test_grid_mismatch_raises(tmp_path: Path) -> None:
    image, mask = _scene("lps")
    other = MetaTensor(
        mask.as_tensor().clone(), affine=torch.as_tensor(lps_to_ras(_lps_affine("ras")))
    )
    with pytest.raises(ExportError, match="same grid"):
        render_overlay(image, other, tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


@pytest.mark.realdata
def test_lung1_gtv_is_on_the_image_right(data_dir: Path, tmp_path: Path) -> None:
    from monai_tumor.export.overlay import LUNG_WINDOW
    from monai_tumor.ingest.groundtruth import rtstruct_to_mask
    from monai_tumor.ingest.reader import read_series

    case = data_dir / "lung1" / "LUNG1-001"
    image = read_series(case / "image")
    mask = rtstruct_to_mask(next((case / "mask_rtstruct").iterdir()), image, roi="GTV-1")
    lesions = measure_lesions(mask, image)
    assert lesions[0].centroid_lps_mm[0] > 0  # the contour points lie at patient left (LPS x > 0)
    spec = [SegmentSpec(1, "GTV-1", color_rgb=(255, 0, 0))]
    out = render_overlay(
        image,
        mask,
        tmp_path / "o.png",
        window=LUNG_WINDOW,
        lesions=lesions,
        segments=spec,
        n_slices=1,
        panel_inches=PANEL,
        dpi=DPI,
    )
    red = _coloured(imread(out), "red")
    assert len(red) > 20
    assert red[:, 1].mean() > PANEL * DPI / 2  # patient left -> image right


@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.float32])
def test_mask_types_draw_the_same_picture(dtype: torch.dtype, tmp_path: Path) -> None:
    """A uint8 mask is drawn without a wider copy; other types give the same picture."""
    image, labels = _scene("lps")
    binary = labels > 0 if dtype == torch.bool else labels
    as_u8, as_other = (cast(MetaTensor, binary.to(d)) for d in (torch.uint8, dtype))
    reference = render_overlay(image, as_u8, tmp_path / "u8.png", dpi=DPI)
    other = render_overlay(image, as_other, tmp_path / "other.png", dpi=DPI)
    assert other.read_bytes() == reference.read_bytes()
