"""What comes after segmentation: radiomics features and a classification per lesion.

:class:`AnalysisSpec` is built once per run from the segmentation bundle
(:func:`analysis_spec_for`): radiomics settings from its ``configs/radiomics.json``
(unless ``--no-features``), and a classification bundle named in its metadata
(``monai_tumor.classifier``, a path relative to the bundle folder) or given with
``--classifier``; :meth:`AnalysisSpec.load` gives the :class:`LesionAnalysis` whose
:meth:`~LesionAnalysis.annotate` adds to every lesion of ``lesions.json``

- ``radiomics``: ``{"settings": {...}, "features": {"morph_volume": ..., ...}}``
- ``malignancy``: ``{"probability": p, "model": {...name, version, weights...}, "notice": ...}``

and :func:`write_features_table` gathers them into the run's ``features.csv`` (one row per
lesion, one column per feature).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.data import MetaTensor

from monai_tumor.errors import BundleError
from monai_tumor.export.atomic import atomic_path
from monai_tumor.inference.classifier import (
    LoadedClassifier,
    load_classifier,
    read_classifier_info,
)
from monai_tumor.postprocess.lesions import Lesion
from monai_tumor.radiomics.features import LesionFeatures, lesion_features
from monai_tumor.radiomics.pool import FeaturePool
from monai_tumor.radiomics.settings import RadiomicsSettings, load_radiomics_settings

__all__ = [
    "FEATURES_NAME",
    "AnalysisSpec",
    "LesionAnalysis",
    "PendingAnalysis",
    "analysis_spec_for",
    "malignancy_model_name",
    "malignancy_probabilities",
    "write_features_table",
]

_log = logging.getLogger(__name__)

#: The run's flat feature table.
FEATURES_NAME = "features.csv"


@dataclass(frozen=True, eq=False)
class LesionAnalysis:
    """Per-lesion steps after segmentation, ready to run (see :meth:`AnalysisSpec.load`).

    Attributes
    ----------
    radiomics
        IBSI feature settings, or ``None`` for no features.
    classifier
        A loaded classification bundle, or ``None``.
    pool
        Feature worker processes (owned by the caller), or ``None``: MIRP runs in this
        process. With a pool, :meth:`start` returns at once and the features are computed
        while the caller writes its other outputs.
    """

    radiomics: RadiomicsSettings | None = None
    classifier: LoadedClassifier | None = None
    pool: FeaturePool | None = None

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return self.radiomics is None and self.classifier is None

    def start(
        self, *, image: MetaTensor, mask: MetaTensor, lesions: Sequence[Lesion]
    ) -> PendingAnalysis:
        """Begin the analysis of one series' lesions; :meth:`PendingAnalysis.apply` ends it.

        Without a pool the features are computed here, before returning. With one, a
        thread hands the lesions to the pool and this returns at once; ``image`` and
        ``mask`` must not change until :meth:`PendingAnalysis.apply` returns.
        """
        features: Future[list[LesionFeatures]] | None = None
        if self.radiomics is not None and lesions:
            features = Future()
            if self.pool is None:
                _settle(features, image, mask, lesions, self.radiomics, None)
            else:
                threading.Thread(
                    target=_settle,
                    args=(features, image, mask, lesions, self.radiomics, self.pool),
                    name="radiomics",
                    daemon=True,
                ).start()
        return PendingAnalysis(self, features, image=image, mask=mask, lesions=lesions)

    def annotate(
        self,
        report: dict[str, Any],
        *,
        image: MetaTensor,
        mask: MetaTensor,
        lesions: Sequence[Lesion],
    ) -> None:
        """Add ``radiomics`` and ``malignancy`` to each lesion dict of a ``lesions.json`` report."""
        self.start(image=image, mask=mask, lesions=lesions).apply(report)


def _settle(
    future: Future[list[LesionFeatures]],
    image: MetaTensor,
    mask: MetaTensor,
    lesions: Sequence[Lesion],
    settings: RadiomicsSettings,
    pool: FeaturePool | None,
) -> None:
    try:
        future.set_result(lesion_features(image, mask, lesions, settings=settings, pool=pool))
    except BaseException as exc:  # re-raised by PendingAnalysis.apply in the caller's thread
        future.set_exception(exc)


class PendingAnalysis:
    """An analysis begun by :meth:`LesionAnalysis.start`; :meth:`apply` waits for it."""

    def __init__(
        self,
        analysis: LesionAnalysis,
        features: Future[list[LesionFeatures]] | None,
        *,
        image: MetaTensor,
        mask: MetaTensor,
        lesions: Sequence[Lesion],
    ) -> None:
        self._analysis = analysis
        self._features = features
        self._image, self._mask, self._lesions = image, mask, lesions

    def apply(self, report: dict[str, Any]) -> None:
        """Wait for the features, classify, and add both to the report's lesion dicts.

        Raises
        ------
        RadiomicsError
            MIRP failed on a lesion (raised where it failed, re-raised here).
        """
        entries = report["lesions"]
        if self._features is not None:
            for entry, feats in zip(entries, self._features.result(), strict=True):
                entry["radiomics"] = feats.to_dict()
        classifier = self._analysis.classifier
        if classifier is not None:
            info = classifier.info
            report["malignancy_model"] = info.provenance()
            lesions = self._lesions
            probs = classifier.classify(self._image, self._mask, lesions) if lesions else []
            for entry, p in zip(entries, probs, strict=True):
                entry["malignancy_probability"] = round(p, 4)
                entry["malignancy"] = {
                    "probability": round(p, 4),
                    "model": f"{info.folder_name} {info.version}",
                    "notice": info.notice,
                }


@dataclass(frozen=True)
class AnalysisSpec:
    """What to compute per lesion (picklable: it travels to batch runners).

    Attributes
    ----------
    radiomics
        IBSI feature settings, or ``None``.
    classifier
        Folder of a classification bundle, or ``None``.
    classifier_key
        The classifier's cache key (folder, version, weights hash).
    """

    radiomics: RadiomicsSettings | None = None
    classifier: Path | None = None
    classifier_key: str = ""

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return self.radiomics is None and self.classifier is None

    def cache_token(self) -> str:
        """Return a string that changes whenever the analysis would change the outputs."""
        parts = []
        if self.radiomics is not None:
            parts.append("radiomics:" + json.dumps(self.radiomics.to_dict(), sort_keys=True))
        if self.classifier is not None:
            parts.append("classifier:" + self.classifier_key)
        return "|".join(parts)

    def load(self, *, device: str = "cpu", pool: FeaturePool | None = None) -> LesionAnalysis:
        """Load the classifier (if any) and return the runnable analysis.

        Parameters
        ----------
        device
            Where the classifier runs.
        pool
            Feature worker processes to use (see :class:`LesionAnalysis`); ``None``: none.
        """
        loaded = load_classifier(self.classifier, device=device) if self.classifier else None
        return LesionAnalysis(
            radiomics=self.radiomics,
            classifier=loaded,
            pool=pool if self.radiomics is not None else None,
        )


def analysis_spec_for(
    bundle_root: str | Path,
    *,
    features: bool = True,
    classifier: str | Path | None = None,
) -> AnalysisSpec:
    """Build the analysis a segmentation bundle asks for (nothing is loaded yet).

    Parameters
    ----------
    bundle_root
        The segmentation bundle folder.
    features
        Compute radiomics features when the bundle has ``configs/radiomics.json``
        (``--no-features`` turns them off).
    classifier
        A classification bundle folder; default: ``monai_tumor.classifier`` of the
        bundle's metadata (relative to the bundle folder), if any.

    Raises
    ------
    BundleError
        The classifier is not a classification bundle, or the metadata is unreadable.
    ConfigError
        ``configs/radiomics.json`` is invalid.
    """
    root = Path(bundle_root)
    settings = load_radiomics_settings(root) if features else None
    meta_path = root / "configs" / "metadata.json"
    if classifier is None and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"metadata.json is not readable ({exc})", path=meta_path) from exc
        named = (meta.get("monai_tumor") or {}).get("classifier")
        if named:
            classifier = (root / str(named)).resolve()
    if classifier is None:
        return AnalysisSpec(radiomics=settings)
    info = read_classifier_info(classifier)
    return AnalysisSpec(radiomics=settings, classifier=info.root, classifier_key=info.cache_key())


def malignancy_probabilities(manifest: Mapping[str, Any]) -> tuple[float, ...] | None:
    """Per-lesion probabilities a series' manifest records (``None`` without a classifier)."""
    if not manifest.get("malignancy_model"):
        return None
    return tuple(float(p) for p in manifest.get("malignancy_probabilities") or ())


