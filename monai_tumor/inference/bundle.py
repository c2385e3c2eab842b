"""Run a MONAI bundle in-process on a MetaTensor and return a label map on the source grid.

The bundle's own ``configs/inference.json`` is read with :class:`monai.bundle.ConfigParser`;
its ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing`` are instantiated
once and kept for many calls (a batch runs thousands of series). Two steps are dropped:

* ``LoadImaged`` (first step of ``preprocessing``): the image is already in memory, a
  ``MetaTensor`` from :func:`monai_tumor.ingest.reader.read_series` or
  :func:`monai_tumor.ingest.selection.load_inputs`, fed under the key the config loads;
* ``SaveImaged`` (in ``postprocessing``): nothing is written here; exporting is
  :mod:`monai_tumor.export`'s job.

Everything else runs as the bundle defines it, with the same transform objects, so
``Invertd`` undoes the bundle's spatial preprocessing from the ``applied_operations`` the
preprocessing recorded and the prediction lands on the input grid. The result is checked:
shape and affine must equal the input's (1e-3 mm), else :class:`BundleError` -- a label map
off the source grid is never returned.

Two kinds of bundle (``metadata.json`` key ``monai_tumor``, see ``docs/bundle_format.md``):

``whole_image``
    The network sees the whole (multi-channel) image, e.g. ``brats_glioma_mri``.
``voi``
    The network sees a volume of interest cut around each seed point
    (:class:`~monai_tumor.transforms.voi.CropVOIAroundPoint`), e.g. ``lung_nodule_ct``; each
    predicted mask is pasted back (:func:`~monai_tumor.transforms.voi.paste_voi_mask`) and
    the masks of all seeds are united.

Bundle ``scripts/`` packages: both bundles ship a top-level package named ``scripts`` that
their configs import by that name. While a bundle's components are instantiated, its
``bundle_root`` is first on ``sys.path`` and any previously imported ``scripts`` modules are
evicted from ``sys.modules`` (under a lock); afterwards both are restored to how they were
(:func:`monai_tumor.bundle.imports.bundle_scripts`, shared with training and ``bundle verify``).
The instantiated objects keep references to their own module code, so several bundles live
side by side in one process.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from pydicom.sr.coding import Code

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.errors import BundleError, ConfigError, MonaiTumorError, UnsupportedInputError
from monai_tumor.export.seg import SegmentSpec
from monai_tumor.geometry import patient_to_voxel, ras_to_lps
from monai_tumor.inference.device import available_cpus, native_bf16, select_device
from monai_tumor.inference.seeds import Seed
from monai_tumor.postprocess.review import TTA_AGREEMENT_KEY, ReviewSpec, read_review_spec
from monai_tumor.transforms.voi import (
    FIELDS_OF_VIEW_KEY,
    VOIGrowth,
    VOISpec,
    segment_growing_voi,
)

__all__ = [
    "BundleInfo",
    "BundleKind",
    "LoadedBundle",
    "Precision",
    "load_bundle",
    "read_bundle_info",
]

#: Custom top-level key of ``metadata.json`` holding the project's bundle description.
META_KEY = "monai_tumor"
#: Largest difference (mm) between the input affine and the inverted prediction's affine.
AFFINE_TOLERANCE_MM = 1e-3

#: Arithmetic of the network on the CPU: ``"fp32"``, or ``"bf16"`` (weights held in bfloat16,
#: the network under autocast; sliding-window accumulation and everything outside the network
#: in float32).
Precision = Literal["fp32", "bf16"]
_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

_LOAD_TARGETS = ("LoadImaged", "LoadImage")
_SAVE_TARGETS = ("SaveImaged", "SaveImage")


class BundleKind:
    """How a bundle sees its input (values of :attr:`BundleInfo.kind`)."""

    WHOLE_IMAGE = "whole_image"
    VOI = "voi"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _configs_sha256(root: Path) -> str:
    """SHA-256 over what shapes a bundle's outputs besides its weights.

    ``configs/*.json`` and ``scripts/**/*.py`` (relative path and content, in
    sorted order), so an edited config or helper redoes cached results even
    when the version was not bumped.
    """
    digest = hashlib.sha256()
    files = sorted(
        [*root.glob("configs/*.json"), *root.glob("scripts/**/*.py")],
        key=lambda p: p.relative_to(root).as_posix(),
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle is, read from its files without loading the network.

    Attributes
    ----------
    root
        The bundle folder (absolute).
    name
        Bundle id: the folder name (e.g. ``"brats_glioma_mri"``).
    version
        ``metadata.json`` ``version``.
    weights_sha256
        SHA-256 of ``models/model.pt``.
    configs_sha256
        SHA-256 over ``configs/*.json`` and ``scripts/**/*.py`` (``""`` if not
        computed), part of :meth:`cache_key`.
    kind
        ``"whole_image"`` or ``"voi"`` (``monai_tumor.voi`` present in the metadata).
    input_names
        Model inputs in channel order; each is a selection name of
        ``configs/series_selection.json`` (``("flair", "t1c")``, ``("ct",)``).
    segments
        How each label value of the output is described (DICOM SEG segments).
    selection_rules
        Path of ``configs/series_selection.json``.
    title
        ``metadata.json`` ``name`` (human-readable).
    reference_input
        The input whose grid the others are resampled onto
        (:func:`monai_tumor.ingest.selection.load_inputs` ``reference``) and on which the
        label map is returned.
    voi
        The VOI cut around each seed (``kind == "voi"`` only).
    voi_growth
        How that VOI grows while the lesion reaches its border (``monai_tumor.voi.growth``;
        ``None``: a fixed box, contact with its border is still reported as truncation).
    voi_recentre
        Largest number of times the VOI is moved to the centre of the predicted lesion and
        the lesion segmented again (``monai_tumor.voi.recentre``; 0: the box stays on the
        seed). Makes the mask independent of where inside the lesion the seed is.
    display_window
        ``(low, high)`` intensity window for pictures of the input (``monai_tumor.
        display_window`` ``{"center": c, "width": w}``), e.g. a lung window for the
        nodule bundle; ``None`` leaves the choice to the overlay (soft tissue for CT).
    review
        Thresholds of the plausibility review of each result (``monai_tumor.review``,
        :mod:`monai_tumor.postprocess.review`); ``None``: results are not reviewed.
    cpu_precision
        The arithmetic the bundle was validated with on CPUs that compute bfloat16
        natively (``monai_tumor.cpu_precision``: ``"bf16"`` when its label maps were shown
        to stay within the model card's tolerance of float32; default ``"fp32"``).
    """

    root: Path
    name: str
    version: str
    weights_sha256: str
    kind: str
    input_names: tuple[str, ...]
    segments: tuple[SegmentSpec, ...]
    selection_rules: Path
    title: str = ""
    reference_input: str = ""
    voi: VOISpec | None = None
    voi_growth: VOIGrowth | None = None
    voi_recentre: int = 0
    display_window: tuple[float, float] | None = None
    configs_sha256: str = ""
    review: ReviewSpec | None = None
    cpu_precision: Precision = "fp32"

    @property
    def weights(self) -> Path:
        """Path of the state dict ``models/model.pt``."""
        return self.root / "models" / "model.pt"

    @property
    def label_values(self) -> tuple[int, ...]:
        """Label values the output may hold besides 0 (the segment numbers)."""
        return tuple(s.number for s in self.segments)

    def cache_key(self) -> str:
        """Return a stable key for outputs of this bundle: name, version, weights and configs.

        Returns
        -------
        str
            ``"<name>-<version>-<weights SHA-256[:16]>-<configs SHA-256[:16]>"``;
            changes whenever the weights, a config or a bundle script change, even
            if the version was not bumped.
        """
        return f"{self.name}-{self.version}-{self.weights_sha256[:16]}-{self.configs_sha256[:16]}"

    def provenance(self) -> dict[str, str]:
        """Return what produced a segmentation, for run reports and DICOM SEG.

        Returns
        -------
        dict[str, str]
            ``bundle``, ``bundle_version``, ``weights_sha256``, ``configs_sha256``,
            ``monai``, ``torch``,
            ``monai_tumor`` versions. No paths, no patient data.
        """
        from monai_tumor import __version__

        return {
            "bundle": self.name,
            "bundle_version": self.version,
            "weights_sha256": self.weights_sha256,
            "configs_sha256": self.configs_sha256,
            "monai": _version("monai"),
            "torch": torch.__version__,
            "monai_tumor": __version__,
        }


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise BundleError(
            "file is missing; a bundle needs it (see docs/bundle_format.md)", path=path
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"not readable JSON: {exc}", path=path) from exc


