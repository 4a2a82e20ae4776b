"""Survival probes on pooled slide embeddings: a penalised Cox model and kNN risk.

Both take embeddings ``x [n, D]`` and targets ``y [n, 2]`` (time, event) and predict a risk ``[n]`` (higher =
earlier event). Registered in the probe registry as :class:`~.registry.SurvivalProbe` (``kinds = ("survival",)``).
"""

from __future__ import annotations

import warnings

import numpy as np
from pydantic import Field, PositiveFloat
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from slidemil.core.params import Section
from slidemil.pipeline.probes.registry import PROBES, Search, SurvivalProbe


def _xy(probe: SurvivalProbe, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated embeddings ``[n, D]`` and targets ``[n, 2]`` (time, event).

    Raises:
        ValueError: ``y`` is not two columns (time, event).
    """
    x, y = validate_data(probe, x, y, reset=True, multi_output=True, y_numeric=True)
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"a survival probe needs targets [n, 2] (time, event), got shape {y.shape}")
    return x, y.astype(float)


@PROBES.register("cox")
class CoxProbe(SurvivalProbe):
    """``StandardScaler`` → elastic-net penalised Cox model (scikit-survival ``CoxnetSurvivalAnalysis``; Simon et
    al., J. Stat. Softw. 2011) at one penalty ``alpha`` (the stage picks it on each fold's validation slides).

    Args:
        alpha: penalty strength; l1_ratio: share of the L1 penalty (0 < l1_ratio ≤ 1).
    """

    class Options(Section):
        """``probe.probe_kwargs.cox``."""

        alphas: list[PositiveFloat] = Field([1.0, 0.3, 0.1, 0.03, 0.01], min_length=1, description=(
            "elastic-net penalties, chosen per fold by validation C-index (ties: the stronger penalty)"))
        l1_ratio: float = Field(0.5, gt=0, le=1, description="share of the L1 penalty in the elastic net")

    @classmethod
    def from_options(cls, options: Options) -> tuple[CoxProbe, Search]:
        """The probe with ``l1_ratio``, searching ``alpha`` over ``alphas``, strongest first."""
        return cls(l1_ratio=options.l1_ratio), ("alpha", sorted(options.alphas, reverse=True))

    def __init__(self, alpha: float = 0.1, l1_ratio: float = 0.5) -> None:
        self.alpha = alpha
        self.l1_ratio = l1_ratio

    def fit(self, x: np.ndarray, y: np.ndarray) -> CoxProbe:
        """Fit on embeddings ``x [n, D]`` and targets ``y [n, 2]`` (time, event)."""
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        from slidemil.pipeline.kinds.survival_metrics import structured

        x, y = _xy(self, x, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes at weak penalties: the validation choice judges
            self.pipeline_ = make_pipeline(
                StandardScaler(),
                CoxnetSurvivalAnalysis(alphas=[self.alpha], l1_ratio=self.l1_ratio, max_iter=10000),
            ).fit(x, structured(y[:, 0], y[:, 1]))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Risk ``[n]`` (the linear predictor)."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict(validate_data(self, x, reset=False))


@PROBES.register("knn_risk")
class KNNRiskProbe(SurvivalProbe):
    """Risk of a query = mean martingale residual ``event − Ĥ(time)`` (Nelson–Aalen cumulative hazard of the
    training slides, scikit-survival) of its ``n_neighbors`` most cosine-similar training slides: a neighbour that
    had its event earlier than the cohort's hazard predicts has a high residual.

    Martingale residuals: Therneau, Grambsch & Fleming, Biometrika 1990.
    """

    class Options(Section):
        """``probe.probe_kwargs.knn_risk``."""

        n_neighbors: int = Field(20, ge=1, description="neighbours averaged (clipped to the training slides)")

    def __init__(self, n_neighbors: int = 20) -> None:
        self.n_neighbors = n_neighbors

    def fit(self, x: np.ndarray, y: np.ndarray) -> KNNRiskProbe:
        """Store embeddings ``x [n, D]`` and the training slides' martingale residuals from ``y [n, 2]``."""
        from sksurv.nonparametric import nelson_aalen_estimator

        x, y = _xy(self, x, y)
        times, hazard = nelson_aalen_estimator(y[:, 1].astype(bool), y[:, 0])
        self.residual_ = y[:, 1] - np.interp(y[:, 0], times, hazard)
        self.model_ = NearestNeighbors(n_neighbors=min(self.n_neighbors, len(x)), metric="cosine",
                                       algorithm="brute").fit(x)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Risk ``[n]``: mean residual of the neighbours."""
        check_is_fitted(self, "model_")
        neighbours = self.model_.kneighbors(validate_data(self, x, reset=False), return_distance=False)
        return self.residual_[neighbours].mean(axis=1)


def negative_c_index(model, x: np.ndarray, y: np.ndarray) -> float:
    """Validation loss of a survival probe: − Harrell's C-index (NaN without comparable pairs → +inf)."""
    from slidemil.pipeline.kinds.survival_metrics import survival_metrics

    y = np.asarray(y, float).reshape(-1, 2)
    c = survival_metrics(y[:, 0], y[:, 1], model.predict(x))["c_index"]
    return -c if np.isfinite(c) else np.inf
