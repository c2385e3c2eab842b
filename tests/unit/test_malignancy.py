"""monai_tumor.training.malignancy: the rating-target variant (RatingRegression)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_tumor.errors import MonaiTumorError
from monai_tumor.training.malignancy import RatingRegression, binary_metrics


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
