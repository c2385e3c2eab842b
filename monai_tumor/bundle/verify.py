"""Offline verification of a MONAI bundle in the Model Zoo layout.

:func:`verify_bundle` runs a fixed list of named checks on a bundle folder and
returns a :class:`VerifyReport`. Nothing is downloaded: the metadata schema is a
local file (the ``schema`` URL inside ``metadata.json`` is never fetched) and the
smoke run uses a synthetic NIfTI dataset written to a temporary folder.

The checks (see ``docs/bundle_format.md`` for the why of each):

``required_files``
    ``configs/{metadata,inference,train,evaluate}.json``, ``configs/logging.conf``,
    ``models/model.{pt,ts}``, ``docs/README.md``, ``LICENSE``, and for a segmentation
    bundle ``configs/series_selection.json`` (the DICOM series it segments); a
    classification bundle (``"monai_tumor": {"task": "classification"}``) reads volumes of
    interest the pipeline cuts, so it has none (:func:`required_files`).
``metadata_schema``
    ``configs/metadata.json`` validates against MONAI's meta schema, shipped with this
    package (:func:`default_schema`).
``input_layout``
    ``metadata.json`` declares how the bundle reads ``dataset_dir`` under the
    custom key ``"monai_tumor": {"input_layout": {...}}`` (see :class:`InputLayout`).
``no_monai_tumor``
    No config file (``configs/*``) nor bundle script (``scripts/**.py``) mentions
    ``monai_tumor``: a bundle must run with only monai, torch and nibabel.
``monai_label_keys`` / ``monai_deploy_keys`` / ``model_zoo_keys``
    The config ids MONAI Label, MONAI Deploy and the Model Zoo conventions rely on;
    ``model_zoo_keys`` takes the required ids of inference and training workflows from
    MONAI's own workflow properties (:data:`monai.bundle.InferProperties`,
    :data:`monai.bundle.TrainProperties`) and the entry points of
    :class:`monai.bundle.ConfigWorkflow`.
``net_in_out``
    :func:`monai.bundle.verify_net_in_out` on ``network_def`` with the shapes and
    dtypes declared in ``network_data_format``; ``pred.channel_def`` names either
    every output channel or every value of the written label map (0 and the
    ``monai_tumor.segments`` numbers), which is what MONAI Label shows.
``torchscript``
    ``models/model.ts`` loads with :func:`torch.jit.load`, carries the
    ``metadata.json``/``inference.json`` extra files MONAI Deploy reads, and gives
    the same output as ``network_def`` with ``models/model.pt`` (atol 1e-4).
``inference_smoke``
    ``configs/inference.json`` runs in a subprocess (``python -m
    monai_tumor.bundle.smoke_run``: ``monai.bundle.run`` with
    ``bundle_root``/``dataset_dir``/``output_dir`` overrides, ``monai_tumor``
    and all packages outside :data:`BUNDLE_RUNTIME` blocked) on a small synthetic
    dataset with a flipped, anisotropic,
    offset grid; every case must give ``<output_dir>/<case>.nii.gz`` on exactly the
    input grid (shape and affine within 1e-3 mm); a classification bundle must write
    ``<output_dir>/predictions.csv`` (``monai_tumor.output``) with the columns ``case``
    and ``monai_tumor.probability_column``, one row per case, probabilities in [0, 1].
"""

from __future__ import annotations

import contextlib
import enum
import fnmatch
import inspect
import json
import logging
import math
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np

from monai_tumor.bundle import smoke_run
from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.errors import BundleError

__all__ = [
    "BUNDLE_RUNTIME",
    "CHECK_NAMES",
    "CLASSIFICATION_REQUIRED_FILES",
    "DEPLOY_INFERENCE_KEYS",
    "LABEL_INFERENCE_KEYS",
    "LABEL_TRAIN_KEYS",
    "LAYOUT_KEY",
    "MODEL_ZOO_INFERENCE_KEYS",
    "REQUIRED_FILES",
    "SCHEMA_NAME",
    "BundleTask",
    "CheckResult",
    "CheckStatus",
    "InputLayout",
    "LayoutKind",
    "VerifyReport",
    "default_schema",
    "read_input_layout",
    "read_task",
    "required_files",
    "verify_bundle",
    "workflow_ids",
    "write_synthetic_dataset",
]

#: Files a classification bundle must carry, relative to the bundle root: the Model Zoo's
#: necessary (``LICENSE``, ``configs/metadata.json``) and preferred (``models/model.pt``,
#: ``configs/inference.json``) files, the model card, the TorchScript export MONAI Deploy
#: loads, and the training/evaluation workflows (``train.json`` is what MONAI Label's and
#: MONAI's training properties read; ``evaluate.json`` is merged over it).
CLASSIFICATION_REQUIRED_FILES: tuple[str, ...] = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/train.json",
    "configs/evaluate.json",
    "configs/logging.conf",
    "models/model.pt",
    "models/model.ts",
    "docs/README.md",
    "LICENSE",
)

#: Files a segmentation bundle must carry: those of a classification bundle and the
#: DICOM series selection rules of the batch pipeline.
REQUIRED_FILES: tuple[str, ...] = (
    *CLASSIFICATION_REQUIRED_FILES[:5],
    "configs/series_selection.json",
    *CLASSIFICATION_REQUIRED_FILES[5:],
)

#: The MONAI bundle metadata schema shipped as package data (``schemas/README.md``).
SCHEMA_NAME = "meta_schema_20240725.json"

# MONAI Label is not a dependency, so the ids its bundle tasks read are listed here by
# hand (from monailabel's ``BundleConstants``); MONAI's own workflow properties are read
# from ``monai.bundle`` instead (:func:`workflow_ids`).

