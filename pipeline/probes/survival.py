"""Survival probes on pooled slide embeddings: a penalised Cox model and kNN risk.

Both take embeddings ``x [n, D]`` and targets ``y [n, 2]`` (time, event) and predict a risk ``[n]`` (higher =
earlier event). Registered in the probe registry with ``kinds = ("survival",)``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slidemil.pipeline.probes.registry import PROBES


def _surv(y: np.ndarray) -> np.ndarray:
    from slidemil.pipeline.kinds.survival_metrics import structured

    y = np.asarray(y, float).reshape(-1, 2)
    return structured(y[:, 0], y[:, 1])


@PROBES.register("cox")
class CoxProbe(BaseEstimator):
    """``StandardScaler`` → elastic-net penalised Cox model (scikit-survival ``CoxnetSurvivalAnalysis``; Simon et
    al., J. Stat. Softw. 2011) at one penalty ``alpha`` (the stage picks it on each fold's validation slides).

    Args:
        alpha: penalty strength; l1_ratio: share of the L1 penalty (0 < l1_ratio ≤ 1).
    """

    kinds = ("survival",)

    def __init__(self, alpha: float = 0.1, l1_ratio: float = 0.5) -> None:
        self.alpha = alpha
        self.l1_ratio = l1_ratio

    def fit(self, x: np.ndarray, y: np.ndarray) -> CoxProbe:
        """Fit on embeddings ``x [n, D]`` and targets ``y [n, 2]`` (time, event)."""
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes at weak penalties: the validation choice judges
            self.pipeline_ = make_pipeline(
                StandardScaler(),
                CoxnetSurvivalAnalysis(alphas=[self.alpha], l1_ratio=self.l1_ratio, max_iter=10000),
            ).fit(x, _surv(y))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Risk ``[n]`` (the linear predictor)."""
        return self.pipeline_.predict(x)


@PROBES.register("knn_risk")
class KNNRiskProbe(BaseEstimator):
    """Risk of a query = mean martingale residual ``event − Ĥ(time)`` (Nelson–Aalen cumulative hazard of the
    training slides, scikit-survival) of its ``n_neighbors`` most cosine-similar training slides: a neighbour that
    had its event earlier than the cohort's hazard predicts has a high residual.

    Martingale residuals: Therneau, Grambsch & Fleming, Biometrika 1990.
    """

    kinds = ("survival",)

    def __init__(self, n_neighbors: int = 20) -> None:
        self.n_neighbors = n_neighbors

    def fit(self, x: np.ndarray, y: np.ndarray) -> KNNRiskProbe:
        """Store embeddings ``x [n, D]`` and the training slides' martingale residuals from ``y [n, 2]``."""
        from sksurv.nonparametric import nelson_aalen_estimator

        y = np.asarray(y, float).reshape(-1, 2)
        times, hazard = nelson_aalen_estimator(y[:, 1].astype(bool), y[:, 0])
        self.residual_ = y[:, 1] - np.interp(y[:, 0], times, hazard)
        self.model_ = NearestNeighbors(n_neighbors=min(self.n_neighbors, len(x)), metric="cosine",
                                       algorithm="brute").fit(x)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Risk ``[n]``: mean residual of the neighbours."""
        return self.residual_[self.model_.kneighbors(x, return_distance=False)].mean(axis=1)


def negative_c_index(model, x: np.ndarray, y: np.ndarray) -> float:
    """Validation loss of a survival probe: − Harrell's C-index (NaN without comparable pairs → +inf)."""
    from slidemil.pipeline.kinds.survival_metrics import survival_metrics

    y = np.asarray(y, float).reshape(-1, 2)
    c = survival_metrics(y[:, 0], y[:, 1], model.predict(x))["c_index"]
    return -c if np.isfinite(c) else np.inf
