"""report.viewer: the display copy (grid, subsampling, no identifiers) and the page's files."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tomllib
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor
from typer.testing import CliRunner

from monai_tumor.cli.main import app
from monai_tumor.errors import ExportError
from monai_tumor.export.seg import SegmentSpec
from monai_tumor.geometry import subsampled_affine
from monai_tumor.pipeline.infer import InferOptions, infer_one
from monai_tumor.pipeline.outputs import MANIFEST_NAME
from monai_tumor.report.assets import (
    ASSETS_DIRNAME,
    NIIVUE_FILE,
    NIIVUE_SHA256,
    VIEWER_ASSETS,
    install_viewer_assets,
)
from monai_tumor.report.viewer import (
    DISPLAY_NAME,
    VIEWER_NAME,
    ViewerOptions,
    display_steps,
    make_display_copy,
    read_display,
    write_viewer,
)
from tests.support.pipeline_doubles import ThresholdSegmenter, fake_bundle_info
from tests.support.viewer_cases import IDENTIFIERS, write_identified_series


def _image(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> MetaTensor:
    data = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(1, *shape) % 1000
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([-10.0, 5.0, 30.0])
    return MetaTensor(data.to(torch.int16), affine=affine, meta={"Modality": "CT"})


@pytest.mark.parametrize(
    ("shape", "spacing", "max_voxels", "expected"),
    [
        ((512, 512, 134), (0.98, 0.98, 3.0), 1 << 24, (2, 2, 1)),  # LUNG1's CT
        ((240, 240, 155), (1.0, 1.0, 1.0), 1 << 24, (1, 1, 1)),  # BraTS
        ((512, 512, 600), (0.7, 0.7, 0.625), 1 << 24, (2, 2, 3)),  # thin-slice CT
        ((10, 10, 10), (1.0, 1.0, 1.0), 1, (10, 10, 10)),
    ],
)
def test_display_steps(shape, spacing, max_voxels, expected) -> None:
    assert display_steps(shape, spacing, max_voxels=max_voxels) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(1, 300), st.integers(1, 300), st.integers(1, 300)),
    st.tuples(*(st.floats(0.3, 5.0),) * 3),
    st.integers(1, 2_000_000),
)
def test_display_steps_bound_the_voxel_count(shape, spacing, max_voxels) -> None:
    steps = display_steps(shape, spacing, max_voxels=max_voxels)
    kept = [-(-n // s) for n, s in zip(shape, steps, strict=True)]
    assert int(np.prod(kept)) <= max_voxels
    assert all(s >= 1 for s in steps)


def test_display_copy_is_the_mask_on_a_subsampled_grid() -> None:
    image = _image((30, 28, 9), (0.5, 0.5, 2.0))
    labels = torch.zeros((1, 30, 28, 9), dtype=torch.uint8)
    labels[0, 10:20, 5:9, 2:5] = 1
    labels[0, 3:5, 20:27, 6] = 4
    copy = make_display_copy(image, labels, max_voxels=30 * 28 * 9 // 3)
    assert copy.steps == (2, 2, 1)
    np.testing.assert_array_equal(copy.labels, labels[0].numpy()[::2, ::2, ::1])
    np.testing.assert_array_equal(copy.image, image[0].numpy()[::2, ::2, ::1])
    np.testing.assert_allclose(copy.affine_ras, subsampled_affine(image.affine.numpy(), (2, 2, 1)))


def test_display_copy_refuses_a_mask_off_the_grid() -> None:
    with pytest.raises(ExportError, match="grid"):
        make_display_copy(_image((8, 8, 4), (1, 1, 1)), torch.zeros((1, 8, 8, 3)))


def test_write_viewer_round_trip(tmp_path: Path) -> None:
    image = _image((30, 28, 9), (0.5, 0.5, 2.0))
    labels = torch.zeros((1, 30, 28, 9), dtype=torch.uint8)
    labels[0, 0:6, 5:9, 2:5] = 2
    lesion = {
        "index": 1,
        "label": 2,
        "volume_ml": 0.05,
        "centroid_voxel": [2.5, 6.5, 3.0],
        "centroid_lps_mm": [1.0, 2.0, 3.0],
        "bbox_voxel": [[0, 5, 2], [5, 8, 4]],
    }
    files = write_viewer(
        tmp_path / "series",
        image=image,
        mask=labels,
        lesions=[lesion],
        segments=[SegmentSpec(2, "Edema", color_rgb=(10, 200, 30))],
        run_dir=tmp_path,
        title="bundle 1.0 CT",
        options=ViewerOptions(max_voxels=30 * 28 * 9 // 3),
    )
    assert files.steps == (2, 2, 1) and files.shape == (15, 14, 9)
    assert files.lesions_at_edge == 1  # its box starts at column 0
    payload = read_display(files.display)
    np.testing.assert_array_equal(np.asarray(payload["labels"].dataobj), labels[0, ::2, ::2])
    np.testing.assert_array_equal(np.asarray(payload["image"].dataobj), image[0, ::2, ::2])
    expected = subsampled_affine(image.affine.numpy(), (2, 2, 1))
    for key in ("image", "labels"):
        np.testing.assert_allclose(payload[key].affine, expected)
    assert payload["lesions"][0]["display_voxel"] == [1.25, 3.25, 3.0]
    assert payload["lesions"][0]["display_index"] == [1, 3, 3]
    assert payload["segments"] == [
        {"number": 2, "label": "Edema", "rgb": [10, 200, 30], "present": True}
    ]
    assert [p["name"] for p in payload["presets"]] == ["lung", "mediastinum", "auto"]
    page = files.page.read_text()
    assert f"../{ASSETS_DIRNAME}/niivue.umd.js" in page and "../index.html" in page
    assert f'<script src="{DISPLAY_NAME}"></script>' in page
    # The run's assets: NiiVue as pinned, installed once.
    assert hashlib.sha256((tmp_path / ASSETS_DIRNAME / NIIVUE_FILE).read_bytes()).hexdigest() == (
        NIIVUE_SHA256
    )
    assert sorted(p.name for p in (tmp_path / ASSETS_DIRNAME).iterdir()) == sorted(VIEWER_ASSETS)


def test_mr_float_image_is_scaled_into_int16(tmp_path: Path) -> None:
    data = torch.linspace(-2.5, 7.25, 8 * 6 * 5, dtype=torch.float32).reshape(1, 8, 6, 5)
    image = MetaTensor(data, affine=torch.eye(4, dtype=torch.float64), meta={"Modality": "MR"})
    files = write_viewer(
        tmp_path,
        image=image,
        mask=torch.zeros((1, 8, 6, 5), dtype=torch.uint8),
        lesions=[],
        segments=[],
        run_dir=tmp_path,
        title="mr",
    )
    payload = read_display(files.display)
    assert payload["image"].get_data_dtype() == np.int16
    np.testing.assert_allclose(payload["image"].get_fdata(), data[0].numpy(), atol=2e-4)
    assert [p["name"] for p in payload["presets"]] == ["auto"]


def test_every_static_file_is_package_data() -> None:
    """A wheel carries NiiVue and the pages' scripts: pyproject's package-data covers them."""
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["monai_tumor"]
    static = sorted((root / "monai_tumor" / "report" / "static").iterdir())
    assert {p.name for p in static} >= {*VIEWER_ASSETS, "report.js"}
    for path in static:
        rel = f"report/static/{path.name}"
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in patterns), rel


def test_install_viewer_assets_leaves_identical_files_alone(tmp_path: Path) -> None:
    folder = install_viewer_assets(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    (folder / "viewer.css").write_text("edited")
    install_viewer_assets(tmp_path)
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert after["viewer.css"] != stamps["viewer.css"]
    assert all(after[n] == stamps[n] for n in stamps if n != "viewer.css")
    assert "edited" not in (folder / "viewer.css").read_text()


def _infer(tmp_path: Path, options: InferOptions) -> Path:
    """Segment ``tmp_path/ct`` with the threshold double into ``tmp_path/out``."""
    out = tmp_path / "out"
    bundle = fake_bundle_info(tmp_path)
    model = ThresholdSegmenter()
    result = infer_one(
        tmp_path / "ct", bundle=bundle, out_dir=out, segmenter=model, options=options
    )
    assert result.status == "done"
    return out


@pytest.fixture
def identified_result(tmp_path: Path) -> Path:
    files = write_identified_series(tmp_path / "ct")
    assert pydicom.dcmread(files[0]).PatientName == IDENTIFIERS["PatientName"]
    return _infer(tmp_path, InferOptions())


def test_display_copy_carries_no_patient_identifier(identified_result: Path) -> None:
    out = identified_result
    payload = read_display(out / DISPLAY_NAME)
    for nii in (payload["image"], payload["labels"]):
        header = nii.header
        for key in ("descrip", "aux_file", "intent_name", "db_name"):
            assert header[key].item() in (b"", ""), key
        assert len(header.extensions) == 0
    texts = [(out / name).read_text() for name in (DISPLAY_NAME, VIEWER_NAME)]
    texts.append(json.dumps({k: v for k, v in payload.items() if k not in ("image", "labels")}))
    texts += [nii.to_bytes().decode("latin-1") for nii in (payload["image"], payload["labels"])]
    for text in texts:
        for value in (*IDENTIFIERS.values(), "Doe", "Jane"):
            assert not re.search(re.escape(value), text, re.IGNORECASE), value


def test_viewer_files_are_in_the_manifest(identified_result: Path) -> None:
    manifest = json.loads((identified_result / MANIFEST_NAME).read_text())
    assert {VIEWER_NAME, DISPLAY_NAME} <= set(manifest["files"])
    viewer = manifest["viewer"]
    sizes = manifest["files"][VIEWER_NAME]["bytes"] + manifest["files"][DISPLAY_NAME]["bytes"]
    assert viewer["bytes"] == sizes and viewer["steps"] == [1, 1, 1]
    assert viewer["shape"] == [40, 36, 12] and viewer["lesions_at_edge"] == 0
    mask = np.asarray(nib.Nifti1Image.from_filename(identified_result / "mask.nii.gz").dataobj)
    labels = np.asarray(read_display(identified_result / DISPLAY_NAME)["labels"].dataobj)
    np.testing.assert_array_equal(labels, mask)


def test_no_viewer(tmp_path: Path) -> None:
    write_identified_series(tmp_path / "ct")
    out = _infer(tmp_path, InferOptions(viewer=None))
    assert not (out / VIEWER_NAME).exists() and not (out / DISPLAY_NAME).exists()
    assert not (out / ASSETS_DIRNAME).exists()
    assert json.loads((out / MANIFEST_NAME).read_text())["viewer"] is None


@pytest.mark.parametrize("command", ["batch", "infer"])
def test_cli_offers_no_viewer(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--no-viewer" in result.output
