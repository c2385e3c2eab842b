"""Run a lesion classification bundle (e.g. ``lung_nodule_malignancy``) in-process.

A classification bundle takes a CT volume of interest and a lesion mask (its
``inference.json`` loads ``image`` and ``mask``) and outputs one logit per lesion. Here the
bundle's own ``preprocessing`` (without ``LoadImaged``) and ``network_def`` run on each
lesion of a segmented series: the image is first cut to a box around the lesion
(``SpatialCrop``, which keeps the affine exact) so that resampling a full CT is avoided,
then the bundle resamples and crops as it does in ``monai.bundle run``.

The bundle names itself in ``configs/metadata.json`` (``name``, ``version``) and carries a
``monai_tumor.research_notice`` sentence, shown next to every probability.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialCrop

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.errors import BundleError, MonaiTumorError
from monai_tumor.geometry import spacing_from_affine
from monai_tumor.inference.bundle import _load_state_dict, _strip_io
from monai_tumor.inference.device import select_device
from monai_tumor.postprocess.lesions import Lesion, lesion_mask

__all__ = [
    "DEFAULT_NOTICE",
    "ClassifierInfo",
    "LoadedClassifier",
    "load_classifier",
    "read_classifier_info",
]

#: Shown when a classification bundle does not state its own notice.
DEFAULT_NOTICE = "Research model, not a diagnosis."


@dataclass(frozen=True)
class ClassifierInfo:
    """Identity of a classification bundle.

    Attributes
    ----------
    root
        The bundle folder.
    name, version
        From ``configs/metadata.json``.
    weights_sha256
        SHA-256 of ``models/model.pt``.
    notice
        The research-use sentence shown with every probability.
    context_mm
        Half-width of the box cut around a lesion before the bundle's preprocessing.
    """

    root: Path
    name: str
    version: str
    weights_sha256: str
    notice: str
    context_mm: float = 30.0

    @property
    def folder_name(self) -> str:
        """The bundle folder's name (e.g. ``lung_nodule_malignancy``)."""
        return self.root.name

    def provenance(self) -> dict[str, str]:
        """JSON-ready identity written beside every probability."""
        return {
            "bundle": self.folder_name,
            "name": self.name,
            "version": self.version,
            "weights_sha256": self.weights_sha256,
            "notice": self.notice,
        }

    def cache_key(self) -> str:
        """``<folder>-<version>-<first 16 hex of the weights hash>``."""
        return f"{self.folder_name}-{self.version}-{self.weights_sha256[:16]}"


def read_classifier_info(path: str | Path) -> ClassifierInfo:
    """Read a classification bundle's identity (no network is built).

    Raises
    ------
    BundleError
        If the folder lacks ``configs/metadata.json``, ``configs/inference.json`` or
        ``models/model.pt``, or the metadata does not declare ``monai_tumor.task``
        ``"classification"``.
    """
    root = Path(path).expanduser().resolve()
    meta_path = root / "configs" / "metadata.json"
    weights = root / "models" / "model.pt"
    for required in (meta_path, root / "configs" / "inference.json", weights):
        if not required.is_file():
            raise BundleError(
                f"{required.relative_to(root)} is missing; expected a classification bundle "
                "(configs/metadata.json, configs/inference.json, models/model.pt)",
                path=root,
            )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"metadata.json is not readable JSON ({exc})", path=meta_path) from exc
    block = meta.get("monai_tumor") or {}
    if block.get("task") != "classification":
        raise BundleError(
            "metadata.json monai_tumor.task is not 'classification': this bundle is not a "
            "lesion classifier (pass e.g. bundles/lung_nodule_malignancy)",
            path=meta_path,
        )
    return ClassifierInfo(
        root=root,
        name=str(meta.get("name", root.name)),
        version=str(meta.get("version", "0")),
        weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
        notice=str(block.get("research_notice") or DEFAULT_NOTICE),
        context_mm=float(block.get("context_mm", 30.0)),
    )


@dataclass(eq=False)
class LoadedClassifier:
    """A classification bundle with its network loaded; see :func:`load_classifier`."""

    info: ClassifierInfo
    device: torch.device
    network: torch.nn.Module = field(repr=False)
    preprocessing: Any = field(repr=False)

    def classify(
        self, image: MetaTensor, mask: MetaTensor, lesions: Sequence[Lesion]
    ) -> list[float]:
        """Probability (sigmoid of the bundle's logit) for every lesion, in order.

        Parameters
        ----------
        image
            ``(1, I, J, K)`` CT in HU with its RAS affine.
        mask
            ``(1, I, J, K)`` label map the lesions were measured on (same grid).
        lesions
            From :func:`monai_tumor.postprocess.lesions.measure_lesions`.
        """
        spacing = spacing_from_affine(np.asarray(image.affine, dtype=np.float64))
        margin = [max(1, round(self.info.context_mm / float(s))) for s in spacing]
        out = []
        for lesion in lesions:
            # uint8 view of the whole-grid mask; only the crop becomes float32
            component = torch.from_numpy(lesion_mask(mask, lesion).view(np.uint8))[None]
            # the image's meta without its "affine" entry: MetaTensor warns when both are given
            meta = {k: v for k, v in image.meta.items() if k != "affine"}
            lesion_mt = MetaTensor(component, affine=image.affine, meta=meta)
            lo, hi = lesion.bbox_voxel
            crop = SpatialCrop(
                roi_start=[max(0, v - m) for v, m in zip(lo, margin, strict=True)],
                roi_end=[v + m + 1 for v, m in zip(hi, margin, strict=True)],
            )
            item = {"image": crop(image), "mask": crop(lesion_mt).to(torch.float32)}
            try:
                with bundle_scripts(self.info.root), torch.no_grad():
                    batch = self.preprocessing(item)["image"]
                    logit = self.network(torch.as_tensor(batch)[None].to(self.device))
            except MonaiTumorError:
                raise
            except Exception as exc:  # the bundle's transforms and network raise many kinds
                raise BundleError(
                    f"classifying lesion {lesion.index} failed: {exc}", path=self.info.root
                ) from exc
            out.append(float(torch.sigmoid(logit.reshape(-1)[0]).item()))
        return out


def load_classifier(path: str | Path, *, device: str = "cpu") -> LoadedClassifier:
    """Build a classification bundle's preprocessing and network once.

    Raises
    ------
    BundleError
        If the bundle is not a classifier, its config does not instantiate or the weights
        do not fit.
    """
    from monai.bundle import ConfigParser

    info = read_classifier_info(path)
    dev = select_device(device)
    config_path = info.root / "configs" / "inference.json"
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    _strip_io(raw, config_path)
    parser = ConfigParser()
    parser.read_meta(info.root / "configs" / "metadata.json")
    parser.update(raw)
    parser["bundle_root"] = str(info.root)
    parser["device"] = dev
    try:
        with bundle_scripts(info.root):
            network = parser.get_parsed_content("network_def")
            preprocessing = parser.get_parsed_content("preprocessing")
    except Exception as exc:  # ConfigParser wraps anything the config or scripts raise
        raise BundleError(f"inference.json does not instantiate: {exc}", path=config_path) from exc
    if not isinstance(network, torch.nn.Module):
        raise BundleError("network_def is not a torch module", path=config_path)
    try:
        network.load_state_dict(_load_state_dict(info.root / "models" / "model.pt", dev))
    except RuntimeError as exc:
        raise BundleError(
            f"models/model.pt does not fit network_def: {exc}", path=info.root
        ) from exc
    network.to(dev).eval()
    return LoadedClassifier(info=info, device=dev, network=network, preprocessing=preprocessing)
