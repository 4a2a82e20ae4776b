"""Probes on pooled slide embeddings: linear, kNN and prototype (SimpleShot); Cox, kNN risk, ridge, kNN
regression; one registry.

Every classification probe is a scikit-learn classifier (``__init__`` stores hyper-parameters, ``fit`` returns self,
``classes_`` orders the ``predict_proba`` columns) deriving from :class:`~.registry.Probe`, which declares
its ``probe.probe_kwargs.<name>`` options, so the stage treats them alike. Survival and regression probes
(``cox``, ``knn_risk``, ``ridge``, ``knn_regression``) derive from :class:`~.registry.SurvivalProbe` /
:class:`~.registry.RegressionProbe` and ``predict`` a risk or a value; each probe class names the task kinds
it supports in ``kinds``. A new probe is one module in this package (imported here automatically) with a
class decorated ``@PROBES.register("<name>")``. CONCH's model card names linear and kNN probing as main uses
(Lu et al., Nature Medicine 2024).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin

from slidemil.core.params import Section, read_section
from slidemil.pipeline.probes.pooling import POOLINGS, pool_bag
from slidemil.pipeline.probes.registry import PROBES, Search
from slidemil.pipeline.probes.tuning import fit_probe, select_on_validation

__all__ = [
    "POOLINGS",
    "PROBES",
    "create_probe",
    "fit_probe",
    "list_probes",
    "pool_bag",
    "predict_proba_all",
    "probe_from_options",
    "probe_kinds",
    "probe_options",
    "select_on_validation",
]

for _module in pkgutil.iter_modules(__path__):  # every probe module registers its probe on import
    importlib.import_module(f"{__name__}.{_module.name}")


def probe_kinds(name: str) -> tuple[str, ...]:
    """The task kinds the probe ``name`` supports (its class's ``kinds``).

    Raises:
        UnknownPluginError: unknown probe.
    """
    return tuple(PROBES.get(name).kinds)


def create_probe(name: str, **kwargs: Any) -> ClassifierMixin:
    """Build the probe registered as ``name`` with hyper-parameters ``kwargs``.

    Raises:
        UnknownPluginError (a KeyError): unknown probe name (lists the registered ones).
    """
    return PROBES.get(name)(**kwargs)


def probe_options(name: str, kwargs: dict[str, Any] | None) -> Section:
    """Validate ``probe.probe_kwargs.<name>`` against the probe's ``Options`` model (absent → its defaults).

    Raises:
        UnknownPluginError: unknown probe. ParamsError: naming ``probe.probe_kwargs.<name>.<key>``.
    """
    return read_section({name: kwargs}, name, PROBES.get(name).Options, prefix="probe.probe_kwargs.")


def probe_from_options(name: str, options: Section) -> tuple[ClassifierMixin, Search | None]:
    """The probe ``name`` built from its validated options, and the hyper-parameter it searches per fold (or None)."""
    return PROBES.get(name).from_options(options)


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