def _code(raw: Any, where: str, path: Path) -> Code:
    if not isinstance(raw, Mapping) or not all(
        isinstance(raw.get(k), str) and raw.get(k) for k in ("scheme", "value", "meaning")
    ):
        raise BundleError(
            f"{where} must be an object with non-empty strings 'scheme', 'value', 'meaning' "
            f'(e.g. {{"scheme": "SCT", "value": "108369006", "meaning": "Neoplasm"}}), '
            f"found {raw!r}",
            path=path,
        )
    return Code(value=raw["value"], scheme_designator=raw["scheme"], meaning=raw["meaning"])


def _segments(raw: Any, path: Path) -> tuple[SegmentSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise BundleError(
            f"{META_KEY}.segments must be a non-empty list of segment objects "
            "(number, label, category, type, color_rgb), see docs/bundle_format.md; "
            f"found {raw!r}",
            path=path,
        )
    specs: list[SegmentSpec] = []
    for n, item in enumerate(raw):
        where = f"{META_KEY}.segments[{n}]"
        if not isinstance(item, Mapping):
            raise BundleError(f"{where} must be an object, found {item!r}", path=path)
        number = item.get("number")
        label = item.get("label")
        color = item.get("color_rgb", [255, 64, 64])
        if not isinstance(number, int) or isinstance(number, bool) or not 0 < number < 256:
            raise BundleError(f"{where}.number must be an int 1..255, found {number!r}", path=path)
        if not isinstance(label, str) or not 0 < len(label) <= 64:
            raise BundleError(f"{where}.label must be 1-64 characters, found {label!r}", path=path)
        if (
            not isinstance(color, list)
            or len(color) != 3
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        ):
            raise BundleError(
                f"{where}.color_rgb must be 3 ints 0..255, found {color!r}", path=path
            )
        specs.append(
            SegmentSpec(
                number=number,
                label=label,
                category=_code(item.get("category"), f"{where}.category", path),
                property_type=_code(item.get("type"), f"{where}.type", path),
                color_rgb=(color[0], color[1], color[2]),
            )
        )
    numbers = [s.number for s in specs]
    if len(set(numbers)) != len(numbers):
        raise BundleError(f"{META_KEY}.segments numbers repeat: {numbers}", path=path)
    return tuple(specs)


def _triple(raw: Any, where: str, path: Path) -> tuple[float, float, float]:
    if (
        not isinstance(raw, list)
        or len(raw) != 3
        or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in raw)
    ):
        raise BundleError(f"{where} must be 3 positive numbers (mm), found {raw!r}", path=path)
    return (float(raw[0]), float(raw[1]), float(raw[2]))


