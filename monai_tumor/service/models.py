"""The served models: bundles, their fine-tuned versions, and inference with bounded queueing.

A bundle is served under its folder name. Version 0 is the bundle's own ``models/model.pt``;
each fine-tuning run that finishes writes ``<state>/models/<name>/v<N>/model.pt`` beside it,
with ``version.json`` (validation metric before and after). ``active.json`` names the
version in use; the server switches only when a new version validates better, and keeps
every version.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from monai_tumor import geometry
from monai_tumor.errors import RequestError
from monai_tumor.export.atomic import atomic_write_json
from monai_tumor.inference import (
    BundleInfo,
    BundleKind,
    LoadedBundle,
    Seed,
    load_bundle,
    read_bundle_info,
)

__all__ = [
    "InferenceGate",
    "ModelVersion",
    "ServedModel",
    "image_modality",
    "label_names",
    "models_for_image",
]


def label_names(info: BundleInfo) -> dict[str, int]:
    """``{name: value}`` of a bundle's output, as MONAI Label names labels (lower case)."""
    return {s.label.lower(): int(s.number) for s in info.segments}


def image_modality(image: MetaTensor) -> str:
    """Return the image's DICOM ``Modality`` (upper case); ``""`` if it has none (NIfTI)."""
    meta = getattr(image, "meta", None) or {}
    return str(meta.get("Modality", "") or "").strip().upper()


@dataclass(frozen=True)
class ModelVersion:
    """One set of weights of a served model.

    Attributes
    ----------
    number
        0 for the bundle's own weights, then 1, 2, ... per fine-tuning run.
    weights
        The state dict.
    metric
        Validation metric the run reached (``None`` for version 0).
    baseline
        The metric of the weights it started from, on the same validation labels.
    """

    number: int
    weights: Path
    metric: float | None = None
    baseline: float | None = None
    metric_name: str = ""
    created: str = ""


class InferenceGate:
    """At most ``workers`` inferences at once; at most ``pending`` waiting, others get 503."""

    def __init__(self, *, workers: int, pending: int) -> None:
        self._slots = threading.Semaphore(max(1, workers))
        self._waiting = 0
        self._pending = max(0, pending)
        self._lock = threading.Lock()

    def __enter__(self) -> InferenceGate:
        with self._lock:
            if self._waiting >= self._pending:
                raise RequestError(
                    f"the server is busy ({self._waiting} inferences waiting); retry shortly",
                    status=503,
                )
            self._waiting += 1
        self._slots.acquire()
        with self._lock:
            self._waiting -= 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


