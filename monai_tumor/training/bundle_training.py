"""Train a bundle through its own ``configs/train.json`` and export it to TorchScript.

The bundle stays self-contained (its configs never import monai_tumor); this module only
drives MONAI's bundle machinery (``ConfigWorkflow``, ``ckpt_export``) so that the CLI and
the annotation service can retrain or re-export a bundle with a few overrides.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.errors import BundleError
from monai_tumor.export.atomic import atomic_path

__all__ = [
    "export_torchscript",
    "strip_torchscript_debug_info",
    "train_bundle",
    "train_workflow",
]

#: Suffix of the per-module source-range records inside a TorchScript archive.
_DEBUG_SUFFIX = ".debug_pkl"

logger = logging.getLogger(__name__)


def _configs(bundle_dir: Path) -> Path:
    configs = bundle_dir / "configs"
    if not (configs / "train.json").is_file():
        raise BundleError(
            f"{bundle_dir}: configs/train.json not found; expected a MONAI bundle folder "
            "(configs/train.json, configs/inference.json, configs/metadata.json)"
        )
    return configs


def train_workflow(configs: Path, overrides: Mapping[str, Any]) -> Any:
    """Return MONAI's ``ConfigWorkflow`` (type ``train``) over a bundle's ``train.json``.

    Parameters
    ----------
    configs
        The bundle's ``configs`` folder (``train.json``, ``metadata.json``, optional
        ``logging.conf``).
    overrides
        Config ids and values (e.g. ``bundle_root``, ``train#dataset#data``).

    Returns
    -------
    monai.bundle.ConfigWorkflow
        Not initialised yet. Build it inside
        :func:`monai_tumor.bundle.imports.bundle_scripts` of the bundle.
    """
    from monai.bundle import ConfigWorkflow

    logging_file = configs / "logging.conf"
    return ConfigWorkflow(
        config_file=str(configs / "train.json"),
        meta_file=str(configs / "metadata.json"),
        logging_file=str(logging_file) if logging_file.is_file() else None,
        workflow_type="train",
        **dict(overrides),
    )


def train_bundle(
    bundle_dir: str | Path,
    *,
    dataset_dir: str | Path,
    output_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
) -> Path:
    """Run a bundle's ``configs/train.json`` with ``ConfigWorkflow(workflow_type="train")``.

    Parameters
    ----------
    bundle_dir
        The bundle folder (``configs/train.json``, ``configs/metadata.json``, ``scripts/``).
    dataset_dir
        Training data root, passed as the config's ``dataset_dir`` (for ``lung_nodule_ct``
        the folder holding ``lidc_nodules/``; the split file names files relative to it).
    output_dir
        Where the best weights (``model.pt``, by validation metric), the metrics CSV and the
        training curve go (config ids ``ckpt_dir`` and ``output_dir``); the full training
        state (``checkpoint_last.pt``) goes to ``output_dir / "checkpoints"``
        (``checkpoint_dir``).
    overrides
        Further config ids and values, e.g. ``{"max_epochs": 2, "limit_train": 8}``.
    resume
        Continue from the newest ``checkpoints/checkpoint*.pt`` of ``output_dir``
        (config id ``resume_training``); off by default, so a new run never picks up an
        old run's state by accident.

    Returns
    -------
    Path
        ``output_dir / "model.pt"``, the best checkpoint (a state dict).

    Raises
    ------
    BundleError
        If the bundle is malformed, training fails, or no checkpoint was written.
    """
    bundle = Path(bundle_dir).resolve()
    configs = _configs(bundle)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    override: dict[str, Any] = {
        "bundle_root": str(bundle),
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "ckpt_dir": str(out),
        "output_dir": str(out),
        "checkpoint_dir": str(out / "checkpoints"),
        "resume_training": resume,
    }
    override.update(dict(overrides or {}))
    with bundle_scripts(bundle):
        workflow = train_workflow(configs, override)
        try:
            workflow.initialize()
            missing = workflow.check_properties()
            if missing:
                logger.info(
                    "bundle %s lacks optional/required properties: %s", bundle.name, missing
                )
            workflow.run()
            workflow.finalize()
        except Exception as exc:  # the config may raise anything; report it as a bundle error
            raise BundleError(
                f"{configs / 'train.json'}: training failed ({type(exc).__name__}: {exc}); "
                "run `python -m monai.bundle run --config_file configs/train.json` in the bundle "
                "for the full traceback"
            ) from exc
    best = out / "model.pt"
    if not best.is_file():
        raise BundleError(
            f"{configs / 'train.json'}: training finished but {best} was not written; expected "
            "a CheckpointSaver with key_metric_filename='model.pt' in the validation handlers "
            "(is val_interval larger than max_epochs?)"
        )
    return best


def export_torchscript(
    bundle_dir: str | Path,
    *,
    ckpt_file: str | Path | None = None,
    filepath: str | Path | None = None,
) -> Path:
    """Export a bundle's network to TorchScript with ``monai.bundle.ckpt_export``.

    Parameters
    ----------
    bundle_dir
        The bundle folder; ``network_def`` is read from ``configs/inference.json``.
    ckpt_file
        State-dict checkpoint; default ``<bundle>/models/model.pt``.
    filepath
        Output file; default ``<bundle>/models/model.ts``.

    Returns
    -------
    Path
        The written TorchScript file (configs and metadata embedded, as Model Zoo does).

    Raises
    ------
    BundleError
        If the checkpoint or configs are missing or the export fails.
    """
    from monai.bundle import ckpt_export

    bundle = Path(bundle_dir).resolve()
    configs = bundle / "configs"
    # only inference.json and metadata.json are needed (a bundle trained elsewhere, such as
    # lung_nodule_malignancy, has no train.json)
    if not (configs / "inference.json").is_file():
        raise BundleError(
            f"{bundle}: configs/inference.json not found; expected a MONAI bundle folder"
        )
    ckpt = Path(ckpt_file) if ckpt_file is not None else bundle / "models" / "model.pt"
    target = Path(filepath) if filepath is not None else bundle / "models" / "model.ts"
    if not ckpt.is_file():
        raise BundleError(
            f"{ckpt}: checkpoint not found; train the bundle first (train_bundle) or pass ckpt_file"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with bundle_scripts(bundle):
        try:
            ckpt_export(
                net_id="network_def",
                filepath=str(target),
                ckpt_file=str(ckpt),
                meta_file=str(configs / "metadata.json"),
                config_file=str(configs / "inference.json"),
                bundle_root=str(bundle),
            )
        except Exception as exc:  # ckpt_export raises assorted errors
            raise BundleError(
                f"{ckpt}: TorchScript export failed ({type(exc).__name__}: {exc}); check that "
                "the checkpoint matches network_def in configs/inference.json"
            ) from exc
    if not target.is_file():
        raise BundleError(f"{target}: ckpt_export finished without writing the file")
    strip_torchscript_debug_info(target)
    return target


def strip_torchscript_debug_info(path: str | Path) -> int:
    """Remove the source-range records (``*.debug_pkl``) from a TorchScript archive.

    ``torch.jit.save`` stores, for every scripted module, the absolute path of the Python
    file it was scripted from (e.g. ``<venv>/lib/python3.11/site-packages/monai/...``), so
    an archive made on one machine names that machine's folders. PyTorch has no switch to
    leave them out; they serve only to point error messages of the TorchScript
    interpreter at source lines, and :func:`torch.jit.load` works without them (code,
    constants, weights and the ``extra/`` files are kept byte for byte). The file is
    rewritten atomically.

    Parameters
    ----------
    path
        A TorchScript file (``torch.jit.save`` output).

    Returns
    -------
    int
        How many records were removed (0 leaves the file untouched).

    Raises
    ------
    BundleError
        If ``path`` is not a zip archive.
    """
    source = Path(path)
    if not zipfile.is_zipfile(source):
        raise BundleError("not a TorchScript archive (not a zip file)", path=source)
    with zipfile.ZipFile(source) as archive:
        members = archive.infolist()
        dropped = [m for m in members if m.filename.endswith(_DEBUG_SUFFIX)]
        if not dropped:
            return 0
        with atomic_path(source) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as out:
            for member in members:
                if not member.filename.endswith(_DEBUG_SUFFIX):
                    out.writestr(member, archive.read(member.filename))
    logger.info("%s: removed %d TorchScript debug records", source, len(dropped))
    return len(dropped)
