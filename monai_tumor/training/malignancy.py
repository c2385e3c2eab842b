"""Train and evaluate the nodule malignancy bundle (``bundles/lung_nodule_malignancy``).

Labels come from the LIDC ``MetadatabyNoduleMaxVoting.xlsx`` (``Diagnosis`` Malign/Benign per
nodule; the VOI ``LIDC-IDRI-NNNN_R_K`` is nodule ``K`` of patient ``LIDC-IDRI-NNNN``). The
split is the project's patient-level split (``data/datasets/lidc_nodules_split.json``, fold
0): the held-out patients are used only for the final report; every model choice is made by
cross-validation over the training patients (patient-grouped folds).

The VOIs are preprocessed once with the bundle's own ``preprocessing`` (so training sees
exactly what inference sees) and kept in memory (794 x 2 x 32 x 32 x 16 float32, 100 MB).
Training runs on CPU with one thread; every epoch is checkpointed and a rerun resumes.

Run: ``python -m monai_tumor.training.malignancy --out DIR`` (see ``main``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from monai_tumor.bundle.imports import bundle_scripts
from monai_tumor.errors import MonaiTumorError

__all__ = [
    "EXPERIMENTS",
    "READER_ATTRIBUTES",
    "MalignancyData",
    "RatingRegression",
    "TrainOptions",
    "binary_metrics",
    "l1_selected_logistic",
    "load_labels",
    "load_malignancy_data",
    "load_reader_attributes",
    "patient_folds",
    "predict",
    "run_experiment",
    "train_model",
    "write_bundle_datalist",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: The readers' per-nodule ratings in ``MetadatabyNoduleMaxVoting.xlsx`` other than malignancy
#: (max voting). Not available at inference: used only to measure how far the labels can be
#: predicted at all (the ``reader-ceiling`` experiment).
READER_ATTRIBUTES = (
    "Calcification_value",
    "InternalStructure_value",
    "Lobulation_value",
    "Margin_value",
    "Sphericity_value",
    "Spiculation_value",
    "Subtlety_value",
    "Texture_value",
)

#: Variants tried against the released feature model, each with a rule fixed before its run
#: (card of ``bundles/lung_nodule_malignancy``): ``python -m monai_tumor.training.malignancy
#: --out DIR --experiment NAME``.
EXPERIMENTS = ("rating-target", "splines", "l1-selection", "reader-ceiling")

#: Seed of the patient-grouped cross-validation folds over the training patients.
FOLD_SEED = 20240725


@dataclass(frozen=True)
class MalignancyData:
    """Preprocessed nodules: ``x`` (N, 2, X, Y, Z) float32, labels, patients, cases, split."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    rating: npt.NDArray[np.int64]
    cases: tuple[str, ...]
    patients: tuple[str, ...]
    held_out: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TrainOptions:
    """Training recipe (fixed in advance; nothing is tuned on the held-out patients)."""

    mode: str = "both"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def _label_sheet(xlsx: str | Path, columns: Sequence[str]) -> Any:
    """Read the LIDC metadata sheet, indexed by VOI name (``LIDC-IDRI-NNNN_R_K``).

    Raises
    ------
    MonaiTumorError
        If ``patient_id``, ``nodule_id`` or one of ``columns`` is missing.
    """
    import pandas as pd

    df = pd.read_excel(xlsx)
    required = ("patient_id", "nodule_id", *columns)
    missing = set(required) - set(df.columns)
    if missing:
        raise MonaiTumorError(
            f"{xlsx}: columns {sorted(missing)} missing; expected the LIDC "
            f"MetadatabyNoduleMaxVoting sheet ({', '.join(required)})"
        )
    df.index = [f"{p}_R_{int(n)}" for p, n in zip(df["patient_id"], df["nodule_id"], strict=True)]
    return df


