"""monai_tumor.training.malignancy: the variants tried against the released feature model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_tumor.errors import MonaiTumorError
from monai_tumor.training.malignancy import (
    EXPERIMENTS,
    READER_ATTRIBUTES,
    RatingRegression,
    binary_metrics,
    l1_selected_logistic,
    load_reader_attributes,
    run_experiment,
)


def _nodules(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and ratings as in LIDC: ratings 4-5 malignant, 1-3 mostly benign."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, 8))
    latent = features[:, 0] * 1.2 - features[:, 3] * 0.6 + rng.normal(scale=0.5, size=n)
    rating = np.clip(np.rint(3 + latent), 1, 5).astype(np.int64)
    malignant = ((rating >= 4) | ((rating == 3) & (rng.random(n) < 0.15))).astype(np.int64)
    return features, malignant, rating


def test_learns_the_rating_and_ranks_unseen_nodules() -> None:
    x, y, r = _nodules(600, seed=0)
    model = RatingRegression().fit(x[:400], y[:400], r[:400])
    p = model.predict_proba(x[400:])
    assert p.shape == (200,) and np.all((p > 0) & (p < 1))
    metrics = binary_metrics(y[400:], p, [f"p{i}" for i in range(200)], n_boot=50)
    assert metrics["auc"] > 0.9
    # calibrated on the label: the mean probability is near the malignant fraction
    assert abs(float(p.mean()) - float(y[400:].mean())) < 0.08


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_probability_is_monotone_in_the_rating_score(seed: int) -> None:
    """Platt scaling keeps the ridge score's order: the AUC is the score's AUC."""
    x, y, r = _nodules(200, seed=seed)
    model = RatingRegression().fit(x, y, r)
    p = model.predict_proba(x)
    score = model._ridge.predict(x)
    order = np.argsort(score, kind="stable")
    assert np.all(np.diff(p[order]) >= -1e-12)


@pytest.mark.parametrize(
    ("cut", "message"),
    [("labels", "one of each per nodule"), ("one_class", "one class only")],
)
def test_bad_training_data_is_refused(cut: str, message: str) -> None:
    x, y, r = _nodules(50, seed=1)
    y = y[:-1] if cut == "labels" else np.zeros_like(y)
    with pytest.raises(MonaiTumorError, match=message):
        RatingRegression().fit(x, y, r)


def test_predicting_before_fitting_is_an_error() -> None:
    x, _, _ = _nodules(5, seed=2)
    with pytest.raises(MonaiTumorError, match="before fit"):
        RatingRegression().predict_proba(x)


# --- variants tried against the feature model (run_experiment) -----------------------------


def _cohort(n_patients: int, seed: int) -> dict[str, Any]:
    """Two nodules per patient; features 0 and 5 carry the signal, the other six are noise."""
    rng = np.random.default_rng(seed)
    n = 2 * n_patients
    features = rng.normal(size=(n, 8))
    latent = 1.6 * features[:, 0] - 1.0 * features[:, 5] + rng.normal(scale=0.6, size=n)
    malignant = (latent > 0.4).astype(np.int64)
    rating = np.clip(np.rint(3 + latent), 1, 5).astype(np.int64)
    patients = [f"P{i // 2:03d}" for i in range(n)]
    held_out = np.array([int(p[1:]) % 5 == 0 for p in patients])
    return {
        "features": features,
        "malignant": malignant,
        "rating": rating,
        "patients": patients,
        "held_out": held_out,
        "attributes": np.c_[features[:, 5:6], rng.integers(1, 6, size=(n, 7))].astype(float),
    }


def test_l1_selection_keeps_the_informative_features() -> None:
    c = _cohort(200, seed=3)
    model = l1_selected_logistic(c["features"], c["malignant"], c["patients"])
    coef = np.abs(model[-1].coef_.reshape(-1))
    assert set(np.argsort(coef)[-2:]) == {0, 5}
    assert coef[[1, 2, 3, 4, 6, 7]].max() < 0.25 * coef[[0, 5]].min()
    fresh = _cohort(100, seed=4)
    p = model.predict_proba(fresh["features"])[:, 1]
    metrics = binary_metrics(fresh["malignant"], p, fresh["patients"], n_boot=50)
    assert metrics["auc"] > 0.9


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_scores_training_and_held_out_patients_apart(name: str) -> None:
    c = _cohort(150, seed=5)
    scores = run_experiment(name, **c, n_boot=50)
    held = c["held_out"]
    assert scores["cv"]["n"] == int((~held).sum())
    assert scores["heldout"]["n"] == int(held.sum())
    assert scores["cv"]["n_patients"] + scores["heldout"]["n_patients"] == 150
    assert scores["cv"]["auc"] > 0.8 and scores["heldout"]["auc"] > 0.8
    # the cross-validation never sees a held-out label: flipping them all changes nothing
    flipped = dict(c, malignant=np.where(held, 1 - c["malignant"], c["malignant"]))
    assert run_experiment(name, **flipped, n_boot=50)["cv"] == scores["cv"]


@pytest.mark.parametrize(
    ("name", "drop_attributes", "message"),
    [("stacking", False, "unknown experiment"), ("reader-ceiling", True, "readers' ratings")],
)
def test_experiment_misuse_is_refused(name: str, drop_attributes: bool, message: str) -> None:
    c = _cohort(20, seed=6)
    if drop_attributes:
        c.pop("attributes")
    with pytest.raises(MonaiTumorError, match=message):
        run_experiment(name, **c)


@pytest.fixture
def rating_sheet(tmp_path: Path) -> Path:
    import pandas as pd

    rows = [
        {"patient_id": "LIDC-IDRI-0002", "nodule_id": k, "Diagnosis": "Benign"}
        | {col: 10 * k + j for j, col in enumerate(READER_ATTRIBUTES)}
        for k in (1, 2)
    ]
    path = tmp_path / "sheet.xlsx"
    pd.DataFrame(rows).to_excel(path, index=False)
    return path


def test_reader_attributes_follow_the_cases_order(rating_sheet: Path) -> None:
    got = load_reader_attributes(rating_sheet, ["LIDC-IDRI-0002_R_2", "LIDC-IDRI-0002_R_1"])
    assert got.shape == (2, len(READER_ATTRIBUTES))
    assert got[0].tolist() == [20.0 + j for j in range(len(READER_ATTRIBUTES))]
    assert got[1, 0] == 10.0


def test_reader_attributes_of_an_unknown_nodule_are_an_error(rating_sheet: Path) -> None:
    with pytest.raises(MonaiTumorError, match=r"sheet.xlsx: no ratings for 1 nodules"):
        load_reader_attributes(rating_sheet, ["LIDC-IDRI-0002_R_1", "LIDC-IDRI-0009_R_1"])


def test_reader_attributes_need_the_rating_columns(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "bare.xlsx"
    pd.DataFrame([{"patient_id": "LIDC-IDRI-0002", "nodule_id": 1}]).to_excel(path, index=False)
    with pytest.raises(MonaiTumorError, match=r"bare.xlsx: columns .*Spiculation_value"):
        load_reader_attributes(path, ["LIDC-IDRI-0002_R_1"])
