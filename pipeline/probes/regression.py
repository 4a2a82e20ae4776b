"""Regression probes on pooled slide embeddings: ridge and kNN regression (``x [n, D]`` → value ``[n]``).

Registered in the probe registry as :class:`~.registry.RegressionProbe` (``kinds = ("regression",)``).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, PositiveFloat
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from slidemil.core.params import Section
from slidemil.pipeline.probes.registry import PROBES, RegressionProbe, Search


@PROBES.register("ridge")
class RidgeProbe(RegressionProbe):
    """``StandardScaler`` → ridge regression (L2 penalty ``alpha``, chosen by the stage on the validation slides)."""

    class Options(Section):
        """``probe.probe_kwargs.ridge``."""

        alphas: list[PositiveFloat] = Field([1.0e4, 1.0e3, 1.0e2, 1.0e1, 1.0], min_length=1, description=(
            "L2 penalties, chosen per fold by validation MSE (ties: the stronger penalty)"))

    @classmethod
    def from_options(cls, options: Options) -> tuple[RidgeProbe, Search]:
        """The probe searching ``alpha`` over ``alphas``, strongest first."""
        return cls(), ("alpha", sorted(options.alphas, reverse=True))

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, x: np.ndarray, y: np.ndarray) -> RidgeProbe:
        """Fit on embeddings ``x [n, D]`` and targets ``y [n]``."""
        x, y = validate_data(self, x, y, reset=True, y_numeric=True)
        self.pipeline_ = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha)).fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted values ``[n]`` in the target's units."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict(validate_data(self, x, reset=False))


@PROBES.register("knn_regression")
class KNNRegressionProbe(RegressionProbe):
    """Mean target of the ``n_neighbors`` most cosine-similar training slides (clipped to the training slides)."""

    class Options(Section):
        """``probe.probe_kwargs.knn_regression``."""

        n_neighbors: int = Field(20, ge=1, description="neighbours averaged (clipped to the training slides)")

    def __init__(self, n_neighbors: int = 20) -> None:
        self.n_neighbors = n_neighbors

    def fit(self, x: np.ndarray, y: np.ndarray) -> KNNRegressionProbe:
        """Store embeddings ``x [n, D]`` and targets ``y [n]``."""
        x, y = validate_data(self, x, y, reset=True, y_numeric=True)
        self.model_ = KNeighborsRegressor(n_neighbors=min(self.n_neighbors, len(x)), metric="cosine",
                                          algorithm="brute").fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted values ``[n]``."""
        check_is_fitted(self, "model_")
        return self.model_.predict(validate_data(self, x, reset=False))


def mean_squared_error(model, x: np.ndarray, y: np.ndarray) -> float:
    """Validation loss of a regression probe: mean squared error."""
    return float(np.mean((model.predict(x) - np.asarray(y, float)) ** 2))