def load_labels(xlsx: str | Path) -> dict[str, tuple[int, int]]:
    """Return ``case -> (malignant 0/1, malignancy rating 1-5)`` from the LIDC metadata sheet."""
    df = _label_sheet(xlsx, ("Diagnosis", "Malignancy_value"))
    out: dict[str, tuple[int, int]] = {}
    for case, raw_diagnosis, rating in zip(
        df.index, df["Diagnosis"], df["Malignancy_value"], strict=True
    ):
        diagnosis = str(raw_diagnosis).strip().lower()
        if diagnosis not in {"malign", "benign"}:
            raise MonaiTumorError(
                f"{xlsx}: nodule {case} has Diagnosis {raw_diagnosis!r}; expected Malign or Benign"
            )
        out[case] = (int(diagnosis == "malign"), int(rating))
    return out


def load_reader_attributes(xlsx: str | Path, cases: Sequence[str]) -> FloatArray:
    """Return the readers' ratings :data:`READER_ATTRIBUTES` of ``cases``, shape ``(N, 8)``.

    Raises
    ------
    MonaiTumorError
        If the sheet lacks a column, or a case (``LIDC-IDRI-NNNN_R_K``) has no row.
    """
    df = _label_sheet(xlsx, READER_ATTRIBUTES)
    absent = [c for c in cases if c not in df.index]
    if absent:
        raise MonaiTumorError(f"{xlsx}: no ratings for {len(absent)} nodules, e.g. {absent[0]}")
    return np.asarray(df.loc[list(cases), list(READER_ATTRIBUTES)], dtype=np.float64)


def load_malignancy_data(
    bundle_dir: str | Path, *, data_root: str | Path, split_file: str | Path, cache: Path | None
) -> MalignancyData:
    """Preprocess every labelled VOI of the split with the bundle's own preprocessing."""
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    data_root = Path(data_root)
    split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    held = set(split["folds"][0]["validation"])
    labels = load_labels(data_root / "lidc_nodules" / "MetadatabyNoduleMaxVoting.xlsx")
    cases = [c for c in split["cases"] if c["case"] in labels]
    if cache is not None and cache.is_file():
        z = np.load(cache)
        x = z["x"]
    else:
        parser = ConfigParser()
        parser.read_config(bundle_dir / "configs" / "inference.json")
        parser["bundle_root"] = str(bundle_dir)
        with bundle_scripts(bundle_dir):
            pre = parser.get_parsed_content("preprocessing")
            arrays = []
            for c in cases:
                item = {"image": str(data_root / c["image"]), "mask": str(data_root / c["label"])}
                arrays.append(np.asarray(pre(item)["image"], dtype=np.float32))
        x = np.stack(arrays)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, x=x)
            os.replace(tmp, cache)
    return MalignancyData(
        x=x,
        y=np.array([labels[c["case"]][0] for c in cases], dtype=np.int64),
        rating=np.array([labels[c["case"]][1] for c in cases], dtype=np.int64),
        cases=tuple(c["case"] for c in cases),
        patients=tuple(c["patient"] for c in cases),
        held_out=np.array([c["case"] in held for c in cases], dtype=bool),
    )


def patient_folds(
    patients: Sequence[str], *, n_folds: int, seed: int
) -> list[npt.NDArray[np.int64]]:
    """Split indices into ``n_folds`` groups with no patient in two groups (shuffled patients)."""
    unique = sorted(set(patients))
    rng = np.random.default_rng(seed)
    rng.shuffle(unique)
    fold_of = {p: i % n_folds for i, p in enumerate(unique)}
    return [
        np.array([i for i, p in enumerate(patients) if fold_of[p] == k], dtype=np.int64)
        for k in range(n_folds)
    ]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    for axis in (2, 3, 4):
        if torch.rand(1, generator=gen).item() < 0.5:
            x = x.flip(axis)
    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.transpose(2, 3)
    return x


def _new_model(bundle_dir: Path, mode: str) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(bundle_dir / "configs" / "inference.json")
    parser["bundle_root"] = str(bundle_dir)
    parser["network_def#mode"] = mode
    with bundle_scripts(bundle_dir):
        model: torch.nn.Module = parser.get_parsed_content("network_def")
    return model