#: Ids of ``inference.json`` MONAI Label's ``BundleInferTask`` reads.
LABEL_INFERENCE_KEYS: tuple[str, ...] = (
    "bundle_root",
    "device",
    "network_def",
    "preprocessing",
    "postprocessing",
    "inferer",
)
#: Ids of ``train.json`` MONAI Label's ``BundleTrainTask`` reads: (id, required).
#: The optional ones are reported as warnings when missing.
LABEL_TRAIN_KEYS: tuple[tuple[str, bool], ...] = (
    ("train#trainer", True),
    ("train#dataset", True),
    ("validate#evaluator", True),
    ("train#trainer#max_epochs", False),
    ("train#dataset#data", False),
    ("validate#dataset#data", False),
    ("train#handlers", False),
)
#: Ids of ``inference.json`` MONAI Deploy's bundle inference operator reads
#: (it also needs ``models/model.ts``, checked by ``torchscript``).
DEPLOY_INFERENCE_KEYS: tuple[str, ...] = ("preprocessing", "postprocessing", "inferer")
#: Ids the Model Zoo layout expects in ``inference.json`` beyond MONAI's workflow
#: properties (:func:`workflow_ids`): where outputs go and the network on its device.
MODEL_ZOO_INFERENCE_KEYS: tuple[str, ...] = ("output_dir", "network")

#: Custom metadata key holding the input layout (additional properties are allowed
#: by the meta schema).
LAYOUT_KEY = "monai_tumor"

_TS_ATOL = 1e-4
# any mention of the package except the metadata key ``"monai_tumor": {...}`` itself
_MENTION = re.compile(r"\bmonai_tumor\b(?!\"\s*:)")
_GRID_ATOL_MM = 1e-3
_SMOKE_TIMEOUT_S = 900.0


class CheckStatus(str, enum.Enum):
    """Outcome of one check."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"


@dataclass(frozen=True)
class CheckResult:
    """One named check of a bundle.

    Attributes
    ----------
    name
        Stable check name (e.g. ``"net_in_out"``).
    status
        pass, fail or warn (warn: not a failure, but worth reading).
    message
        What was found; for a failure also what was expected and what to do.
    seconds
        Wall time the check took (informative only).
    """

    name: str
    status: CheckStatus
    message: str
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class VerifyReport:
    """All checks of one bundle, in the order they ran."""

    bundle_dir: Path
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return all(c.status is not CheckStatus.FAIL for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the failed checks."""
        return tuple(c.name for c in self.checks if c.status is CheckStatus.FAIL)

    def __getitem__(self, name: str) -> CheckResult:
        """Return the check called ``name``."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the ``--json`` output of ``monai-tumor bundle verify``)."""
        return {
            "bundle": str(self.bundle_dir),
            "passed": self.passed,
            "failed": list(self.failed),
            "checks": [c.to_dict() for c in self.checks],
        }


class BundleTask(str, enum.Enum):
    """What a bundle's ``inference.json`` writes (``"monai_tumor": {"task": ...}``)."""

    #: A label map ``<output_dir>/<case>.nii.gz`` on each input's grid.
    SEGMENTATION = "segmentation"
    #: One probability per case in ``<output_dir>/predictions.csv``.
    CLASSIFICATION = "classification"


class LayoutKind(str, enum.Enum):
    """How a bundle's ``dataset_dir`` is organised."""

    #: One sub-folder per case, holding one NIfTI file per image channel.
    CASE_FOLDERS = "case_folders"
    #: One NIfTI file per case directly in ``dataset_dir`` (single-channel images).
    FILES = "files"
    #: ``<image_folder>/<case>.nii.gz`` and a same-named lesion mask in ``<mask_folder>/``
    #: (the network input is the image and the mask as two channels).
    IMAGE_MASK_FOLDERS = "image_mask_folders"


@dataclass(frozen=True)
class InputLayout:
    """The input layout a bundle declares in ``metadata.json``.

    Declared as::

        "monai_tumor": {"input_layout": {
            "kind": "case_folders",                  # or "files", "image_mask_folders"
            "image_files": ["Flair*.nii.gz", "T1c*.nii.gz"], # case_folders: one glob per channel
            "pattern": "*.nii.gz",                   # files, image_mask_folders: glob of cases
            "image_folder": "image",                 # image_mask_folders: the images
            "mask_folder": "nodule_mask",            # image_mask_folders: same-named masks
            "smoke_shape": [64, 64, 32],                     # optional, voxels
            "smoke_spacing": [1.0, 1.0, 1.0]                 # optional, mm
        }}

    The case name is the folder name (``case_folders``) or the file name without
    ``.nii.gz``/``.nii`` (``files``, ``image_mask_folders``); a segmentation bundle must
    write ``<output_dir>/<case>.nii.gz``, a classification bundle one row per case.
    Globs may use ``*`` only.

    Attributes
    ----------
    kind
        The layout.
    image_files
        ``case_folders`` only: one glob per input channel, in channel order.
    pattern
        ``files`` and ``image_mask_folders``: the glob the bundle uses to find cases.
    image_folder, mask_folder
        ``image_mask_folders`` only: sub-folders of the images and of their masks.
    smoke_shape
        Spatial shape (voxels, axes [column, row, slice]) of the synthetic smoke input,
        or None to derive it from ``network_data_format`` (``*`` -> 32, ``n`` -> 2).
    smoke_spacing
        Voxel size (mm) of the synthetic smoke input.
    """

    kind: LayoutKind
    image_files: tuple[str, ...] = ()
    pattern: str = "*.nii.gz"
    image_folder: str = ""
    mask_folder: str = ""
    smoke_shape: tuple[int, int, int] | None = None
    smoke_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class _Context:
    """What the checks share."""

    bundle_dir: Path
    schema: Traversable
    device: str
    smoke: bool
    timeout_s: float
    python: str = field(default_factory=lambda: sys.executable)