class ServedModel:
    """One bundle as a MONAI Label model: its versions and a loaded network.

    Parameters
    ----------
    bundle
        The bundle folder.
    state_dir
        The server's state folder (``models/<name>/`` below it).
    device, num_threads
        Passed to :func:`monai_tumor.inference.load_bundle`.
    """

    def __init__(
        self, bundle: Path, state_dir: Path, *, device: str = "auto", num_threads: int | None
    ) -> None:
        self.info: BundleInfo = read_bundle_info(bundle)
        self.name = self.info.name
        self.folder = Path(state_dir) / "models" / self.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self._device = device
        self._threads = num_threads
        self._metadata: dict[str, Any] = json.loads(
            (self.info.root / "configs" / "metadata.json").read_text("utf-8")
        )
        self._lock = threading.Lock()
        self._loaded: dict[int, LoadedBundle] = {}
        self.description = self._description()

    def _description(self) -> str:
        return str(self._metadata.get("description", self.info.title))

    @property
    def modality(self) -> str:
        """The input modality the bundle declares (``"CT"``, ``"MR"``; ``""`` if none)."""
        inputs = self._metadata.get("network_data_format", {}).get("inputs", {})
        first: Any = next(iter(inputs.values()), {}) if isinstance(inputs, dict) else {}
        return str(first.get("modality", "")) if isinstance(first, dict) else ""

    @property
    def label_values(self) -> frozenset[int]:
        """The values the model writes, with 0 (background)."""
        return frozenset({0, *(int(v) for v in self.info.label_values)})

    def reads(self, image: MetaTensor) -> bool:
        """Whether ``image`` is an input of this model.

        It must have the model's channel count (``len(info.input_names)``: 1 for the CT
        nodule model, 2 for FLAIR + T1c), and, when both the image (DICOM ``Modality``)
        and the bundle (``network_data_format.inputs``) state a modality, the same one.
        """
        if int(image.shape[0]) != len(self.info.input_names):
            return False
        found, wanted = image_modality(image), self.modality.upper()
        return not found or not wanted or found == wanted

    def input_summary(self) -> str:
        """``"name (N channel(s): A, B; MODALITY)"`` for messages."""
        n = len(self.info.input_names)
        return (
            f"{self.name} ({n} channel{'s' if n != 1 else ''}: "
            f"{', '.join(self.info.input_names)}; {self.modality or 'any modality'})"
        )

    # ----------------------------------------------------------------- versions

    def versions(self) -> list[ModelVersion]:
        """Return every version, 0 first."""
        out = [ModelVersion(0, self.info.weights)]
        for folder in sorted(self.folder.glob("v[0-9]*")):
            meta_file = folder / "version.json"
            if not (folder / "model.pt").is_file() or not meta_file.is_file():
                continue
            meta = json.loads(meta_file.read_text("utf-8"))
            out.append(
                ModelVersion(
                    number=int(folder.name[1:]),
                    weights=folder / "model.pt",
                    metric=meta.get("metric"),
                    baseline=meta.get("baseline"),
                    metric_name=str(meta.get("metric_name", "")),
                    created=str(meta.get("created", "")),
                )
            )
        return out

    def active_version(self) -> ModelVersion:
        """Return the version inference uses."""
        active = self.folder / "active.json"
        number = json.loads(active.read_text("utf-8"))["version"] if active.is_file() else 0
        by_number = {v.number: v for v in self.versions()}
        return by_number.get(number, by_number[0])

    def next_version_dir(self) -> Path:
        """Create and return a new, empty ``v<N>`` folder for a fine-tuning run."""
        numbers = [v.number for v in self.versions()]
        numbers += [int(p.name[1:]) for p in self.folder.glob("v[0-9]*")]
        number = max(numbers, default=0) + 1
        while True:
            folder = self.folder / f"v{number:04d}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                number += 1

    def register(
        self, folder: Path, *, metric: float, baseline: float, metric_name: str
    ) -> tuple[ModelVersion, bool]:
        """Record a finished run's ``model.pt`` as a version; activate it if it validated better.

        Returns
        -------
        tuple[ModelVersion, bool]
            The version and whether the server switched to it.
        """
        created = time.strftime("%Y-%m-%d %H:%M:%S")
        atomic_write_json(
            folder / "version.json",
            {
                "metric": metric,
                "baseline": baseline,
                "metric_name": metric_name,
                "created": created,
            },
        )
        version = ModelVersion(
            int(folder.name[1:]), folder / "model.pt", metric, baseline, metric_name, created
        )
        switch = metric > baseline
        if switch:
            atomic_write_json(self.folder / "active.json", {"version": version.number})
        return version, switch

    # ---------------------------------------------------------------- inference

    def loaded(self, version: int | None = None) -> LoadedBundle:
        """Return the network of a version (default: the active one), loaded once.

        The two most recently used versions stay loaded, so a client comparing a new
        version with the active one does not reload weights on every request.

        Raises
        ------
        RequestError
            404 if there is no such version.
        """
        chosen = self.active_version() if version is None else self.version(version)
        with self._lock:
            loaded = self._loaded.pop(chosen.number, None)
            if loaded is None:
                weights = None if chosen.number == 0 else chosen.weights
                loaded = load_bundle(
                    self.info.root,
                    device=self._device,
                    num_threads=self._threads,
                    weights=weights,
                )
            self._loaded[chosen.number] = loaded  # most recent last
            while len(self._loaded) > 2:
                self._loaded.pop(next(iter(self._loaded)))
            return loaded

    def version(self, number: int) -> ModelVersion:
        """Return version ``number``.

        Raises
        ------
        RequestError
            404 if there is no such version.
        """
        by_number = {v.number: v for v in self.versions()}
        if number not in by_number:
            raise RequestError(
                f"model {self.name!r} has no version {number}; versions: {sorted(by_number)}",
                status=404,
            )
        return by_number[number]

    def mirror_info(self) -> dict[str, Any]:
        """Return the ``models`` entry of ``/info/`` (MONAI Label's ``InferTask.info()``)."""
        voi = self.info.kind == BundleKind.VOI
        return {
            "type": "deepgrow" if voi else "segmentation",
            "labels": label_names(self.info),
            "dimension": 3,
            "description": self.description,
            "config": {"result_extension": [".nii.gz", ".nrrd"]},
            "version": self.info.version,
            "model_version": self.active_version().number,
            "inputs": list(self.info.input_names),
            "needs_point": voi,
        }

    def seeds_from_points(self, image: MetaTensor, points: Sequence[Any]) -> list[Seed]:
        """Voxel indices ``[i, j, k]`` of ``image`` (as Slicer sends clicks) -> LPS seeds.

        Raises
        ------
        RequestError
            400 if a point is malformed or outside the image.
        """
        seeds = []
        affine_lps = geometry.ras_to_lps(np.asarray(image.affine, dtype=np.float64))
        shape = tuple(image.shape[1:])
        for point in points:
            if (
                not isinstance(point, Sequence)
                or len(point) != 3
                or not all(isinstance(v, (int, float)) for v in point)
            ):
                raise RequestError(f"foreground point {point!r} is not [i, j, k] voxel indices")
            if not all(0 <= float(v) <= n - 1 for v, n in zip(point, shape, strict=True)):
                raise RequestError(
                    f"foreground point {list(point)} lies outside the image (shape {shape})"
                )
            lps = geometry.voxel_to_patient(affine_lps, np.asarray(point, dtype=np.float64))
            seeds.append(
                Seed(
                    point_lps=(float(lps[0]), float(lps[1]), float(lps[2])),
                    label="click",
                    source="request",
                )
            )
        return seeds

    def infer(
        self, image: MetaTensor, params: Mapping[str, Any]
    ) -> tuple[MetaTensor, dict[str, Any]]:
        """Segment ``image``; return the label map and MONAI Label's result ``params``.

        Parameters
        ----------
        image
            Channel-first, RAS affine, ``len(info.input_names)`` channels.
        params
            The request's params: ``foreground`` (list of ``[i, j, k]``) for VOI models;
            ``model_version`` to use a version other than the active one.

        Raises
        ------
        RequestError
            400 if a VOI model gets no point or the image has the wrong channel count.
        """
        begin = time.perf_counter()
        if image.shape[0] != len(self.info.input_names):
            raise RequestError(
                f"model {self.name!r} takes {len(self.info.input_names)} channel(s) "
                f"({', '.join(self.info.input_names)}); the image has {image.shape[0]}. "
                "For several inputs upload one stacked 4D NIfTI (channels last)",
            )
        seeds: list[Seed] = []
        if self.info.kind == BundleKind.VOI:
            points = params.get("foreground") or []
            if not points:
                raise RequestError(
                    f"model {self.name!r} segments the lesion around a point: send at least "
                    "one 'foreground' point (voxel indices [i, j, k]); this model does no "
                    "detection on its own",
                )
            seeds = self.seeds_from_points(image, points)
        requested = params.get("model_version")
        if requested is not None and not isinstance(requested, int):
            raise RequestError(f"model_version must be an integer, found {requested!r}")
        number = self.active_version().number if requested is None else int(requested)
        loaded = self.loaded(number)
        pre = time.perf_counter()
        label = loaded.segment(image, seeds=seeds)
        done = time.perf_counter()
        names = label_names(self.info)
        result = {
            "label_names": names,
            "latencies": {
                "pre": round(pre - begin, 2),
                "infer": round(done - pre, 2),
                "invert": 0.0,
                "post": 0.0,
                "write": 0.0,
                "total": round(done - begin, 2),
                "transform": None,
            },
            "centroids": _centroids(label, names),
            "model": self.name,
            "model_version": number,
            "bundle_version": self.info.version,
        }
        return label, result