def train_model(
    bundle_dir: str | Path,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    options: TrainOptions,
    checkpoint: Path,
) -> torch.nn.Module:
    """Train one network on ``x``/``y``; resumes from ``checkpoint`` (written every epoch)."""
    bundle_dir = Path(bundle_dir)
    torch.manual_seed(options.seed)
    model = _new_model(bundle_dir, options.mode)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.float32)).view(-1, 1)
    with torch.no_grad():
        feats = model.features(xt)  # type: ignore[operator]
        raw = feats * model.feature_std + model.feature_mean
        model.feature_mean.copy_(raw.mean(0))  # type: ignore[operator]
        model.feature_std.copy_(raw.std(0).clamp_min(1e-3))  # type: ignore[operator]
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    steps = math.ceil(len(x) / options.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=options.lr, total_steps=options.epochs * steps, pct_start=0.1
    )
    gen = torch.Generator().manual_seed(options.seed)
    start = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start = int(state["epoch"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(start, options.epochs):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(steps):
            idx = order[s * options.batch_size : (s + 1) * options.batch_size]
            xb = _augment(xt[idx], gen)
            loss = loss_fn(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        logger.info(
            "%s epoch %d/%d loss %.4f (%.0f s)",
            checkpoint.name,
            epoch + 1,
            options.epochs,
            total / len(x),
            time.perf_counter() - t0,
        )
        tmp = checkpoint.with_suffix(".tmp")
        state = {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "gen": gen.get_state(),
            "epoch": epoch + 1,
        }
        torch.save(state, tmp)
        os.replace(tmp, checkpoint)
    model.eval()
    return model


def predict(model: torch.nn.Module, x: npt.NDArray[np.float32]) -> FloatArray:
    """Malignancy probabilities for preprocessed nodules ``x``."""
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), 64):
            out.append(torch.sigmoid(model(torch.from_numpy(x[s : s + 64]))).view(-1).numpy())
    return np.concatenate(out).astype(np.float64)


def binary_metrics(
    y: npt.NDArray[np.int64],
    p: FloatArray,
    patients: Sequence[str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC with a patient-level bootstrap 95 % interval, sensitivity at 90 % specificity, Brier.

    The bootstrap resamples patients with replacement (all nodules of a drawn patient come
    along), so the interval respects that nodules of one patient are not independent.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

    auc = float(roc_auc_score(y, p))
    fpr, tpr, _ = roc_curve(y, p)
    sens90 = float(tpr[fpr <= 0.10].max())
    by_patient: dict[str, list[int]] = {}
    for i, pt in enumerate(patients):
        by_patient.setdefault(pt, []).append(i)
    groups = list(by_patient.values())
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(groups), len(groups))
        idx = np.concatenate([groups[k] for k in pick])
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(roc_auc_score(y[idx], p[idx]))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return {
        "n": len(y),
        "n_malignant": int(y.sum()),
        "n_patients": len(groups),
        "auc": round(auc, 4),
        "auc_ci95": [round(float(lo), 4), round(float(hi), 4)],
        "sensitivity_at_90_specificity": round(sens90, 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
    }


def raw_features(bundle_dir: str | Path, x: npt.NDArray[np.float32]) -> FloatArray:
    """Compute the bundle network's (unstandardised) mask features of preprocessed nodules."""
    model = _new_model(Path(bundle_dir), "features")
    out = []
    with torch.no_grad():
        for s in range(0, len(x), 64):
            f = model.features(torch.from_numpy(x[s : s + 64]))  # type: ignore[operator]
            out.append(f.numpy())
    return np.concatenate(out).astype(np.float64)


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


class RatingRegression:
    """A linear model of the readers' malignancy rating, read as a malignancy probability.

    A ridge regression of the max-voting rating (1-5) on the standardised features ranks the
    nodules; a logistic fit of the binary label on that score (Platt scaling, on the same
    training nodules) makes it a probability. Score and scaling are both linear, so the model
    fits the bundle's linear head like the logistic feature model. A cross-validated variant
    tried against that model (card of ``bundles/lung_nodule_malignancy``; not shipped).

    Parameters
    ----------
    alpha
        Ridge penalty.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha
        self._ridge: Any = None
        self._platt: Any = None

    def fit(
        self, features: FloatArray, malignant: npt.NDArray[np.int64], rating: npt.NDArray[Any]
    ) -> RatingRegression:
        """Fit the rating regression and the probability scaling on the same nodules.

        Raises
        ------
        MonaiTumorError
            If the arrays disagree in length or the labels are all one class.
        """
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if not len(features) == len(malignant) == len(rating):
            raise MonaiTumorError(
                f"{len(features)} feature rows, {len(malignant)} labels and {len(rating)} "
                "ratings: one of each per nodule is needed"
            )
        if len(np.unique(malignant)) != 2:
            raise MonaiTumorError("the labels hold one class only; cannot scale scores")
        self._ridge = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha))
        self._ridge.fit(features, np.asarray(rating, dtype=np.float64))
        score = self._ridge.predict(features)[:, None]
        self._platt = LogisticRegression(C=1e6, max_iter=2000).fit(score, malignant)
        return self

    def predict_proba(self, features: FloatArray) -> FloatArray:
        """Probability of malignancy per row of ``features``, shape ``(N,)``."""
        if self._ridge is None or self._platt is None:
            raise MonaiTumorError("RatingRegression.predict_proba before fit")
        score = self._ridge.predict(features)[:, None]
        return np.asarray(self._platt.predict_proba(score)[:, 1], dtype=np.float64)


def l1_selected_logistic(
    features: FloatArray,
    malignant: IntArray,
    patients: Sequence[str],
    *,
    seed: int = FOLD_SEED + 1,
) -> Any:
    """Fit an L1-penalised logistic model whose penalty is chosen by inner cross-validation.

    The features are standardised; the penalty ``C`` (20 values, 1e-3 to 1e2) is chosen by the
    log loss over three patient-grouped folds of the fitting nodules, so the model selects its
    features itself and an outer cross-validation measures the whole procedure (nested),
    not a subset picked by looking at the outer folds.

    Returns
    -------
    A fitted scikit-learn pipeline (``predict_proba``; its last step holds ``coef_``).
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inner = patient_folds(patients, n_folds=3, seed=seed)
    splits = [(np.setdiff1d(np.arange(len(malignant)), val), val) for val in inner]
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=np.logspace(-3, 2, 20),
            l1_ratios=(1.0,),
            solver="liblinear",
            scoring="neg_log_loss",
            cv=splits,
            max_iter=5000,
            random_state=0,
            use_legacy_attributes=False,
        ),
    )
    return model.fit(features, malignant)


def _spline_logistic() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import SplineTransformer, StandardScaler

    return make_pipeline(
        SplineTransformer(n_knots=4, degree=3, knots="quantile"),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=5000),
    )


