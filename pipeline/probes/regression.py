"""Regression probes on pooled slide embeddings: ridge and kNN regression (``x [n, D]`` → value ``[n]``).

Registered in the probe registry with ``kinds = ("regression",)``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slidemil.pipeline.probes.registry import PROBES


@PROBES.register("ridge")
class RidgeProbe(BaseEstimator):
    """``StandardScaler`` → ridge regression (L2 penalty ``alpha``, chosen by the stage on the validation slides)."""

    kinds = ("regression",)

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeProbe:
        """Fit on embeddings ``x [n, D]`` and targets ``y [n]``."""
        self.pipeline_ = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha)).fit(x, np.asarray(y, float))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted values ``[n]`` in the target's units."""
        return self.pipeline_.predict(x)


@PROBES.register("knn_regression")
class KNNRegressionProbe(BaseEstimator):
    """Mean target of the ``n_neighbors`` most cosine-similar training slides."""

    kinds = ("regression",)

    def __init__(self, n_neighbors: int = 20) -> None:
        self.n_neighbors = n_neighbors

    def fit(self, x: np.ndarray, y: np.ndarray) -> KNNRegressionProbe:
        """Store embeddings ``x [n, D]`` and targets ``y [n]``."""
        self.model_ = KNeighborsRegressor(n_neighbors=min(self.n_neighbors, len(x)), metric="cosine",
                                          algorithm="brute").fit(x, np.asarray(y, float))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted values ``[n]``."""
        return self.model_.predict(x)


def mean_squared_error(model, x: np.ndarray, y: np.ndarray) -> float:
    """Validation loss of a regression probe: mean squared error."""
    return float(np.mean((model.predict(x) - np.asarray(y, float)) ** 2))
