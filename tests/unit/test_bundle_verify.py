"""`monai_tumor.bundle.verify`: a tiny synthetic bundle passes; each corruption fails one check."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monai_tumor.bundle.verify import (
    CHECK_NAMES,
    BundleTask,
    CheckStatus,
    InputLayout,
    LayoutKind,
    read_input_layout,
    read_task,
    required_files,
    verify_bundle,
    write_synthetic_dataset,
)
from monai_tumor.errors import BundleError
from tests.support.tiny_bundle import export_ts, make_tiny_bundle, random_weights


@pytest.fixture(scope="module")
def tiny_bundle_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture
def tiny_bundle(tiny_bundle_template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_template, dest)
    return dest


@pytest.mark.slow
def test_tiny_bundle_passes_every_check(tiny_bundle_template: Path) -> None:
    report = verify_bundle(tiny_bundle_template)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert report.passed, report.to_dict()
    statuses = {c.name: c.status for c in report.checks}
    # the test train.json omits nothing required; optional MONAI Label ids are present too
    assert all(s is CheckStatus.PASS for s in statuses.values()), statuses
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _remove_license(b: Path) -> None:
    (b / "LICENSE").unlink()


def _bad_metadata(b: Path) -> None:
    _edit_json(b / "configs" / "metadata.json", lambda m: m.pop("authors"))


def _wrong_out_channels(b: Path) -> None:
    def edit(m: dict[str, Any]) -> None:
        pred = m["network_data_format"]["outputs"]["pred"]
        pred["num_channels"] = 3
        pred["channel_def"] = {"0": "background", "1": "a", "2": "b"}

    _edit_json(b / "configs" / "metadata.json", edit)


def _ts_mismatch(b: Path) -> None:
    good = (b / "models" / "model.pt").read_bytes()
    random_weights(b, seed=1)
    export_ts(b)
    (b / "models" / "model.pt").write_bytes(good)


def _imports_monai_tumor(b: Path) -> None:
    _edit_json(
        b / "configs" / "inference.json",
        lambda c: c.update({"_helper": "from monai_tumor.ingest import reader"}),
    )


def _missing_label_key(b: Path) -> None:
    # validate#evaluator: required by MONAI Label, optional in MONAI's TrainProperties
    _edit_json(b / "configs" / "train.json", lambda c: c["validate"].pop("evaluator"))


def _missing_workflow_property(b: Path) -> None:
    # train#inferer is a required id of MONAI's TrainProperties (not read by MONAI Label)
    _edit_json(b / "configs" / "train.json", lambda c: c["train"].pop("inferer"))


def _no_layout(b: Path) -> None:
    _edit_json(b / "configs" / "metadata.json", lambda m: m.pop("monai_tumor"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("corrupt", "failing"),
    [
        (_remove_license, "required_files"),
        (_bad_metadata, "metadata_schema"),
        (_wrong_out_channels, "net_in_out"),
        (_ts_mismatch, "torchscript"),
        (_imports_monai_tumor, "no_monai_tumor"),
        (_missing_label_key, "monai_label_keys"),
        (_missing_workflow_property, "model_zoo_keys"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__.strip("_"),
)
def test_each_corruption_fails_exactly_its_check(
    tiny_bundle: Path, corrupt: Callable[[Path], None], failing: str
) -> None:
    corrupt(tiny_bundle)
    # the smoke run is independent of these corruptions and checked once above
    report = verify_bundle(tiny_bundle, smoke=False)
    assert report.failed == (failing,), report.to_dict()
    assert report["inference_smoke"].status is CheckStatus.WARN


def test_missing_layout_key_fails_layout_and_smoke(tiny_bundle: Path) -> None:
    _no_layout(tiny_bundle)
    report = verify_bundle(tiny_bundle, smoke=True)
    assert report.failed == ("input_layout", "inference_smoke")
    assert "monai_tumor.input_layout" in report["input_layout"].message


@pytest.mark.slow
def test_smoke_run_sees_only_the_bundle_runtime(tiny_bundle: Path) -> None:
    # scikit-image is installed here, but not in a bare torch+monai+nibabel environment
    _edit_json(
        tiny_bundle / "configs" / "inference.json",
        lambda c: c["initialize"].append("$__import__('skimage')"),
    )
    report = verify_bundle(tiny_bundle)
    assert report.failed == ("inference_smoke",)
    assert "skimage is not available to bundles" in report["inference_smoke"].message


def test_not_a_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a folder"):
        verify_bundle(tmp_path / "nope")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"kind": "case_folders", "image_files": ["Flair*.nii.gz", "T1c*.nii.gz"]},
            InputLayout(LayoutKind.CASE_FOLDERS, image_files=("Flair*.nii.gz", "T1c*.nii.gz")),
        ),
        ({"kind": "files"}, InputLayout(LayoutKind.FILES)),
    ],
)
def test_read_input_layout(raw: dict[str, Any], expected: InputLayout) -> None:
    assert read_input_layout({"monai_tumor": {"input_layout": raw}}) == expected


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "zip"},
        {"kind": "case_folders"},
        {"kind": "files", "pattern": "sub/*.nii.gz"},
        {"kind": "files", "smoke_shape": [1, 2]},
    ],
)
def test_read_input_layout_rejects(raw: dict[str, Any]) -> None:
    with pytest.raises(BundleError):
        read_input_layout({"monai_tumor": {"input_layout": raw}})


def test_synthetic_case_folders(tmp_path: Path) -> None:
    import nibabel as nib

    layout = InputLayout(LayoutKind.CASE_FOLDERS, image_files=("Flair*.nii.gz", "T1c*"))
    written = write_synthetic_dataset(layout, tmp_path, shape=(8, 7, 5), num_channels=2)
    assert sorted(written) == ["case_a", "case_b"]
    files = sorted(p.name for p in (tmp_path / "case_a").iterdir())
    assert files == ["Flair.nii.gz", "T1c.nii.gz"]
    assert nib.Nifti1Image.from_filename(str(written["case_a"])).shape == (8, 7, 5)
    with pytest.raises(BundleError, match="num_channels"):
        write_synthetic_dataset(layout, tmp_path / "x", shape=(8, 7, 5), num_channels=1)


def test_read_image_mask_folders_layout() -> None:
    raw = {"kind": "image_mask_folders", "image_folder": "image", "mask_folder": "nodule_mask"}
    layout = read_input_layout({"monai_tumor": {"input_layout": raw}})
    assert layout == InputLayout(
        LayoutKind.IMAGE_MASK_FOLDERS, image_folder="image", mask_folder="nodule_mask"
    )


@pytest.mark.parametrize(
    "raw",
    [
        {"kind": "image_mask_folders", "image_folder": "image"},
        {"kind": "image_mask_folders", "image_folder": "a/b", "mask_folder": "m"},
        {"kind": "image_mask_folders", "image_folder": "same", "mask_folder": "same"},
    ],
)
def test_image_mask_folders_layout_rejects(raw: dict[str, Any]) -> None:
    with pytest.raises(BundleError, match="folder"):
        read_input_layout({"monai_tumor": {"input_layout": raw}})


def test_synthetic_image_mask_folders(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    layout = InputLayout(LayoutKind.IMAGE_MASK_FOLDERS, image_folder="img", mask_folder="msk")
    written = write_synthetic_dataset(
        layout, tmp_path, shape=(16, 12, 8), num_channels=2, value_range=(-1000, 600)
    )
    assert written == {c: tmp_path / "img" / f"{c}.nii.gz" for c in ("case_a", "case_b")}
    image = nib.Nifti1Image.from_filename(str(written["case_a"]))
    mask = nib.Nifti1Image.from_filename(str(tmp_path / "msk" / "case_a.nii.gz"))
    assert np.allclose(image.affine, mask.affine) and image.shape == mask.shape == (16, 12, 8)
    values = np.asarray(mask.dataobj)
    assert set(np.unique(values)) == {0, 1} and values.sum() > 0
    with pytest.raises(BundleError, match="two channels"):
        write_synthetic_dataset(layout, tmp_path / "x", shape=(8, 7, 5), num_channels=1)


@pytest.mark.parametrize(
    ("task", "has_series_selection"),
    [(BundleTask.SEGMENTATION, True), (BundleTask.CLASSIFICATION, False)],
)
def test_required_files_per_task(task: BundleTask, has_series_selection: bool) -> None:
    meta = {"monai_tumor": {"task": task.value}}
    assert read_task(meta) is task
    files = required_files(task)
    assert ("configs/series_selection.json" in files) is has_series_selection
    assert {"configs/train.json", "configs/evaluate.json", "LICENSE"} <= set(files)


def test_unknown_task_is_rejected() -> None:
    assert read_task({}) is BundleTask.SEGMENTATION
    with pytest.raises(BundleError, match="task"):
        read_task({"monai_tumor": {"task": "detection"}})


_CLASSIFIER_META = {"monai_tumor": {"task": "classification", "probability_column": "p"}}


@pytest.mark.parametrize(
    ("csv_text", "problem"),
    [
        ("case,p\ncase_a,0.25\ncase_b,1.0\n", None),
        ("case,prob\ncase_a,0.25\ncase_b,1.0\n", "columns"),
        ("case,p\ncase_a,0.25\n", "one row per input"),
        ("case,p\ncase_a,0.25\ncase_b,1.5\n", "outside"),
        ("case,p\ncase_a,0.25\ncase_b,nope\n", "not a number"),
        (None, "expected predictions.csv"),
    ],
)
def test_classification_smoke_output(tmp_path: Path, csv_text: str | None, problem: str) -> None:
    from monai_tumor.bundle.verify import _check_predictions

    if csv_text is not None:
        (tmp_path / "predictions.csv").write_text(csv_text, encoding="utf-8")
    inputs = {"case_a": tmp_path / "a", "case_b": tmp_path / "b"}
    status, message = _check_predictions(_CLASSIFIER_META, tmp_path, inputs, (8, 8, 4))
    if problem is None:
        assert status is CheckStatus.PASS, message
    else:
        assert status is CheckStatus.FAIL and problem in message