def run_experiment(
    name: str,
    *,
    features: FloatArray,
    malignant: IntArray,
    rating: IntArray,
    patients: Sequence[str],
    held_out: npt.NDArray[np.bool_],
    n_folds: int = 3,
    attributes: FloatArray | None = None,
    n_boot: int = 2000,
) -> dict[str, dict[str, Any]]:
    """Cross-validate a variant of the feature model, then score it once on the held-out rows.

    Every fit sees training rows only: the cross-validation uses patient-grouped folds of the
    training patients (seed :data:`FOLD_SEED`, the card's folds), and the held-out score comes
    from one fit on all training rows.

    Parameters
    ----------
    name
        One of :data:`EXPERIMENTS`: ``rating-target`` (:class:`RatingRegression`), ``splines``
        (cubic splines of each feature, then logistic regression), ``l1-selection``
        (:func:`l1_selected_logistic`, nested), ``reader-ceiling`` (logistic regression of the
        log volume and the readers' own ratings ``attributes``; not a model that can run, a
        measure of how predictable the labels are).
    features
        The bundle's eight features per nodule, shape ``(N, 8)``; column 0 is the log volume.
    malignant, rating, patients, held_out
        Per nodule: label, readers' malignancy rating, patient, held-out mask.
    attributes
        :func:`load_reader_attributes` of the same nodules (``reader-ceiling`` only).
    n_boot
        Bootstrap resamples of the AUC intervals.

    Returns
    -------
    ``{"cv": metrics, "heldout": metrics}`` (:func:`binary_metrics`).

    Raises
    ------
    MonaiTumorError
        For an unknown name, or ``reader-ceiling`` without ``attributes``.
    """
    if name not in EXPERIMENTS:
        raise MonaiTumorError(
            f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}"
        )
    x = features
    if name == "reader-ceiling":
        if attributes is None:
            raise MonaiTumorError("the reader-ceiling experiment needs the readers' ratings")
        x = np.concatenate([features[:, :1], attributes], axis=1)

    def fit_predict(fit: IntArray, pred: IntArray) -> FloatArray:
        if name == "rating-target":
            rated = RatingRegression().fit(x[fit], malignant[fit], rating[fit])
            return rated.predict_proba(x[pred])
        if name == "l1-selection":
            model = l1_selected_logistic(x[fit], malignant[fit], [patients[int(i)] for i in fit])
        elif name == "splines":
            model = _spline_logistic().fit(x[fit], malignant[fit])
        else:
            model = _logistic().fit(x[fit], malignant[fit])
        return np.asarray(model.predict_proba(x[pred])[:, 1], dtype=np.float64)

    train = np.flatnonzero(~held_out)
    test = np.flatnonzero(held_out)
    p_train = [patients[int(i)] for i in train]
    folds = patient_folds(p_train, n_folds=n_folds, seed=FOLD_SEED)
    oof = _cross_validated(fit_predict, train, folds)
    p_test = [patients[int(i)] for i in test]
    return {
        "cv": binary_metrics(malignant[train], oof, p_train, n_boot=n_boot),
        "heldout": binary_metrics(malignant[test], fit_predict(train, test), p_test, n_boot=n_boot),
    }


