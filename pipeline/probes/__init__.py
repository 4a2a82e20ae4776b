"""Probes on pooled slide embeddings: linear, kNN and prototype (SimpleShot), one registry.

Every probe is a scikit-learn classifier (``__init__`` stores hyper-parameters, ``fit`` returns self,
``classes_`` orders the ``predict_proba`` columns), so the stage treats them alike and a new probe only
needs ``@PROBES.register("<name>")``. Survival and regression probes (``cox``, ``knn_risk``, ``ridge``,
``knn_regression``) are scikit-learn regressors that ``predict`` a risk or a value; each probe class names the
task kinds it supports in ``kinds`` (default: classification). CONCH's model card names linear and kNN probing as main uses
(Lu et al., Nature Medicine 2024).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin

from slidemil.pipeline.probes import knn, linear, prototype, regression, survival  # noqa: F401  (registers)
from slidemil.pipeline.probes.pooling import POOLINGS, pool_bag
from slidemil.pipeline.probes.registry import PROBES
from slidemil.pipeline.probes.tuning import fit_probe, select_on_validation

__all__ = [
    "POOLINGS",
    "PROBES",
    "create_probe",
    "fit_probe",
    "list_probes",
    "pool_bag",
    "predict_proba_all",
    "probe_kinds",
    "select_on_validation",
]


def probe_kinds(name: str) -> tuple[str, ...]:
    """The task kinds the probe ``name`` supports (its class's ``kinds``; classification when it names none)."""
    if name not in PROBES:
        return ("classification",)
    return tuple(getattr(PROBES.get(name), "kinds", ("classification",)))


def create_probe(name: str, **kwargs: Any) -> ClassifierMixin:
    """Build the probe registered as ``name`` with hyper-parameters ``kwargs``.

    Raises:
        UnknownPluginError (a KeyError): unknown probe name (lists the registered ones).
    """
    return PROBES.get(name)(**kwargs)


def list_probes() -> list[str]:
    """Names of the registered probes, sorted."""
    return PROBES.names()


def predict_proba_all(estimator: ClassifierMixin, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` with one column per task class ``0..n_classes-1``.

    A class missing from a fold's training set gets probability 0 (its column would otherwise vanish).

    Args:
        estimator: fitted probe whose ``classes_`` are integer class indices.
        x: array-like of shape (n_samples, n_features).

    Returns:
        float array of shape (n_samples, n_classes).
    """
    proba = np.zeros((len(x), n_classes), dtype=np.float64)
    proba[:, np.asarray(estimator.classes_, dtype=int)] = estimator.predict_proba(x)
    return proba