def models_for_image(
    models: Mapping[str, ServedModel],
    image: MetaTensor,
    *,
    image_id: str,
    params: Mapping[str, Any] | None = None,
) -> list[ServedModel]:
    """Return the served models a label of ``image`` is for: those that read the image.

    The image decides (:meth:`ServedModel.reads`: channel count, and DICOM ``Modality``
    when known), so a CT VOI is the nodule model's and a stacked FLAIR + T1c case the
    glioma model's even when both are served. The label's request ``params`` may narrow
    the choice: ``model`` (a served model's name) must be one that reads the image;
    ``label_info`` (what 3D Slicer sends: ``[{"name": segment name, "idx": n}, ...]``)
    keeps the models whose label names include every segment name, when any does
    (segments the user named freely do not narrow anything).

    Parameters
    ----------
    models
        The served models by name.
    image
        The datastore image, channel-first.
    image_id
        For the messages.
    params
        The save request's params.

    Returns
    -------
    list[ServedModel]
        At least one model, in ``models`` order.

    Raises
    ------
    RequestError
        400 if ``params["model"]`` names no served model; 422 if no served model reads the
        image, or the named model does not.
    """
    params = params or {}
    channels = int(image.shape[0])
    modality = image_modality(image) or "no modality"
    readers = [m for m in models.values() if m.reads(image)]
    served = "; ".join(m.input_summary() for m in models.values())
    requested = params.get("model")
    if requested is not None:
        if not isinstance(requested, str) or requested not in models:
            raise RequestError(
                f"params model {requested!r} is not a served model; served: {sorted(models)}"
            )
        if models[requested] not in readers:
            raise RequestError(
                f"image {image_id!r} ({channels} channel(s), {modality}) is not an input of "
                f"model {requested!r}: it takes {models[requested].input_summary()}; "
                "save the label on an image of that model, or leave 'model' out",
                status=422,
            )
        return [models[requested]]
    if not readers:
        raise RequestError(
            f"no served model reads image {image_id!r} ({channels} channel(s), {modality}), "
            f"so no label values are allowed for it; served: {served}",
            status=422,
        )
    names = _segment_names(params.get("label_info"))
    if names:
        named = [m for m in readers if names <= set(label_names(m.info))]
        readers = named or readers
    return readers


def _segment_names(label_info: Any) -> set[str]:
    """Lower-case segment names of Slicer's ``label_info``, background left out."""
    if not isinstance(label_info, list):
        return set()
    names = {
        str(item["name"]).strip().lower()
        for item in label_info
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    }
    return names - {"background", ""}


def _centroids(label: MetaTensor, names: Mapping[str, int]) -> dict[str, list[str]]:
    """Voxel centroid ``[i, j, k]`` (as strings, like MONAI Label) of each present label."""
    arr = label.as_tensor()[0]
    out: dict[str, list[str]] = {}
    for name, value in names.items():
        idx = torch.nonzero(arr == value)
        if len(idx):
            out[name] = [str(round(float(v))) for v in idx.float().mean(dim=0)]
    return out