def _cross_validated(
    fit_predict: Callable[[IntArray, IntArray], FloatArray],
    rows: IntArray,
    folds: Sequence[IntArray],
) -> FloatArray:
    """Out-of-fold predictions for ``rows``; ``folds`` index into ``rows``."""
    oof = np.zeros(len(rows))
    for val in folds:
        fit = np.setdiff1d(np.arange(len(rows)), val)
        oof[val] = fit_predict(rows[fit], rows[val])
    return oof


def _oof(
    model_factory: Any, features: FloatArray, y: npt.NDArray[np.int64], folds: Sequence[Any]
) -> FloatArray:
    """Out-of-fold probabilities of a fresh ``model_factory()`` model per fold."""

    def fit_predict(fit: IntArray, pred: IntArray) -> FloatArray:
        model = model_factory().fit(features[fit], y[fit])
        return np.asarray(model.predict_proba(features[pred])[:, 1], dtype=np.float64)

    return _cross_validated(fit_predict, np.arange(len(y)), folds)


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def assemble_release(
    bundle_dir: str | Path,
    *,
    mode: str,
    feature_model: Any,
    cnn_state: dict[str, torch.Tensor] | None = None,
    stacker: Any = None,
) -> torch.nn.Module:
    """Build the shipped network from the fitted parts.

    ``feature_model`` and ``stacker`` are fitted scikit-learn pipelines
    (``StandardScaler`` + ``LogisticRegression``); their scaling and coefficients become the
    network's ``feature_mean``/``feature_std``/``feature_head`` and ``combine`` layers, so the
    bundle needs no scikit-learn. ``mode="features"`` ships the feature model alone,
    ``mode="both"`` adds the CNN (``cnn_state``) and the stacker.
    """
    model = _new_model(Path(bundle_dir), mode)
    if mode == "both":
        if cnn_state is None or stacker is None:
            raise MonaiTumorError("mode 'both' needs the CNN weights and the stacker")
        state = {k: v for k, v in cnn_state.items() if k.startswith(("encoder", "cnn_head"))}
        missing = model.load_state_dict(state, strict=False)
        if [k for k in missing.missing_keys if k.startswith(("encoder", "cnn_head"))]:
            raise MonaiTumorError(f"CNN weights incomplete: {missing.missing_keys}")
    scaler, lr = feature_model[0], feature_model[-1]
    with torch.no_grad():
        model.feature_mean.copy_(torch.as_tensor(scaler.mean_))  # type: ignore[operator]
        model.feature_std.copy_(torch.as_tensor(scaler.scale_))  # type: ignore[operator]
        model.feature_head.weight.copy_(torch.as_tensor(lr.coef_))  # type: ignore[operator, union-attr]
        model.feature_head.bias.copy_(torch.as_tensor(lr.intercept_))  # type: ignore[operator, union-attr]
        if mode == "both":
            s_scaler, s_lr = stacker[0], stacker[-1]
            # the stacker standardises its two logits: fold the scaling into the linear layer
            w = s_lr.coef_[0] / s_scaler.scale_
            b = s_lr.intercept_[0] - float(np.sum(w * s_scaler.mean_))
            model.combine.weight.copy_(torch.as_tensor(w).view(1, 2))  # type: ignore[operator, union-attr]
            model.combine.bias.copy_(torch.as_tensor([b]))  # type: ignore[operator, union-attr]
    model.eval()
    return model


