"""A tiny synthetic MONAI bundle that passes every check of ``bundle verify``.

A random-weight two-level UNet with the Model Zoo layout, metadata valid against MONAI's
schema, inference/train/evaluate configs holding every id MONAI Label, MONAI Deploy and
MONAI's workflow properties need, and a TorchScript export; built in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "INFERENCE",
    "METADATA",
    "NETWORK_DEF",
    "TRAIN",
    "export_ts",
    "make_tiny_bundle",
    "random_weights",
    "write_json",
]

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

# every required id of MONAI's TrainProperties, and the optional ones MONAI Label reads
TRAIN: dict[str, Any] = {
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "dataset_dir": "/nonexistent",
    "network_def": NETWORK_DEF,
    "train": {
        "dataset": {"_target_": "Dataset", "data": [], "transform": None},
        "handlers": [],
        "inferer": {"_target_": "SimpleInferer"},
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


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def export_ts(bundle: Path) -> None:
    from monai.bundle import ckpt_export

    ckpt_export(
        net_id="network_def",
        filepath=str(bundle / "models" / "model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )


def random_weights(bundle: Path, seed: int) -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    kwargs = {k: v for k, v in NETWORK_DEF.items() if k != "_target_"}
    torch.save(UNet(**kwargs).state_dict(), bundle / "models" / "model.pt")


def make_tiny_bundle(root: Path) -> Path:
    """Write a complete, valid tiny bundle into ``root`` and return it."""
    configs = root / "configs"
    write_json(configs / "metadata.json", METADATA)
    write_json(configs / "inference.json", INFERENCE)
    write_json(configs / "train.json", TRAIN)
    write_json(configs / "evaluate.json", {"validate#dataset#data": []})
    write_json(configs / "series_selection.json", {"selections": []})
    (configs / "logging.conf").write_text(LOGGING_CONF)
    (root / "models").mkdir()
    random_weights(root, seed=0)
    export_ts(root)
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("# tiny\n")
    (root / "LICENSE").write_text("Apache-2.0\n")
    return root