def default_schema() -> Traversable:
    """Return MONAI's bundle meta schema shipped with this package (never downloaded).

    Returns
    -------
    importlib.resources.abc.Traversable
        ``monai_tumor/bundle/schemas/meta_schema_20240725.json`` inside the installed
        package (a :class:`pathlib.Path` for an ordinary installation); read it with
        ``.read_text()``.
    """
    return files("monai_tumor.bundle").joinpath("schemas", SCHEMA_NAME)


def workflow_ids(workflow: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Config ids of a MONAI bundle workflow, from MONAI's own workflow properties.

    Parameters
    ----------
    workflow
        ``"infer"`` (:data:`monai.bundle.InferProperties`, checked in ``inference.json``)
        or ``"train"`` (:data:`monai.bundle.TrainProperties`, in ``train.json``).

    Returns
    -------
    tuple
        ``(required, optional)`` config ids (``#``-separated). For ``"infer"`` the
        required ids also hold the entry points :class:`monai.bundle.ConfigWorkflow`
        runs by default (``initialize``, ``run``, ``finalize``).
    """
    from monai.bundle import ConfigWorkflow, InferProperties, TrainProperties
    from monai.bundle.utils import ID_SEP_KEY
    from monai.utils import BundleProperty, BundlePropertyConfig

    if workflow not in ("infer", "train"):
        raise ValueError(f"workflow is {workflow!r}; expected 'infer' or 'train'")
    props = InferProperties if workflow == "infer" else TrainProperties
    required: list[str] = []
    optional: list[str] = []
    for prop in props.values():
        config_id = str(prop[BundlePropertyConfig.ID]).replace(ID_SEP_KEY, "#")
        (required if prop[BundleProperty.REQUIRED] else optional).append(config_id)
    if workflow == "infer":
        defaults = inspect.signature(ConfigWorkflow.__init__).parameters
        required += [str(defaults[p].default) for p in ("init_id", "run_id", "final_id")]
    return tuple(required), tuple(optional)


# ----------------------------------------------------------------------------- helpers


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError("file is missing", path=path) from exc
    except (OSError, ValueError) as exc:
        raise BundleError(f"not valid JSON ({exc}); fix the file", path=path) from exc


def _metadata(bundle_dir: Path) -> dict[str, Any]:
    meta = _load_json(bundle_dir / "configs" / "metadata.json")
    if not isinstance(meta, dict):
        raise BundleError(
            "expected a JSON object at the top level", path=bundle_dir / "configs" / "metadata.json"
        )
    return meta


def _parser(bundle_dir: Path, config: str = "inference.json", *, device: str | None = "cpu") -> Any:
    """ConfigParser of one bundle config with its metadata.

    With a ``device``, ``bundle_root`` and ``device`` are overridden (to build the
    network); with None the config is left as written (to check which ids exist).
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=str(bundle_dir / "configs" / config))
    meta = bundle_dir / "configs" / "metadata.json"
    if meta.is_file():
        parser.read_meta(f=str(meta))
    if device is not None:
        parser["bundle_root"] = str(bundle_dir)
        parser["device"] = f"$torch.device('{device}')"
    return parser


def _io_format(meta: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    fmt = meta.get("network_data_format", {})
    try:
        return fmt["inputs"]["image"], fmt["outputs"]["pred"]
    except (KeyError, TypeError) as exc:
        raise BundleError(
            "metadata network_data_format must declare inputs.image and outputs.pred "
            f"(missing {exc}); add them as in Model Zoo bundles"
        ) from exc


# "32", "32*n", "32**p", "32**p*n": the forms the Model Zoo metadata uses for spatial_shape
_SHAPE_TERM = re.compile(r"^\s*(\d+)\s*(\*\*\s*p)?\s*(\*\s*n)?\s*$")


def _fake_spatial_shape(
    spatial_shape: Sequence[Any], *, any_size: int = 32, n: int = 1
) -> tuple[int, ...]:
    """Return a concrete shape for a declared ``spatial_shape`` (``*`` -> ``any_size``, p = 1).

    MONAI's helper for this (``monai.bundle.scripts._get_fake_spatial_shape``) is private,
    so the few forms metadata uses are parsed here.
    """
    shape: list[int] = []
    for item in spatial_shape:
        if isinstance(item, int):
            shape.append(item)
            continue
        text = str(item)
        match = _SHAPE_TERM.match(text)
        if text.strip() == "*":
            shape.append(any_size)
        elif match:
            shape.append(int(match.group(1)) * (n if match.group(3) else 1))
        else:
            raise BundleError(
                f"network_data_format spatial_shape entry {text!r} not understood; "
                "expected an int, '*', 'A*n', 'A**p' or 'A**p*n'"
            )
    return tuple(shape)


def _load_state_dict(path: Path) -> Mapping[str, Any]:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if (
        isinstance(ckpt, Mapping)
        and ckpt
        and all(isinstance(v, torch.Tensor) for v in ckpt.values())
    ):
        return ckpt
    if isinstance(ckpt, Mapping):
        for key in ("model", "network", "state_dict", "net"):
            if isinstance(ckpt.get(key), Mapping):
                return ckpt[key]
    raise BundleError("expected a state_dict (or a checkpoint with a 'model' entry)", path=path)


def read_input_layout(meta: Mapping[str, Any]) -> InputLayout:
    """Parse the input layout declared under ``metadata["monai_tumor"]["input_layout"]``.

    Raises
    ------
    BundleError
        When the key is missing or malformed; the message shows the expected form.
    """
    example = (
        '"monai_tumor": {"input_layout": {"kind": "case_folders", '
        '"image_files": ["Flair*.nii.gz", "T1c*.nii.gz"]}} or '
        '"monai_tumor": {"input_layout": {"kind": "files", "pattern": "*.nii.gz"}} or '
        '"monai_tumor": {"input_layout": {"kind": "image_mask_folders", '
        '"image_folder": "image", "mask_folder": "nodule_mask"}}'
    )
    raw = meta.get(LAYOUT_KEY, {})
    raw = raw.get("input_layout") if isinstance(raw, Mapping) else None
    if not isinstance(raw, Mapping):
        raise BundleError(f"metadata.json has no {LAYOUT_KEY}.input_layout; add e.g. {example}")
    try:
        kind = LayoutKind(raw.get("kind"))
    except ValueError as exc:
        raise BundleError(
            f"input_layout.kind is {raw.get('kind')!r}; expected one of "
            f"{[k.value for k in LayoutKind]}"
        ) from exc
    image_files = tuple(str(s) for s in raw.get("image_files", ()))
    pattern = str(raw.get("pattern", "*.nii.gz"))
    for glob in (*image_files, pattern):
        if re.search(r"[?\[\]/]", glob):
            raise BundleError(f"input_layout glob {glob!r} may only use '*' wildcards")
    if kind is LayoutKind.CASE_FOLDERS and not image_files:
        raise BundleError(f"input_layout of kind case_folders needs image_files; e.g. {example}")
    image_folder = str(raw.get("image_folder", ""))
    mask_folder = str(raw.get("mask_folder", ""))
    if kind is LayoutKind.IMAGE_MASK_FOLDERS:
        for key, folder in (("image_folder", image_folder), ("mask_folder", mask_folder)):
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", folder) or folder in {".", ".."}:
                raise BundleError(
                    f"input_layout.{key} is {folder!r}; expected one folder name inside "
                    f"dataset_dir, e.g. {example}"
                )
        if image_folder == mask_folder:
            raise BundleError(
                f"input_layout image_folder and mask_folder are both {image_folder!r}; "
                "images and masks need their own folders"
            )
    shape = raw.get("smoke_shape")
    spacing = raw.get("smoke_spacing", (1.0, 1.0, 1.0))
    if shape is not None and (len(shape) != 3 or any(int(s) < 1 for s in shape)):
        raise BundleError(f"input_layout.smoke_shape must be 3 positive ints, found {shape!r}")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise BundleError(f"input_layout.smoke_spacing must be 3 positive mm, found {spacing!r}")
    return InputLayout(
        kind=kind,
        image_files=image_files,
        pattern=pattern,
        image_folder=image_folder,
        mask_folder=mask_folder,
        smoke_shape=None if shape is None else (int(shape[0]), int(shape[1]), int(shape[2])),
        smoke_spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
    )


def read_task(meta: Mapping[str, Any]) -> BundleTask:
    """Return the task a bundle declares under ``metadata["monai_tumor"]["task"]``.

    Segmentation when the key is absent. A classification bundle also names its output
    file (``"output"``, default ``predictions.csv``) and the probability column
    (``"probability_column"``), read by :func:`_classification_output`.

    Raises
    ------
    BundleError
        When the task is not one of :class:`BundleTask`.
    """
    block = meta.get(LAYOUT_KEY, {})
    raw = block.get("task", BundleTask.SEGMENTATION.value) if isinstance(block, Mapping) else None
    try:
        return BundleTask(raw)
    except ValueError as exc:
        raise BundleError(
            f"metadata {LAYOUT_KEY}.task is {raw!r}; expected one of "
            f"{[t.value for t in BundleTask]}"
        ) from exc


def required_files(task: BundleTask) -> tuple[str, ...]:
    """Files a bundle of this task must carry (:data:`REQUIRED_FILES` for segmentation)."""
    return CLASSIFICATION_REQUIRED_FILES if task is BundleTask.CLASSIFICATION else REQUIRED_FILES


def _classification_output(meta: Mapping[str, Any]) -> tuple[str, str]:
    """``(output file name, probability column)`` of a classification bundle."""
    block = meta.get(LAYOUT_KEY, {})
    block = block if isinstance(block, Mapping) else {}
    output = str(block.get("output", "predictions.csv"))
    column = block.get("probability_column")
    if not isinstance(column, str) or not column or column == "case":
        raise BundleError(
            f"metadata {LAYOUT_KEY}.probability_column is {column!r}; a classification bundle "
            'names the probability column of its output, e.g. "malignancy_probability"'
        )
    if "/" in output or not output.endswith(".csv"):
        raise BundleError(
            f"metadata {LAYOUT_KEY}.output is {output!r}; expected a .csv file name in output_dir"
        )
    return output, column


def _synthetic_affine(spacing: Sequence[float]) -> np.ndarray:
    """Return a RAS affine like a DICOM LPS grid: x, y flipped, anisotropic, offset origin."""
    affine = np.diag([-float(spacing[0]), -float(spacing[1]), float(spacing[2]), 1.0])
    affine[:3, 3] = (37.5, -12.25, -81.0)
    return affine


def write_synthetic_dataset(
    layout: InputLayout,
    dataset_dir: Path,
    *,
    shape: Sequence[int],
    num_channels: int,
    value_range: Sequence[float] | None = None,
    cases: Sequence[str] = ("case_a", "case_b"),
    seed: int = 0,
) -> dict[str, Path]:
    """Write a small synthetic NIfTI dataset in a bundle's input layout.

    Parameters
    ----------
    layout
        The bundle's declared layout.
    dataset_dir
        Folder to write into (created).
    shape
        Spatial shape in voxels, axes [column, row, slice].
    num_channels
        Image channels; for ``files`` layouts it must be 1.
    value_range
        Intensity range to draw from (e.g. HU for CT); standard normal when None.
    cases
        Case names.
    seed
        Seed of the random intensities.

    Returns
    -------
    dict[str, Path]
        For each case, one of its written files (its grid is the input grid; the grid
        is the same for all channels: RAS affine with flipped x/y, see
        :func:`_synthetic_affine`).
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = _synthetic_affine(layout.smoke_spacing)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = (
        (float(value_range[0]), float(value_range[1]))
        if value_range is not None
        and len(value_range) == 2
        and all(math.isfinite(float(v)) for v in value_range)
        and float(value_range[1]) > float(value_range[0])
        else (math.nan, math.nan)
    )

    def volume() -> np.ndarray:
        if math.isnan(lo):
            data = rng.standard_normal(tuple(shape)).astype(np.float32)
        else:
            data = rng.uniform(lo, hi, size=tuple(shape)).astype(np.float32)
        # a bright blob off-centre, so that crop-foreground style transforms have work to do
        idx = np.indices(tuple(shape)).astype(np.float32)
        centre = np.array(shape, dtype=np.float32) * np.array([0.4, 0.55, 0.5], dtype=np.float32)
        r2 = sum(((idx[i] - centre[i]) / max(shape[i] / 5.0, 1.0)) ** 2 for i in range(3))
        peak = (hi if not math.isnan(hi) else 3.0) * 0.8
        data[r2 < 1.0] = peak
        return data

    written: dict[str, Path] = {}
    for case in cases:
        if layout.kind is LayoutKind.IMAGE_MASK_FOLDERS:
            if num_channels != 2:
                raise BundleError(
                    "input_layout kind 'image_mask_folders' feeds the image and its mask as "
                    f"two channels, but network_data_format.inputs.image.num_channels is "
                    f"{num_channels}; make them agree"
                )
            name = layout.pattern.replace("*", case)
            image = volume()
            # the mask is the bright blob (a lesion the classifier is asked about)
            mask = (image >= (hi if not math.isnan(hi) else 3.0) * 0.8).astype(np.uint8)
            for sub, data in ((layout.image_folder, image), (layout.mask_folder, mask)):
                (dataset_dir / sub).mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(data, affine), str(dataset_dir / sub / name))
            written[case] = dataset_dir / layout.image_folder / name
        elif layout.kind is LayoutKind.CASE_FOLDERS:
            if len(layout.image_files) != num_channels:
                raise BundleError(
                    f"input_layout.image_files has {len(layout.image_files)} entries but "
                    f"network_data_format.inputs.image.num_channels is {num_channels}; "
                    "make them agree"
                )
            folder = dataset_dir / case
            folder.mkdir(parents=True, exist_ok=True)
            for glob in layout.image_files:
                name = glob.replace("*", "")
                if not name.endswith((".nii.gz", ".nii")):
                    name += ".nii.gz"
                path = folder / name
                nib.save(nib.Nifti1Image(volume(), affine), str(path))
                written.setdefault(case, path)
        else:
            if num_channels != 1:
                raise BundleError(
                    "input_layout kind 'files' holds one image per case, but "
                    f"network_data_format.inputs.image.num_channels is {num_channels}; "
                    "use kind 'case_folders'"
                )
            name = layout.pattern.replace("*", case)
            if not fnmatch.fnmatch(name, layout.pattern):  # pragma: no cover - '*' only
                raise BundleError(f"cannot make a file name matching {layout.pattern!r}")
            path = dataset_dir / name
            nib.save(nib.Nifti1Image(volume(), affine), str(path))
            written[case] = path
    return written


# ----------------------------------------------------------------------------- checks

_Check = Callable[[_Context], tuple[CheckStatus, str]]


def _check_required_files(ctx: _Context) -> tuple[CheckStatus, str]:
    task = read_task(_metadata(ctx.bundle_dir))
    needed = required_files(task)
    missing = [f for f in needed if not (ctx.bundle_dir / f).is_file()]
    if missing:
        return (
            CheckStatus.FAIL,
            f"missing: {', '.join(missing)}; the Model Zoo layout of a {task.value} bundle "
            "needs them",
        )
    return CheckStatus.PASS, f"all {len(needed)} required files of a {task.value} bundle present"


def _check_metadata_schema(ctx: _Context) -> tuple[CheckStatus, str]:
    import jsonschema

    if not ctx.schema.is_file():
        return (
            CheckStatus.FAIL,
            f"schema {ctx.schema} not found; pass --schema with a local copy of "
            f"{SCHEMA_NAME}, or reinstall monai-tumor (it ships the schema)",
        )
    try:
        schema = json.loads(ctx.schema.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"schema {ctx.schema} is not valid JSON ({exc})") from exc
    meta = _metadata(ctx.bundle_dir)
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(meta), key=lambda e: list(e.path))
    if errors:
        shown = "; ".join(
            f"{'/'.join(str(p) for p in e.path) or '<root>'}: {e.message}" for e in errors[:5]
        )
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        return CheckStatus.FAIL, f"{len(errors)} schema error(s): {shown}{more}"
    channels = _io_format(meta)
    problems = [
        f"{role}.channel_def missing"
        for role, io in zip(("image", "pred"), channels, strict=True)
        if not isinstance(io.get("channel_def"), Mapping)
    ]
    if not meta.get("eval_metrics"):
        problems.append("eval_metrics empty")
    if problems:
        return CheckStatus.FAIL, f"valid against the schema, but {'; '.join(problems)}"
    return CheckStatus.PASS, f"valid against {ctx.schema.name}"


def _check_input_layout(ctx: _Context) -> tuple[CheckStatus, str]:
    layout = read_input_layout(_metadata(ctx.bundle_dir))
    if layout.kind is LayoutKind.CASE_FOLDERS:
        detail = f"case folders with {list(layout.image_files)}"
    elif layout.kind is LayoutKind.IMAGE_MASK_FOLDERS:
        detail = (
            f"{layout.image_folder}/{layout.pattern} with same-named masks in {layout.mask_folder}/"
        )
    else:
        detail = f"files matching {layout.pattern!r}"
    return CheckStatus.PASS, detail


def _check_no_monai_tumor(ctx: _Context) -> tuple[CheckStatus, str]:
    files = sorted((ctx.bundle_dir / "configs").glob("*"))
    files += sorted((ctx.bundle_dir / "scripts").rglob("*.py"))
    hits = [
        str(f.relative_to(ctx.bundle_dir))
        for f in files
        if f.is_file() and _MENTION.search(f.read_text(encoding="utf-8", errors="replace"))
    ]
    if hits:
        return (
            CheckStatus.FAIL,
            f"'monai_tumor' appears in {', '.join(hits)}; bundles must run with only "
            "monai, torch and nibabel: move that code into the bundle's scripts/",
        )
    return CheckStatus.PASS, f"{len(files)} config/script files free of monai_tumor"


def _missing_ids(parser: Any, ids: Iterable[str]) -> list[str]:
    return [i for i in ids if i not in parser]


def _check_label_keys(ctx: _Context) -> tuple[CheckStatus, str]:
    infer = _parser(ctx.bundle_dir, "inference.json", device=None)
    train = _parser(ctx.bundle_dir, "train.json", device=None)
    missing = [f"inference.json:{i}" for i in _missing_ids(infer, LABEL_INFERENCE_KEYS)]
    missing += [f"train.json:{i}" for i, req in LABEL_TRAIN_KEYS if req and i not in train]
    optional = [f"train.json:{i}" for i, req in LABEL_TRAIN_KEYS if not req and i not in train]
    if missing:
        return CheckStatus.FAIL, f"MONAI Label needs ids missing here: {', '.join(missing)}"
    if optional:
        return (
            CheckStatus.WARN,
            f"required ids present; optional ids missing: {', '.join(optional)}",
        )
    return CheckStatus.PASS, "all ids MONAI Label reads are present"


def _check_deploy_keys(ctx: _Context) -> tuple[CheckStatus, str]:
    infer = _parser(ctx.bundle_dir, "inference.json", device=None)
    missing = [f"inference.json:{i}" for i in _missing_ids(infer, DEPLOY_INFERENCE_KEYS)]
    if not (ctx.bundle_dir / "models" / "model.ts").is_file():
        missing.append("models/model.ts")
    if missing:
        return CheckStatus.FAIL, f"MONAI Deploy needs: {', '.join(missing)}"
    return CheckStatus.PASS, "preprocessing, postprocessing, inferer and models/model.ts present"


def _check_model_zoo_keys(ctx: _Context) -> tuple[CheckStatus, str]:
    infer = _parser(ctx.bundle_dir, "inference.json", device=None)
    train = _parser(ctx.bundle_dir, "train.json", device=None)
    infer_required, _ = workflow_ids("infer")
    train_required, _ = workflow_ids("train")
    missing = [
        f"inference.json:{i}"
        for i in _missing_ids(infer, (*infer_required, *MODEL_ZOO_INFERENCE_KEYS))
    ]
    missing += [f"train.json:{i}" for i in _missing_ids(train, train_required)]
    if missing:
        return (
            CheckStatus.FAIL,
            f"lacks ids MONAI's bundle workflows require: {', '.join(missing)}; "
            "add them as in Model Zoo bundles",
        )
    return CheckStatus.PASS, "ids of MONAI's inference and training workflow properties present"


def _channel_def_problem(pred: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    """Why ``outputs.pred.channel_def`` does not name the output, or None if it does.

    Two readings are accepted: one entry per network output channel (keys ``0..n-1``), or,
    for a bundle whose written label map carries other values than the channel indices
    (the glioma bundle: 3 sigmoid channels written as BraTS labels 1, 2, 4), one entry per
    value of that map: ``0`` and every ``monai_tumor.segments[].number``. MONAI Label takes
    its label names and values from these keys, so they must be the values it will see.
    """
    channel_def = pred.get("channel_def", {})
    if not isinstance(channel_def, Mapping):
        return None
    try:
        keys = {int(k) for k in channel_def}
    except ValueError:
        return f"outputs.pred.channel_def keys must be integers, found {sorted(channel_def)}"
    n = int(pred["num_channels"])
    if keys == set(range(n)):
        return None
    custom = meta.get("monai_tumor", {})
    segments = custom.get("segments", []) if isinstance(custom, Mapping) else []
    values = {0} | {int(s["number"]) for s in segments if isinstance(s, Mapping)}
    if segments and keys == values:
        return None
    return (
        f"outputs.pred.channel_def has keys {sorted(keys)}; expected one per output channel "
        f"(0..{n - 1}, num_channels is {n}) or one per written label value "
        f"({sorted(values)}: 0 and monai_tumor.segments numbers); make them agree"
    )


def _check_net_in_out(ctx: _Context) -> tuple[CheckStatus, str]:
    from monai.bundle import verify_net_in_out

    meta = _metadata(ctx.bundle_dir)
    image, pred = _io_format(meta)
    problem = _channel_def_problem(pred, meta)
    if problem:
        return CheckStatus.FAIL, problem
    try:
        with _quiet("monai.bundle.scripts"), bundle_scripts(ctx.bundle_dir):
            verify_net_in_out(
                net_id="network_def",
                meta_file=str(ctx.bundle_dir / "configs" / "metadata.json"),
                config_file=str(ctx.bundle_dir / "configs" / "inference.json"),
                device=ctx.device,
                any=32,
                bundle_root=str(ctx.bundle_dir),
            )
    except Exception as exc:  # monai raises ValueError/KeyError/RuntimeError from the net
        return CheckStatus.FAIL, f"verify_net_in_out failed: {exc}"
    shape = _fake_spatial_shape(image["spatial_shape"])
    return (
        CheckStatus.PASS,
        f"input (1, {image['num_channels']}, {', '.join(map(str, shape))}) {image['dtype']} -> "
        f"{pred['num_channels']} channels {pred['dtype']}",
    )


def _check_torchscript(ctx: _Context) -> tuple[CheckStatus, str]:
    import torch

    ts_path = ctx.bundle_dir / "models" / "model.ts"
    pt_path = ctx.bundle_dir / "models" / "model.pt"
    missing = [p.name for p in (ts_path, pt_path) if not p.is_file()]
    if missing:
        return CheckStatus.FAIL, f"cannot compare: models/{' and models/'.join(missing)} missing"
    meta = _metadata(ctx.bundle_dir)
    image, _ = _io_format(meta)
    extra = {"metadata.json": "", "inference.json": ""}
    try:
        ts_net = torch.jit.load(str(ts_path), map_location=ctx.device, _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError on a bad archive
        return CheckStatus.FAIL, f"torch.jit.load(models/model.ts) failed: {exc}"
    with bundle_scripts(ctx.bundle_dir):
        net = _parser(ctx.bundle_dir, device=ctx.device).get_parsed_content("network_def")
    try:
        net.load_state_dict(_load_state_dict(pt_path))
    except RuntimeError as exc:
        return CheckStatus.FAIL, f"models/model.pt does not fit network_def: {exc}"
    net.to(ctx.device).eval()
    ts_net.eval()
    shape = _fake_spatial_shape(image["spatial_shape"])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, int(image["num_channels"]), *shape), generator=gen).to(ctx.device)
    with torch.no_grad():
        ref = net(x)
        out = ts_net(x)
    if out.shape != ref.shape:
        return (
            CheckStatus.FAIL,
            f"model.ts gives shape {tuple(out.shape)}, network_def {tuple(ref.shape)}",
        )
    diff = float((out.float() - ref.float()).abs().max())
    if diff > _TS_ATOL:
        return (
            CheckStatus.FAIL,
            f"model.ts differs from network_def+model.pt by {diff:.3g} (> {_TS_ATOL}); "
            "re-export it with `python -m monai.bundle ckpt_export`",
        )
    no_extra = [k for k, v in extra.items() if not v]
    if no_extra:
        return (
            CheckStatus.FAIL,
            f"model.ts matches (max diff {diff:.1e}) but lacks extra files {no_extra} that MONAI "
            "Deploy reads; export with `python -m monai.bundle ckpt_export --meta_file ... "
            "--config_file configs/inference.json`",
        )
    return CheckStatus.PASS, f"model.ts == network_def+model.pt (max |diff| {diff:.1e})"


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence INFO logs of logger ``name`` (monai logs its input summary to stdout)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


#: Distributions a bundle may use at run time (with their own dependencies):
#: torch, monai and nibabel, plus MONAI's ``fire`` (its command line) and ``ignite``
#: (``SupervisedEvaluator``/handlers) extras. Everything else installed in the current
#: environment is made unimportable in the smoke run, so that it behaves like a bare
#: ``pip install torch "monai[fire,ignite]" nibabel`` (MONAI's optional imports then
#: report the package as missing, exactly as they would there).
BUNDLE_RUNTIME: tuple[str, ...] = ("torch", "monai", "nibabel", "fire", "pytorch-ignite")


def _runner_env() -> dict[str, str]:
    """Environment of the smoke run: one thread, and this very ``monai_tumor`` importable.

    An installed package is found by the child as it is here. A source checkout (not
    under site-packages) is put first on ``PYTHONPATH``, so the child runs this copy of
    :mod:`monai_tumor.bundle.smoke_run` rather than another installation's.
    """
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    source_root = str(Path(smoke_run.__file__).resolve().parents[2])
    site = {
        str(Path(p).resolve())
        for p in (sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))
    }
    if source_root not in site:
        entries = [source_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(entries))
    return env


def _root_cause(log: str) -> str:
    """First and last exception lines of a traceback log (the root cause comes first)."""
    errors = [ln.strip() for ln in log.splitlines() if _EXC_LINE.match(ln.strip())]
    if not errors:
        return "\n".join(log.strip().splitlines()[-6:])
    shown = list(dict.fromkeys([errors[0], errors[-1]]))
    return " ... ".join(shown)


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")


def _check_inference_smoke(ctx: _Context) -> tuple[CheckStatus, str]:
    import nibabel as nib

    if not ctx.smoke:
        return CheckStatus.WARN, "not run (smoke disabled)"
    meta = _metadata(ctx.bundle_dir)
    layout = read_input_layout(meta)
    image, _ = _io_format(meta)
    # "16*n" -> 32: a little more than the smallest network input, still fast on CPU
    shape = layout.smoke_shape or _fake_spatial_shape(image["spatial_shape"], n=2)
    with tempfile.TemporaryDirectory(prefix="bundle-verify-") as tmp:
        dataset_dir, output_dir = Path(tmp) / "in", Path(tmp) / "out"
        inputs = write_synthetic_dataset(
            layout,
            dataset_dir,
            shape=shape,
            num_channels=int(image["num_channels"]),
            value_range=image.get("value_range"),
        )
        args: dict[str, Any] = {
            "config_file": str(ctx.bundle_dir / "configs" / "inference.json"),
            "meta_file": str(ctx.bundle_dir / "configs" / "metadata.json"),
            "bundle_root": str(ctx.bundle_dir),
            "dataset_dir": str(dataset_dir),
            "output_dir": str(output_dir),
            "device": f"$torch.device('{ctx.device}')",
        }
        logging_conf = ctx.bundle_dir / "configs" / "logging.conf"
        if logging_conf.is_file():
            args["logging_file"] = str(logging_conf)
        try:
            proc = subprocess.run(
                [
                    ctx.python,
                    "-m",
                    smoke_run.__name__,
                    json.dumps(args),
                    json.dumps(BUNDLE_RUNTIME),
                ],
                cwd=tmp,
                env=_runner_env(),
                capture_output=True,
                text=True,
                timeout=ctx.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return CheckStatus.FAIL, f"inference did not finish within {ctx.timeout_s:.0f} s"
        if proc.returncode != 0:
            return CheckStatus.FAIL, f"monai.bundle run exited {proc.returncode}: " + _root_cause(
                proc.stdout + "\n" + proc.stderr
            )
        if read_task(meta) is BundleTask.CLASSIFICATION:
            return _check_predictions(meta, output_dir, inputs, shape)
        problems: list[str] = []
        for case, src in inputs.items():
            out = output_dir / f"{case}.nii.gz"
            if not out.is_file():
                found = sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*.nii*"))
                problems.append(f"{case}: expected {out.name} in output_dir, found {found[:4]}")
                continue
            ref_img: Any = nib.load(str(src))
            out_img: Any = nib.load(str(out))
            out_shape = tuple(out_img.shape[:3])
            if out_shape != tuple(ref_img.shape[:3]) or any(s != 1 for s in out_img.shape[3:]):
                problems.append(f"{case}: output shape {out_img.shape}, input {ref_img.shape}")
            elif not np.allclose(out_img.affine, ref_img.affine, atol=_GRID_ATOL_MM):
                problems.append(
                    f"{case}: output affine differs from the input grid "
                    f"(max {np.abs(out_img.affine - ref_img.affine).max():.3g} mm); use Invertd"
                )
        if problems:
            return CheckStatus.FAIL, "; ".join(problems)
    return (
        CheckStatus.PASS,
        f"{len(inputs)} synthetic case(s) {tuple(shape)} -> <case>.nii.gz on the input grid",
    )


def _check_predictions(
    meta: Mapping[str, Any], output_dir: Path, inputs: Mapping[str, Path], shape: Sequence[int]
) -> tuple[CheckStatus, str]:
    """Check the classification smoke output: one row per case, a probability in [0, 1]."""
    import csv

    output, column = _classification_output(meta)
    path = output_dir / output
    if not path.is_file():
        found = sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*"))
        return CheckStatus.FAIL, f"expected {output} in output_dir, found {found[:4]}"
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if header != ["case", column]:
        return CheckStatus.FAIL, f"{output} has columns {header}; expected ['case', '{column}']"
    cases = [r["case"] for r in rows]
    problems: list[str] = []
    if sorted(cases) != sorted(inputs):
        problems.append(f"cases {sorted(cases)}, expected one row per input {sorted(inputs)}")
    for r in rows:
        try:
            p = float(r[column])
        except ValueError:
            problems.append(f"{r['case']}: {column} {r[column]!r} is not a number")
            continue
        if not 0.0 <= p <= 1.0:
            problems.append(f"{r['case']}: {column} {p} outside [0, 1]")
    if problems:
        return CheckStatus.FAIL, f"{output}: " + "; ".join(problems)
    return (
        CheckStatus.PASS,
        f"{len(inputs)} synthetic case(s) {tuple(shape)} -> {output} with one {column} in "
        "[0, 1] per case",
    )


_CHECKS: tuple[tuple[str, _Check], ...] = (
    ("required_files", _check_required_files),
    ("metadata_schema", _check_metadata_schema),
    ("input_layout", _check_input_layout),
    ("no_monai_tumor", _check_no_monai_tumor),
    ("monai_label_keys", _check_label_keys),
    ("monai_deploy_keys", _check_deploy_keys),
    ("model_zoo_keys", _check_model_zoo_keys),
    ("net_in_out", _check_net_in_out),
    ("torchscript", _check_torchscript),
    ("inference_smoke", _check_inference_smoke),
)

#: Names of all checks, in the order they run.
CHECK_NAMES: tuple[str, ...] = tuple(name for name, _ in _CHECKS)


def verify_bundle(
    bundle_dir: str | Path,
    *,
    schema_path: str | Path | None = None,
    smoke: bool = True,
    device: str = "cpu",
    timeout_s: float = _SMOKE_TIMEOUT_S,
) -> VerifyReport:
    """Verify a bundle folder offline; every check runs even when an earlier one fails.

    Parameters
    ----------
    bundle_dir
        The bundle root (holding ``configs/``, ``models/``, ...).
    schema_path
        A local meta schema file; default :func:`default_schema` (shipped with the
        package). Never downloaded.
    smoke
        Run ``inference.json`` on a synthetic dataset (the slowest check: seconds to
        a minute on CPU). When False, ``inference_smoke`` is reported as a warning.
    device
        Torch device for the network checks and the smoke run.
    timeout_s
        Time limit of the smoke run subprocess.

    Returns
    -------
    VerifyReport
        One :class:`CheckResult` per check (see the module docstring).

    Raises
    ------
    BundleError
        If ``bundle_dir`` is not a folder.
    """
    root = Path(bundle_dir).expanduser().resolve()
    if not root.is_dir():
        raise BundleError(
            "not a folder; expected a bundle root with configs/ and models/", path=root
        )
    ctx = _Context(
        bundle_dir=root,
        schema=Path(schema_path).expanduser() if schema_path else default_schema(),
        device=device,
        smoke=smoke,
        timeout_s=timeout_s,
    )
    results: list[CheckResult] = []
    for name, check in _CHECKS:
        start = time.perf_counter()
        try:
            status, message = check(ctx)
        except BundleError as exc:
            status, message = CheckStatus.FAIL, str(exc)
        except Exception as exc:  # a broken config can raise anything from monai's parser
            status, message = CheckStatus.FAIL, f"{type(exc).__name__}: {exc}"
        results.append(CheckResult(name, status, message, time.perf_counter() - start))
    return VerifyReport(bundle_dir=root, checks=tuple(results))
