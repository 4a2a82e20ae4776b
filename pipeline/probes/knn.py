"""kNN probe: cosine-similarity nearest neighbours on L2-normalised embeddings."""

from __future__ import annotations

import warnings

import numpy as np
from pydantic import Field
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.validation import check_is_fitted, validate_data

from slidemil.core.params import Section
from slidemil.pipeline.probes.registry import PROBES, Probe


@PROBES.register("knn")
class KNNProbe(Probe):
    """Majority vote of the ``n_neighbors`` training slides most cosine-similar to each query.

    ``predict_proba`` is the fraction of neighbours of each class. ``n_neighbors`` is clipped to the
    number of training slides (small cohorts, few-shot folds), with a warning when all of them vote.
    Input shape (n_samples, n_features).
    """

    class Options(Section):
        """``probe.probe_kwargs.knn``."""

        n_neighbors: int = Field(20, ge=1, description="neighbours voting (clipped to the training slides)")

    def __init__(self, n_neighbors: int = 20) -> None:
        self.n_neighbors = n_neighbors

    def fit(self, x: np.ndarray, y: np.ndarray) -> KNNProbe:
        """Store the training embeddings ``x`` (n_samples, n_features) and labels ``y``."""
        x, y = validate_data(self, x, y, reset=True)
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be ≥ 1, got {self.n_neighbors}")
        k = min(self.n_neighbors, len(x))
        if k == len(x):
            warnings.warn(
                f"kNN probe: n_neighbors={self.n_neighbors} ≥ {len(x)} training slides, so every query gets the "
                "training class frequencies (AUROC 0.5); lower probe.probe_kwargs.knn.n_neighbors",
                UserWarning,
                stacklevel=2,
            )
        # cosine distance = 1 − cosine similarity of the L2-normalised vectors; brute force is exact.
        self.model_ = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x, y)
        self.n_neighbors_ = k
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Neighbour-vote fractions of shape (n_samples, n_classes), columns in ``classes_`` order."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(validate_data(self, x, reset=False))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Majority class among the neighbours, shape (n_samples,)."""
        check_is_fitted(self, "model_")
        return self.model_.predict(validate_data(self, x, reset=False))
