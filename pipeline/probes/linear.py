"""Linear probe: logistic regression on standardised slide embeddings."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from slidemil.core.params import Section
from slidemil.pipeline.probes.registry import PROBES, Probe, Search


@PROBES.register("linear")
class LinearProbe(Probe):
    """``StandardScaler`` → ``LogisticRegression`` (L2, lbfgs) on embeddings of shape (n_samples, n_features).

    Args:
        C: inverse regularisation strength (the stage picks it on each fold's validation set).
        class_weight: ``"balanced"`` (weights ∝ 1/class frequency) or ``None``.
        max_iter: lbfgs iterations.
    """

    class Options(Section):
        """``probe.probe_kwargs.linear``."""

        c_grid: list[PositiveFloat] = Field([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2], min_length=1, description=(
            "inverse regularisation C, chosen per fold by validation log-loss (ties: the smaller C)"))
        class_weight: Literal["balanced", "none"] = Field("balanced", description="balanced (weights ∝ 1/class "
                                                           "frequency) | none")

    @classmethod
    def from_options(cls, options: Options) -> tuple[LinearProbe, Search]:
        """The probe with ``class_weight``, searching ``C`` over the ascending ``c_grid``."""
        return cls(class_weight=None if options.class_weight == "none" else "balanced"), ("C", sorted(options.c_grid))

    def __init__(self, C: float = 1.0, class_weight: str | None = "balanced", max_iter: int = 2000) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearProbe:
        """Fit on embeddings ``x`` (n_samples, n_features) and labels ``y`` (n_samples,)."""
        x, y = validate_data(self, x, y, reset=True)
        self.pipeline_: Pipeline = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter),
        ).fit(x, y)
        self.classes_ = self.pipeline_.classes_
        self.n_iter_ = self.pipeline_[-1].n_iter_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of shape (n_samples, n_classes), columns in ``classes_`` order."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict_proba(validate_data(self, x, reset=False))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most probable class per sample, shape (n_samples,)."""
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict(validate_data(self, x, reset=False))