def _voi_spec(raw: Any, path: Path) -> VOISpec:
    if not isinstance(raw, Mapping):
        raise BundleError(f"{META_KEY}.voi must be an object, found {raw!r}", path=path)
    pad = raw.get("pad_value", -1000.0)
    if not isinstance(pad, (int, float)):
        raise BundleError(f"{META_KEY}.voi.pad_value must be a number, found {pad!r}", path=path)
    return VOISpec(
        size_mm=_triple(raw.get("size_mm"), f"{META_KEY}.voi.size_mm", path),
        spacing_mm=_triple(raw.get("spacing_mm"), f"{META_KEY}.voi.spacing_mm", path),
        pad_value=float(pad),
    )


def _voi_growth(raw: Any, path: Path) -> VOIGrowth | None:
    if raw is None:
        return None
    where = f"{META_KEY}.voi.growth"
    factor = raw.get("factor", 1.5) if isinstance(raw, Mapping) else None
    if not isinstance(raw, Mapping) or not isinstance(factor, (int, float)) or not factor > 1:
        raise BundleError(
            f"{where} must be an object with max_size_mm (3 numbers, mm) and factor (> 1), "
            f"found {raw!r}",
            path=path,
        )
    coarse = raw.get("coarse", False)
    if not isinstance(coarse, bool):
        raise BundleError(f"{where}.coarse must be true or false, found {coarse!r}", path=path)
    return VOIGrowth(
        max_size_mm=_triple(raw.get("max_size_mm"), f"{where}.max_size_mm", path),
        factor=float(factor),
        coarse=coarse,
    )


def _voi_recentre(raw: Any, path: Path) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 10:
        raise BundleError(
            f"{META_KEY}.voi.recentre must be an integer 0-10 (re-centring passes), found {raw!r}",
            path=path,
        )
    return raw


