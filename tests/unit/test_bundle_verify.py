"""`monai_tumor.bundle.verify`: a tiny synthetic bundle passes; each corruption fails one check."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from monai_tumor.bundle.verify import (
    CHECK_NAMES,
    CheckStatus,
    InputLayout,
    LayoutKind,
    default_schema_path,
    read_input_layout,
    verify_bundle,
    write_synthetic_dataset,
)
from monai_tumor.errors import BundleError

REPO = Path(__file__).resolve().parents[2]
SCHEMA = default_schema_path()

NETWORK_DEF: dict[str, Any] = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}

METADATA: dict[str, Any] = {
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
    "0.8.1/meta_schema_20240725.json",
    "version": "0.0.1",
    "changelog": {"0.0.1": "tiny test bundle"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4.6",
    "required_packages_version": {"nibabel": "5.4.2"},
    "task": "tiny synthetic segmentation",
    "description": "random-weight UNet used to test bundle verify",
    "authors": "monai-tumor tests",
    "copyright": "none",
    "eval_metrics": {"mean_dice": 0.0},
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield",
                "modality": "CT",
                "num_channels": 1,
                "spatial_shape": [16, 16, 16],
                "dtype": "float32",
                "value_range": [-1000, 1000],
                "is_patch_data": True,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [16, 16, 16],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "background", "1": "blob"},
            }
        },
    },
    "monai_tumor": {
        "input_layout": {
            "kind": "files",
            "pattern": "*.nii.gz",
            "smoke_shape": [20, 18, 6],
            "smoke_spacing": [0.8, 0.8, 2.5],
        }
    },
}

# Runs with monai + torch + nibabel only (no ignite): initialize loads the weights,
# run loops over the dataset; "evaluator" is declared for MONAI Label/Zoo tooling.
INFERENCE: dict[str, Any] = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "/nonexistent",
    "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    "datalist": "$[{'image': f} for f in sorted(glob.glob(@dataset_dir + '/*.nii.gz'))]",
    "network_def": NETWORK_DEF,
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 1.5]},
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -1000,
                "a_max": 1000,
                "b_min": 0.0,
                "b_max": 1.0,
                "clip": True,
            },
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 1},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "",
                "separate_folder": False,
                "resample": False,
                "output_dtype": "$numpy.uint8",
            },
        ],
    },
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
    },
    "initialize": [
        "$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt'))",
        "$@network.eval()",
    ],
    "run": [
        "$torch.set_grad_enabled(False)",
        "$[@postprocessing({**d, 'pred': @inferer(d['image'][None].to(@device), @network)[0]})"
        " for d in @dataset]",
    ],
    "finalize": [],
}

TRAIN: dict[str, Any] = {
    "network_def": NETWORK_DEF,
    "train": {
        "dataset": {"_target_": "Dataset", "data": [], "transform": None},
        "handlers": [],
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 1},
    },
    "validate": {
        "dataset": {"_target_": "Dataset", "data": []},
        "evaluator": {"_target_": "SupervisedEvaluator"},
    },
}

LOGGING_CONF = """[loggers]
keys=root
[handlers]
keys=consoleHandler
[formatters]
keys=fullFormatter
[logger_root]
level=INFO
handlers=consoleHandler
[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)
[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _export_ts(bundle: Path) -> None:
    from monai.bundle import ckpt_export

    ckpt_export(
        net_id="network_def",
        filepath=str(bundle / "models" / "model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )


def _random_weights(bundle: Path, seed: int) -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    kwargs = {k: v for k, v in NETWORK_DEF.items() if k != "_target_"}
    torch.save(UNet(**kwargs).state_dict(), bundle / "models" / "model.pt")


def make_tiny_bundle(root: Path) -> Path:
    """Write a complete, valid tiny bundle into ``root`` and return it."""
    configs = root / "configs"
    _write_json(configs / "metadata.json", METADATA)
    _write_json(configs / "inference.json", INFERENCE)
    _write_json(configs / "train.json", TRAIN)
    _write_json(configs / "evaluate.json", {"validate#dataset#data": []})
    _write_json(configs / "series_selection.json", {"selections": []})
    (configs / "logging.conf").write_text(LOGGING_CONF)
    (root / "models").mkdir()
    _random_weights(root, seed=0)
    _export_ts(root)
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("# tiny\n")
    (root / "LICENSE").write_text("Apache-2.0\n")
    return root


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
    report = verify_bundle(tiny_bundle_template, schema_path=SCHEMA)
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
    _random_weights(b, seed=1)
    _export_ts(b)
    (b / "models" / "model.pt").write_bytes(good)


def _imports_monai_tumor(b: Path) -> None:
    _edit_json(
        b / "configs" / "inference.json",
        lambda c: c.update({"_helper": "from monai_tumor.ingest import reader"}),
    )


def _missing_label_key(b: Path) -> None:
    _edit_json(b / "configs" / "train.json", lambda c: c["train"].pop("trainer"))


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
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__.strip("_"),
)
def test_each_corruption_fails_exactly_its_check(
    tiny_bundle: Path, corrupt: Callable[[Path], None], failing: str
) -> None:
    corrupt(tiny_bundle)
    # the smoke run is independent of these corruptions and checked once above
    report = verify_bundle(tiny_bundle, schema_path=SCHEMA, smoke=False)
    assert report.failed == (failing,), report.to_dict()
    assert report["inference_smoke"].status is CheckStatus.WARN


def test_missing_layout_key_fails_layout_and_smoke(tiny_bundle: Path) -> None:
    _no_layout(tiny_bundle)
    report = verify_bundle(tiny_bundle, schema_path=SCHEMA, smoke=True)
    assert report.failed == ("input_layout", "inference_smoke")
    assert "monai_tumor.input_layout" in report["input_layout"].message


@pytest.mark.slow
def test_smoke_run_sees_only_the_bundle_runtime(tiny_bundle: Path) -> None:
    # scikit-image is installed here, but not in a bare torch+monai+nibabel environment
    _edit_json(
        tiny_bundle / "configs" / "inference.json",
        lambda c: c["initialize"].append("$__import__('skimage')"),
    )
    report = verify_bundle(tiny_bundle, schema_path=SCHEMA)
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


def _real_bundles() -> list[Path]:
    root = REPO / "bundles"
    return sorted(p for p in root.iterdir() if (p / "configs").is_dir()) if root.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("bundle", _real_bundles(), ids=lambda p: p.name)
def test_real_bundle_verifies(bundle: Path) -> None:
    def scripts_modules() -> dict[str, object]:
        return {n: m for n, m in sys.modules.items() if n.split(".")[0] == "scripts"}

    path_before, modules_before = list(sys.path), scripts_modules()
    report = verify_bundle(bundle, schema_path=SCHEMA)
    assert report.passed, json.dumps(report.to_dict(), indent=1)
    # the in-process checks import the bundle's own `scripts` (the nodule ensemble) and leave
    # neither it nor the bundle root behind, so the next bundle gets its own
    assert scripts_modules() == modules_before and sys.path == path_before
