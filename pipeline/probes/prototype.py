"""Prototype probe (SimpleShot, Wang et al. 2019, arXiv:1911.04623): nearest class mean after CL2N."""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy.special import softmax
from sklearn.preprocessing import normalize
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from slidemil.core.params import Section
from slidemil.pipeline.probes.registry import PROBES, Probe


@PROBES.register("prototype")
class PrototypeProbe(Probe):
    """Centre on the training mean, L2-normalise (CL2N), assign the nearest class prototype (mean).

    scikit-learn's ``NearestCentroid`` scales distances by the within-class standard deviation, which
    is not SimpleShot; hence this small estimator. Probabilities are ``softmax(−d² / temperature)``
    over the squared Euclidean distances ``d²`` to the prototypes: ``temperature`` changes only the
    calibration (Brier, ECE), never the ranking or the prediction. Input shape (n_samples, n_features).
    """

    class Options(Section):
        """``probe.probe_kwargs.prototype``."""

        temperature: float = Field(0.1, gt=0, description="softmax(−d²/T); changes calibration only")

    def __init__(self, temperature: float = 0.1) -> None:
        self.temperature = temperature

    def fit(self, x: np.ndarray, y: np.ndarray) -> PrototypeProbe:
        """Learn the centring mean ``mean_`` [D] and the class prototypes ``prototypes_`` [C, D]."""
        x, y = validate_data(self, x, y, reset=True)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        self.classes_ = unique_labels(y)
        self.mean_ = x.mean(axis=0)
        z = normalize(x - self.mean_)  # (n, D)
        self.prototypes_ = np.stack([z[y == c].mean(axis=0) for c in self.classes_])  # (C, D)
        return self

    def _squared_distances(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "prototypes_")
        x = validate_data(self, x, reset=False)
        z = normalize(x - self.mean_)  # (n, D)
        return ((z[:, None, :] - self.prototypes_[None, :, :]) ** 2).sum(axis=-1)  # (n, C)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of shape (n_samples, n_classes), columns in ``classes_`` order."""
        return softmax(-self._squared_distances(x) / self.temperature, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class of the nearest prototype, shape (n_samples,)."""
        nearest = self._squared_distances(x).argmin(axis=1)  # checks the fit first
        return self.classes_[nearest]