def read_bundle_info(path: str | Path) -> BundleInfo:
    """Read a bundle's identity and interface from its files (no network is built).

    Parameters
    ----------
    path
        The bundle folder (holding ``configs/metadata.json``, ``configs/inference.json``,
        ``configs/series_selection.json`` and ``models/model.pt``).

    Returns
    -------
    BundleInfo
        Name, version, weights hash, kind, input names, segments and rule file.

    Raises
    ------
    BundleError
        If a file is missing or the ``monai_tumor`` metadata block is invalid.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise BundleError("bundle folder not found; pass a folder like bundles/<name>", path=root)
    meta_path = root / "configs" / "metadata.json"
    meta = _read_json(meta_path)
    if not (root / "configs" / "inference.json").is_file():
        raise BundleError("configs/inference.json is missing", path=root)
    rules_path = root / "configs" / "series_selection.json"
    rules = _read_json(rules_path)
    weights = root / "models" / "model.pt"
    if not weights.is_file():
        raise BundleError("models/model.pt (the state dict) is missing", path=root)
    block = meta.get(META_KEY) if isinstance(meta, Mapping) else None
    if not isinstance(block, Mapping):
        raise BundleError(
            f"metadata has no {META_KEY!r} object; see docs/bundle_format.md", path=meta_path
        )
    selection_names = (
        [s.get("name") for s in rules.get("selections", []) if isinstance(s, Mapping)]
        if isinstance(rules, Mapping)
        else []
    )
    raw_names = block.get("input_names", selection_names)
    if (
        not isinstance(raw_names, list)
        or not raw_names
        or not all(isinstance(n, str) and n for n in raw_names)
    ):
        raise BundleError(
            f"{META_KEY}.input_names must be a non-empty list of input names, found {raw_names!r}",
            path=meta_path,
        )
    unknown = [n for n in raw_names if n not in selection_names]
    if unknown:
        raise BundleError(
            f"{META_KEY}.input_names {unknown} are not selection names of "
            f"configs/series_selection.json ({selection_names})",
            path=meta_path,
        )
    try:
        channels = int(meta["network_data_format"]["inputs"]["image"]["num_channels"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            "network_data_format.inputs.image.num_channels is missing", path=meta_path
        ) from exc
    if channels != len(raw_names):
        raise BundleError(
            f"{META_KEY}.input_names has {len(raw_names)} names but the network takes "
            f"{channels} channels",
            path=meta_path,
        )
    reference = block.get("reference_input", raw_names[0])
    if reference not in raw_names:
        raise BundleError(
            f"{META_KEY}.reference_input {reference!r} is not one of {raw_names}", path=meta_path
        )
    voi = _voi_spec(block["voi"], meta_path) if "voi" in block else None
    growth = _voi_growth(block["voi"].get("growth"), meta_path) if voi is not None else None
    recentre = _voi_recentre(block["voi"].get("recentre", 0), meta_path) if voi is not None else 0
    window = _display_window(block.get("display_window"), meta_path)
    review = read_review_spec(block["review"], path=meta_path) if "review" in block else None
    return BundleInfo(
        root=root,
        name=root.name,
        version=str(meta.get("version", "")),
        weights_sha256=_sha256(weights),
        configs_sha256=_configs_sha256(root),
        kind=BundleKind.VOI if voi is not None else BundleKind.WHOLE_IMAGE,
        input_names=tuple(raw_names),
        segments=_segments(block.get("segments"), meta_path),
        selection_rules=rules_path,
        title=str(meta.get("name", "")),
        reference_input=str(reference),
        voi=voi,
        voi_growth=growth,
        voi_recentre=recentre,
        display_window=window,
        review=review,
        cpu_precision=_cpu_precision(block.get("cpu_precision", "fp32"), meta_path),
    )


def _cpu_precision(raw: Any, path: Path) -> Precision:
    if raw == "fp32":
        return "fp32"
    if raw == "bf16":
        return "bf16"
    raise BundleError(
        f"{META_KEY}.cpu_precision must be one of {list(_PRECISIONS)}, found {raw!r}", path=path
    )


def _display_window(raw: Any, path: Path) -> tuple[float, float] | None:
    if raw is None:
        return None
    try:
        center, width = float(raw["center"]), float(raw["width"])
    except (KeyError, TypeError, ValueError):
        center, width = float("nan"), float("nan")
    if not width > 0:
        raise BundleError(
            f'{META_KEY}.display_window must be {{"center": number, "width": number > 0}}, '
            f"found {raw!r}",
            path=path,
        )
    return (center - width / 2.0, center + width / 2.0)


# --------------------------------------------------------------------------- loading


def _target_name(item: Any) -> str:
    target = item.get("_target_", "") if isinstance(item, Mapping) else ""
    return str(target).rsplit(".", 1)[-1] if isinstance(target, str) else ""


def _strip_io(config: dict[str, Any], path: Path) -> str:
    """Drop LoadImaged / SaveImaged from the raw config; return the image key."""
    try:
        pre = config["preprocessing"]["transforms"]
        post = config["postprocessing"]["transforms"]
    except (KeyError, TypeError) as exc:
        raise BundleError(
            "inference.json needs 'preprocessing' and 'postprocessing' Compose objects with "
            "a 'transforms' list (MONAI Label / Deploy ids)",
            path=path,
        ) from exc
    key = "image"
    kept = []
    for item in pre:
        if _target_name(item) in _LOAD_TARGETS:
            keys = item.get("keys", key)
            key = keys if isinstance(keys, str) else next(iter(keys))
            continue
        kept.append(item)
    config["preprocessing"]["transforms"] = kept
    config["postprocessing"]["transforms"] = [
        item for item in post if _target_name(item) not in _SAVE_TARGETS
    ]
    return str(key)


def _load_state_dict(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt or foreign file
        raise BundleError(f"cannot load the state dict: {exc}", path=path) from exc
    # CheckpointLoader(load_dict={"model": net}) accepts a bare state dict or {"model": ...}.
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise BundleError(
            f"expected a state dict (or {{'model': state_dict}}), found {type(state).__name__}",
            path=path,
        )
    return dict(state)


def load_bundle(
    path: str | Path | BundleInfo,
    *,
    device: str = "auto",
    num_threads: int | Literal["auto"] | None = "auto",
    weights: str | Path | None = None,
    precision: Literal["auto", "fp32", "bf16"] = "auto",
) -> LoadedBundle:
    """Build a bundle's network and transforms once, ready for many :meth:`~LoadedBundle.segment`.

    Parameters
    ----------
    path
        The bundle folder, or its description from :func:`read_bundle_info` (not read
        again: the weights are hashed once).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see
        :func:`~monai_tumor.inference.device.select_device`).
    num_threads
        torch intra-op threads while segmenting (restored afterwards). ``"auto"``: the
        CPUs this process may use (:func:`~monai_tumor.inference.device.available_cpus`:
        affinity mask and container quota, never more, so threads are not
        oversubscribed); ``None`` leaves torch's setting alone (a Dask worker or a server
        that shares the CPUs between several models sets it itself).
    weights
        A state dict to load instead of ``models/model.pt`` (e.g. a fine-tuned version
        kept beside the released one); ``info.weights_sha256`` (and so the cache key and
        provenance) then describes this file.
    precision
        Arithmetic of the network on the CPU. ``"auto"``: ``"bf16"`` when the bundle
        declares it (``info.cpu_precision``) and the CPU computes bfloat16 natively
        (:func:`~monai_tumor.inference.device.native_bf16`), else ``"fp32"``. ``"bf16"``
        runs a copy of the network with bfloat16 weights under ``torch.autocast`` (on a
        CPU without native bfloat16 that is slower, never wrong). GPUs always run float32
        (the bundle's own setting).

    Returns
    -------
    LoadedBundle
        The network in eval mode on ``device`` with ``models/model.pt`` (or ``weights``)
        loaded.

    Raises
    ------
    BundleError
        If files are missing, the config does not instantiate or the weights do not fit.
    ConfigError
        If the device is not available.

    Examples
    --------
    Segment a lung-nodule volume of interest, seeded at the reference nodule:

    >>> from monai_tumor.config import data_root
    >>> from monai_tumor.inference import load_bundle, seeds_from_mask
    >>> from monai_tumor.ingest import read_series
    >>> lidc = data_root() / "lidc_nodules"
    >>> voi = read_series(lidc / "image" / "LIDC-IDRI-0001_R_1.nii.gz")
    >>> ref = read_series(lidc / "nodule_mask" / "LIDC-IDRI-0001_R_1.nii.gz")[0] > 0
    >>> model = load_bundle("bundles/lung_nodule_ct", device="cpu")
    >>> mask = model.segment(voi, seeds=seeds_from_mask(ref, voi))
    >>> mask.shape == voi.shape, mask.unique().tolist()
    (True, [0, 1])
    >>> float(2 * (mask[0].bool() & ref).sum() / (mask.bool().sum() + ref.sum())) > 0.8
    True
    """
    from monai.bundle import ConfigParser

    info = path if isinstance(path, BundleInfo) else read_bundle_info(path)
    weights_path = info.weights
    if weights is not None:
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise BundleError("weights file not found", path=weights_path)
        info = dataclasses.replace(info, weights_sha256=_sha256(weights_path))
    dev = select_device(device)
    if precision not in ("auto", *_PRECISIONS):
        raise ConfigError(f"precision {precision!r} is not one of 'auto', 'fp32', 'bf16'")
    wants_bf16 = precision == "bf16" or (
        precision == "auto" and info.cpu_precision == "bf16" and native_bf16()
    )
    chosen: Precision = "bf16" if dev.type == "cpu" and wants_bf16 else "fp32"
    threads = available_cpus() if num_threads == "auto" else num_threads
    config_path = info.root / "configs" / "inference.json"
    raw = _read_json(config_path)
    if not isinstance(raw, dict):
        raise BundleError("inference.json must hold a JSON object", path=config_path)
    for required in ("network_def", "preprocessing", "inferer", "postprocessing"):
        if required not in raw:
            raise BundleError(f"inference.json has no {required!r}", path=config_path)
    image_key = _strip_io(raw, config_path)
    parser = ConfigParser()
    parser.read_meta(info.root / "configs" / "metadata.json")
    parser.update(raw)
    parser["bundle_root"] = str(info.root)
    parser["device"] = dev
    parser["ckpt_path"] = str(info.weights)
    try:
        with bundle_scripts(info.root):
            network = parser.get_parsed_content("network_def")
            preprocessing = parser.get_parsed_content("preprocessing")
            inferer = parser.get_parsed_content("inferer")
            postprocessing = parser.get_parsed_content("postprocessing")
    except MonaiTumorError:
        raise
    except Exception as exc:  # ConfigParser wraps anything the config or scripts raise
        raise BundleError(f"inference.json does not instantiate: {exc}", path=config_path) from exc
    if not isinstance(network, torch.nn.Module):
        raise BundleError(
            f"network_def is a {type(network).__name__}, not a torch module", path=config_path
        )
    try:
        network.load_state_dict(_load_state_dict(weights_path, dev), strict=True)
    except RuntimeError as exc:
        raise BundleError(
            f"the weights file does not fit network_def: {exc}", path=weights_path
        ) from exc
    network.to(dev).eval()
    return LoadedBundle(
        info=info,
        device=dev,
        network=network,
        preprocessing=preprocessing,
        inferer=inferer,
        postprocessing=postprocessing,
        image_key=image_key,
        num_threads=threads,
        precision=chosen,
    )


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(count)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Run with cuDNN autotuning off and deterministic kernels (CPU kernels already are)."""
    if device.type != "cuda":
        yield
        return
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        yield


def _affine(img: MetaTensor) -> torch.Tensor:
    return torch.as_tensor(img.affine, dtype=torch.float64).detach().cpu()


@dataclass(eq=False)
class _Bf16Copy:
    """A network's copy with bfloat16 weights, remade when asked for another network."""

    source: torch.nn.Module | None = None
    network: torch.nn.Module | None = None

    def of(self, network: torch.nn.Module) -> torch.nn.Module:
        if self.source is not network or self.network is None:
            self.network = copy.deepcopy(network).to(dtype=torch.bfloat16)
            self.source = network
        return self.network


@dataclass(eq=False)
class LoadedBundle:
    """A bundle with its network loaded, segmenting MetaTensors in-process.

    Build it with :func:`load_bundle`; keep it for the whole batch.

    Attributes
    ----------
    info
        What the bundle is (:class:`BundleInfo`).
    device
        Where the network runs.
    num_threads
        torch intra-op threads while segmenting (``None``: torch's setting).
    precision
        ``"fp32"`` or ``"bf16"`` (a copy of ``network`` with bfloat16 weights, made at the
        first call, runs under CPU autocast; ``network`` keeps the loaded weights).
    """

    info: BundleInfo
    device: torch.device
    network: torch.nn.Module = field(repr=False)
    preprocessing: Any = field(repr=False)
    inferer: Any = field(repr=False)
    postprocessing: Any = field(repr=False)
    image_key: str = "image"
    pred_key: str = "pred"
    num_threads: int | None = None
    precision: Precision = "fp32"
    # carried over by dataclasses.replace, so variants of one loaded bundle share the copy
    _bf16: _Bf16Copy = field(default_factory=_Bf16Copy, repr=False)

    def segment(self, image: MetaTensor, *, seeds: Sequence[Seed] = ()) -> MetaTensor:
        """Segment one image and return the label map on exactly its grid.

        Parameters
        ----------
        image
            Channel-first ``(C, I, J, K)`` MetaTensor with a voxel-to-RAS ``.affine``
            (from :func:`~monai_tumor.ingest.reader.read_series` or
            :func:`~monai_tumor.ingest.selection.load_inputs`); ``C`` equals
            ``len(info.input_names)``, channels in that order. Not modified.
        seeds
            ``voi`` bundles: the points (LPS mm) to cut a VOI around, at least one.
            ``whole_image`` bundles ignore them.

        Returns
        -------
        MetaTensor
            ``(1, I, J, K)`` uint8 label map (values 0 and ``info.label_values``), the
            input's affine and meta (UIDs, ``sop_instance_uids``, ``frame_numbers`` ...),
            plus meta ``"bundle"`` = :meth:`BundleInfo.provenance`; ``voi`` bundles add
            meta ``"fields_of_view"``, one
            :meth:`~monai_tumor.transforms.voi.FieldOfView.to_dict` per seed (final box,
            runs, ``truncated`` and its reason).

        Raises
        ------
        UnsupportedInputError
            If the image is not a 4D MetaTensor with ``len(info.input_names)`` channels.
        BundleError
            If a ``voi`` bundle gets no seeds, or the bundle's output is not on the input
            grid.
        ConfigError
            If a seed lies outside the image.
        """
        if not isinstance(image, MetaTensor) or image.ndim != 4:
            raise UnsupportedInputError(
                f"{self.info.name}: expected a channel-first MetaTensor (C, I, J, K), found "
                f"{type(image).__name__} with shape {tuple(getattr(image, 'shape', ()))}"
            )
        channels = len(self.info.input_names)
        if image.shape[0] != channels:
            raise UnsupportedInputError(
                f"{self.info.name}: the image has {image.shape[0]} channel(s), the bundle takes "
                f"{channels} ({', '.join(self.info.input_names)}); stack the inputs with "
                "monai_tumor.ingest.selection.load_inputs(order=info.input_names)"
            )
        fields_of_view: list[dict[str, Any]] | None = None
        with _threads(self.num_threads), _deterministic(self.device), torch.inference_mode():
            agreement: dict[str, Any] | None = None
            if self.info.kind == BundleKind.VOI:
                label, fields_of_view = self._segment_vois(image, seeds)
            else:
                label, agreement = self._run(image)
        # A tensor made under inference_mode refuses in-place changes outside it; the uint8
        # copy made here (a clone when it is uint8 already) is an ordinary tensor.
        label = label.to(torch.uint8) if label.dtype != torch.uint8 else label.clone()
        meta = {
            k: copy.deepcopy(v)
            for k, v in image.meta.items()
            if k not in {"affine", "channel_names", FIELDS_OF_VIEW_KEY}
        }
        meta["bundle"] = self.info.provenance()
        if agreement is not None:
            meta[TTA_AGREEMENT_KEY] = agreement
        if fields_of_view is not None:
            meta[FIELDS_OF_VIEW_KEY] = fields_of_view
        return MetaTensor(label, affine=_affine(image).clone(), meta=meta)

    # ----------------------------------------------------------------------- internals

    def _run(self, image: MetaTensor) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """Bundle preprocessing -> inferer -> postprocessing; (1, I, J, K) on image's grid.

        Also returns the TTA agreement the bundle's inferer recorded in its output's meta
        (``"tta_agreement"``, see :mod:`monai_tumor.postprocess.review`), or ``None``.
        """
        source = MetaTensor(
            image.as_tensor().detach().to(torch.float32).clone(),
            affine=_affine(image).clone(),
            meta={k: v for k, v in image.meta.items() if k != "affine"},
        )
        data = self.preprocessing({self.image_key: source})
        x = data[self.image_key]
        batch = x.unsqueeze(0).to(self.device)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            pred = self.inferer(batch, self._network_to_run())
        if pred.dtype != torch.float32:
            pred = pred.float()
        recorded = pred.meta.get(TTA_AGREEMENT_KEY) if isinstance(pred, MetaTensor) else None
        agreement = dict(recorded) if isinstance(recorded, Mapping) else None
        data[self.pred_key] = pred[0].detach().cpu() if self.device.type != "cpu" else pred[0]
        if isinstance(x, MetaTensor) and self.device.type != "cpu":
            data[self.image_key] = x.cpu()
        out = self.postprocessing(data)[self.pred_key]
        return self._check_grid(out, image), agreement

    def _network_to_run(self) -> torch.nn.Module:
        """``network`` itself, or for ``"bf16"`` its copy with bfloat16 weights.

        Autocast casts every weight to bfloat16 again on each call; a copy made once is
        about 10 % faster for the shipped UNets and gives the same outputs bit for bit
        (every BraTS case and every held-out nodule VOI checked). The copy is made at the
        first bfloat16 run and kept: weights changed in place after it are not seen (load
        the bundle again instead).
        """
        if self.precision != "bf16":
            return self.network
        return self._bf16.of(self.network)

    def _check_grid(self, out: Any, image: MetaTensor) -> torch.Tensor:
        shape = tuple(int(s) for s in image.shape[1:])
        found = tuple(int(s) for s in out.shape[1:]) if out.ndim == 4 else tuple(out.shape)
        if out.ndim != 4 or found != shape:
            raise BundleError(
                f"{self.info.name}: postprocessing returned shape {tuple(out.shape)}, expected "
                f"(1, {', '.join(map(str, shape))}) on the input grid; every spatial transform "
                "of preprocessing must be inverted by Invertd",
                path=self.info.root,
            )
        if isinstance(out, MetaTensor):
            diff = float((_affine(out) - _affine(image)).abs().max())
            if diff > AFFINE_TOLERANCE_MM:
                raise BundleError(
                    f"{self.info.name}: the prediction's affine differs from the input's by "
                    f"{diff:.4g} mm (tolerance {AFFINE_TOLERANCE_MM}); the label map would be "
                    "off the source grid, refusing it",
                    path=self.info.root,
                )
        if out.shape[0] != 1:
            raise BundleError(
                f"{self.info.name}: postprocessing returned {out.shape[0]} channels, expected "
                "one label map",
                path=self.info.root,
            )
        label = torch.as_tensor(out).detach().cpu()
        if label.dtype == torch.uint8:
            return label.as_subclass(torch.Tensor)  # already a label map: no whole-grid copies
        return torch.round(label.float()).to(torch.uint8)

    def _segment_vois(
        self, image: MetaTensor, seeds: Sequence[Seed]
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        if not seeds:
            raise BundleError(
                f"{self.info.name} segments a volume of interest around each seed point, but no "
                "seeds were given; pass seeds (e.g. seeds_from_csv, seeds_from_rtstruct, "
                "seeds_from_seg)",
                path=self.info.root,
            )
        spec = self.info.voi
        if spec is None:  # pragma: no cover - kind "voi" implies a spec
            raise BundleError(f"{self.info.name}: no VOI spec", path=self.info.root)
        affine_lps = ras_to_lps(_affine(image).numpy())
        shape = np.asarray(image.shape[1:], dtype=np.float64)
        union: torch.Tensor | None = None  # one full-grid uint8 mask, updated in place
        fields_of_view: list[dict[str, Any]] = []
        for seed in seeds:
            point = np.asarray(seed.point_lps, dtype=np.float64)
            ijk = patient_to_voxel(affine_lps, point)
            if not np.all(np.isfinite(ijk)) or np.any(ijk < -0.5) or np.any(ijk > shape - 0.5):
                name = f" ({seed.label})" if seed.label else ""
                raise ConfigError(
                    f"seed{name} at LPS ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm lies "
                    f"outside the image (voxel {np.round(ijk, 1).tolist()}, shape "
                    f"{[int(s) for s in shape]}); check that the seed belongs to this series and "
                    "is in DICOM LPS millimetres"
                )
            pasted, fov = segment_growing_voi(
                image,
                point,
                lambda voi: self._run(voi)[0],
                spec=spec,
                growth=self.info.voi_growth,
                recentre=self.info.voi_recentre,
            )
            mask = pasted.as_tensor().to(torch.uint8)
            union = mask if union is None else torch.maximum(union, mask, out=union)
            fields_of_view.append({"seed": seed.label, **fov.to_dict()})
        if union is None:  # pragma: no cover - seeds is not empty
            raise BundleError(f"{self.info.name}: no seed was segmented", path=self.info.root)
        return union, fields_of_view