def malignancy_model_name(manifest: Mapping[str, Any]) -> str | None:
    """``"<bundle folder> <version>"`` of the classifier a series' manifest records."""
    model = manifest.get("malignancy_model")
    if not isinstance(model, Mapping):
        return None
    return f"{model.get('bundle')} {model.get('version')}"


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


def write_features_table(out_dir: str | Path, folders: Iterable[str]) -> Path | None:
    """Gather ``lesions.json`` of the given series folders into ``OUT/features.csv``.

    One row per lesion: ``folder``, ``lesion``, ``volume_ml``, ``malignancy_probability`` and
    one column per radiomics feature (the union over all lesions; empty where a lesion
    lacks it). Returns ``None`` (and writes nothing) when no lesion has features or a
    probability.
    """
    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    seen: set[str] = set()
    for folder in folders:
        path = out / folder / "lesions.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text(encoding="utf-8"))
        for les in report.get("lesions", []):
            feats = (les.get("radiomics") or {}).get("features") or {}
            if not feats and "malignancy_probability" not in les:
                continue
            for name in feats:
                if name not in seen:
                    seen.add(name)
                    columns.append(name)
            rows.append(
                {
                    "folder": folder,
                    "lesion": les.get("index"),
                    "volume_ml": les.get("volume_ml"),
                    "malignancy_probability": les.get("malignancy_probability"),
                    **feats,
                }
            )
    if not rows:
        return None
    header = ["folder", "lesion", "volume_ml", "malignancy_probability", *columns]
    target = out / FEATURES_NAME
    with atomic_path(target) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in header])
    _log.info("%s: %d lesion(s), %d feature column(s)", target.name, len(rows), len(columns))
    return target