def export_release(bundle_dir: str | Path, model: torch.nn.Module) -> tuple[Path, Path]:
    """Write ``models/model.pt`` (state dict, atomically) and ``models/model.ts``.

    The TorchScript file comes from :func:`monai_tumor.training.export_torchscript`
    (``monai.bundle.ckpt_export`` with ``inference.json`` and ``metadata.json`` embedded,
    machine paths stripped).
    """
    from monai_tumor.export.atomic import atomic_path
    from monai_tumor.training.bundle_training import export_torchscript

    bundle = Path(bundle_dir).resolve()
    pt = bundle / "models" / "model.pt"
    with atomic_path(pt) as tmp:
        torch.save(model.state_dict(), tmp)
    return pt, export_torchscript(bundle, ckpt_file=pt)


def release_features_model(
    bundle_dir: str | Path, out: Path, split_file: str | Path
) -> dict[str, Any]:
    """Fit the feature logistic model on the training patients and export it as the release.

    Uses the preprocessed VOIs cached by :func:`main` in ``out``; returns the held-out metrics.
    """
    from monai_tumor.config import data_root

    data = load_malignancy_data(
        bundle_dir, data_root=data_root(), split_file=split_file, cache=out / "voi_cache.npz"
    )
    feats = raw_features(bundle_dir, data.x)
    train = np.flatnonzero(~data.held_out)
    test = np.flatnonzero(data.held_out)
    feature_model = _logistic().fit(feats[train], data.y[train])
    model = assemble_release(bundle_dir, mode="features", feature_model=feature_model)
    export_release(bundle_dir, model)
    p = predict(model, data.x[test])
    return binary_metrics(data.y[test], p, [data.patients[i] for i in test])


