"""Linear probe: logistic regression on standardised slide embeddings."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from slidemil.pipeline.probes.registry import PROBES


@PROBES.register("linear")
class LinearProbe(ClassifierMixin, BaseEstimator):
    """``StandardScaler`` → ``LogisticRegression`` (L2, lbfgs) on embeddings of shape (n_samples, n_features).

    Args:
        C: inverse regularisation strength (the stage picks it on each fold's validation set).
        class_weight: ``"balanced"`` (weights ∝ 1/class frequency) or ``None``.
        max_iter: lbfgs iterations.
    """

    def __init__(self, C: float = 1.0, class_weight: str | None = "balanced", max_iter: int = 2000) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearProbe:
        """Fit on embeddings ``x`` (n_samples, n_features) and labels ``y`` (n_samples,)."""
        self.pipeline_: Pipeline = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter),
        ).fit(x, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of shape (n_samples, n_classes), columns in ``classes_`` order."""
        return self.pipeline_.predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most probable class per sample, shape (n_samples,)."""
        return self.pipeline_.predict(x)
