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
from collections.abc import Iterable, Mapping, Sequence
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
from monai_tumor.radiomics import RadiomicsSettings, lesion_features, load_radiomics_settings

__all__ = [
    "FEATURES_NAME",
    "AnalysisSpec",
    "LesionAnalysis",
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
    """

    radiomics: RadiomicsSettings | None = None
    classifier: LoadedClassifier | None = None

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return self.radiomics is None and self.classifier is None

    def annotate(
        self,
        report: dict[str, Any],
        *,
        image: MetaTensor,
        mask: MetaTensor,
        lesions: Sequence[Lesion],
    ) -> None:
        """Add ``radiomics`` and ``malignancy`` to each lesion dict of a ``lesions.json`` report."""
        entries = report["lesions"]
        if self.radiomics is not None and lesions:
            for entry, feats in zip(
                entries,
                lesion_features(image, mask, lesions, settings=self.radiomics),
                strict=True,
            ):
                entry["radiomics"] = feats.to_dict()
        if self.classifier is not None:
            info = self.classifier.info
            report["malignancy_model"] = info.provenance()
            probs = self.classifier.classify(image, mask, lesions) if lesions else []
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

    def load(self, *, device: str = "cpu") -> LesionAnalysis:
        """Load the classifier (if any) and return the runnable analysis."""
        loaded = load_classifier(self.classifier, device=device) if self.classifier else None
        return LesionAnalysis(radiomics=self.radiomics, classifier=loaded)


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