def reliability_plot(
    y: npt.NDArray[np.int64],
    predictions: dict[str, FloatArray],
    path: Path,
    *,
    bins: int = 5,
) -> Path:
    """Reliability diagram (observed malignant fraction per bin of predicted probability).

    Bins are quantiles of each model's predictions (equal counts), so every point rests on
    the same number of nodules; the diagonal is perfect calibration.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from monai_tumor.export.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect")
    for name, p in predictions.items():
        edges = np.quantile(p, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
        xs = [float(p[which == b].mean()) for b in range(bins) if np.any(which == b)]
        ys = [float(y[which == b].mean()) for b in range(bins) if np.any(which == b)]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("predicted probability (bin mean)")
    ax.set_ylabel("observed fraction malignant")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_bundle_datalist(
    split_file: str | Path, *, data_root: Path, out: Path, fold: int = 0
) -> dict[str, int]:
    """Write the datalist JSON of the bundle's ``configs/train.json``.

    ``training`` holds the labelled nodules of the split's training patients of ``fold``,
    ``validation`` those of its held-out patients; each item is ``{"image", "mask",
    "label"}`` with paths relative to ``data_root / "lidc_nodules"`` (the bundle's
    ``dataset_dir``) and ``label`` 1 for ``Diagnosis`` Malign. Returns the section sizes.
    """
    split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    held = set(split["folds"][fold]["validation"])
    labels = load_labels(data_root / "lidc_nodules" / "MetadatabyNoduleMaxVoting.xlsx")
    sections: dict[str, list[dict[str, Any]]] = {"training": [], "validation": []}
    for c in split["cases"]:
        if c["case"] not in labels:
            continue
        item = {
            "image": str(Path(c["image"]).relative_to("lidc_nodules")),
            "mask": str(Path(c["label"]).relative_to("lidc_nodules")),
            "label": labels[c["case"]][0],
        }
        sections["validation" if c["case"] in held else "training"].append(item)
    from monai_tumor.export.atomic import atomic_write_json

    atomic_write_json(out, sections)
    return {k: len(v) for k, v in sections.items()}


def split_labels(
    split_file: str | Path, data_root: Path
) -> tuple[list[str], npt.NDArray[np.int64], list[str], npt.NDArray[np.bool_]]:
    """Cases, labels, patients and held-out flags of the labelled VOIs, in split order."""
    split = json.loads(Path(split_file).read_text(encoding="utf-8"))
    held = set(split["folds"][0]["validation"])
    labels = load_labels(data_root / "lidc_nodules" / "MetadatabyNoduleMaxVoting.xlsx")
    cases = [c for c in split["cases"] if c["case"] in labels]
    return (
        [c["case"] for c in cases],
        np.array([labels[c["case"]][0] for c in cases], dtype=np.int64),
        [c["patient"] for c in cases],
        np.array([c["case"] in held for c in cases], dtype=bool),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Cross-validate on the training patients, train the release, evaluate on the held-out set."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--bundle", default="bundles/lung_nodule_malignancy")
    ap.add_argument("--split", default="data/datasets/lidc_nodules_split.json")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument(
        "--write-datalist",
        type=Path,
        help="write the labelled datalist JSON that the bundle's train.json reads, and stop",
    )
    ap.add_argument(
        "--plot", type=Path, help="write the held-out reliability diagram to this PNG and stop"
    )
    ap.add_argument(
        "--experiment",
        choices=EXPERIMENTS,
        help="cross-validate this variant of the feature model on the training patients, "
        "score it once on the held-out patients, and stop (see run_experiment)",
    )
    ap.add_argument(
        "--release-features",
        action="store_true",
        help="export the feature logistic model alone as the bundle's weights",
    )
    args = ap.parse_args(argv)
    from monai_tumor.config import data_root

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.plot is not None:
        _, y, _, held = split_labels(args.split, data_root())
        curves = {
            name: np.load(out / f"heldout_{key}.npy")
            for key, name in (
                ("volume", "volume alone"),
                ("features", "feature model (released)"),
                ("cnn", "CNN"),
                ("ensemble", "CNN + features"),
            )
            if (out / f"heldout_{key}.npy").is_file()
        }
        reliability_plot(y[held], curves, args.plot)
        return
    if args.release_features:
        metrics = release_features_model(args.bundle, out, args.split)
        logger.info("released the feature model; held out: %s", metrics)
        return
    if args.write_datalist is not None:
        write_bundle_datalist(args.split, data_root=data_root(), out=args.write_datalist)
        return
    data = load_malignancy_data(
        args.bundle, data_root=data_root(), split_file=args.split, cache=out / "voi_cache.npz"
    )
    train = np.flatnonzero(~data.held_out)
    test = np.flatnonzero(data.held_out)
    y_tr, y_te = data.y[train], data.y[test]
    p_tr = [data.patients[i] for i in train]
    p_te = [data.patients[i] for i in test]
    folds = patient_folds(p_tr, n_folds=args.folds, seed=FOLD_SEED)
    results_file = out / "results.json"
    results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.is_file() else {}

    def save() -> None:
        tmp = results_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, results_file)

    feats = raw_features(args.bundle, data.x)
    np.save(out / "bundle_features.npy", feats)
    f_tr, f_te = feats[train], feats[test]
    if args.experiment is not None:
        attributes = None
        if args.experiment == "reader-ceiling":
            attributes = load_reader_attributes(
                data_root() / "lidc_nodules" / "MetadatabyNoduleMaxVoting.xlsx", data.cases
            )
        scores = run_experiment(
            args.experiment,
            features=feats,
            malignant=data.y,
            rating=data.rating,
            patients=data.patients,
            held_out=data.held_out,
            n_folds=args.folds,
            attributes=attributes,
        )
        results[f"cv_{args.experiment}"] = scores["cv"]
        results[f"heldout_{args.experiment}"] = scores["heldout"]
        save()
        logger.info("%s: cv %s, held out %s", args.experiment, scores["cv"], scores["heldout"])
        return
    # baselines without a network: volume alone (rank = AUC), the bundle's feature model
    # (volume: a logistic model of log volume, so that Brier and calibration are defined)
    results["cv_volume"] = binary_metrics(y_tr, _oof(_logistic, f_tr[:, :1], y_tr, folds), p_tr)
    p_vol_te = _logistic().fit(f_tr[:, :1], y_tr).predict_proba(f_te[:, :1])[:, 1]
    results["heldout_volume"] = binary_metrics(y_te, p_vol_te, p_te)
    np.save(out / "heldout_volume.npy", p_vol_te)
    oof_feat = _oof(_logistic, f_tr, y_tr, folds)
    results["cv_features"] = binary_metrics(y_tr, oof_feat, p_tr)
    feature_model = _logistic().fit(f_tr, y_tr)
    p_feat_te = feature_model.predict_proba(f_te)[:, 1]
    results["heldout_features"] = binary_metrics(y_te, p_feat_te, p_te)
    np.save(out / "heldout_features.npy", p_feat_te)
    save()
    logger.info("volume / features: %s", {k: v["auc"] for k, v in results.items()})

    oof_cnn_file = out / "oof_cnn.npy"
    if oof_cnn_file.is_file():
        oof_cnn = np.load(oof_cnn_file)
    else:
        oof_cnn = np.zeros(len(train))
        for k, val in enumerate(folds):
            fold_file = out / f"oof_cnn_fold{k}.npy"
            if fold_file.is_file():
                oof_cnn[val] = np.load(fold_file)
                continue
            fit = np.setdiff1d(np.arange(len(train)), val)
            model = train_model(
                args.bundle,
                data.x[train[fit]],
                y_tr[fit],
                options=TrainOptions(mode="cnn", epochs=args.epochs, seed=k),
                checkpoint=out / f"cv_cnn_fold{k}.pt",
            )
            oof_cnn[val] = predict(model, data.x[train[val]])
            np.save(fold_file, oof_cnn[val])
        np.save(oof_cnn_file, oof_cnn)
    results["cv_cnn"] = binary_metrics(y_tr, oof_cnn, p_tr)
    stack_in = np.stack([_logit(oof_feat), _logit(oof_cnn)], axis=1)
    results["cv_ensemble"] = binary_metrics(y_tr, _oof(_logistic, stack_in, y_tr, folds), p_tr)
    save()
    logger.info("cv: %s", {k: v["auc"] for k, v in results.items() if k.startswith("cv_")})

    cnn = train_model(
        args.bundle,
        data.x[train],
        y_tr,
        options=TrainOptions(mode="cnn", epochs=args.epochs, seed=0),
        checkpoint=out / "final_cnn.pt",
    )
    p_cnn_te = predict(cnn, data.x[test])
    results["heldout_cnn"] = binary_metrics(y_te, p_cnn_te, p_te)
    stacker = _logistic().fit(stack_in, y_tr)
    release = assemble_release(
        args.bundle,
        mode="both",
        cnn_state=cnn.state_dict(),
        feature_model=feature_model,
        stacker=stacker,
    )
    p_ens_te = predict(release, data.x[test])
    results["heldout_ensemble"] = binary_metrics(y_te, p_ens_te, p_te)
    np.save(out / "heldout_cnn.npy", p_cnn_te)
    np.save(out / "heldout_ensemble.npy", p_ens_te)
    torch.save(release.state_dict(), out / "model.pt")
    save()
    logger.info(
        "held out: %s", {k: v["auc"] for k, v in results.items() if k.startswith("heldout")}
    )


if __name__ == "__main__":
    main()
