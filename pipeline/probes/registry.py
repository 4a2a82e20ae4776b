"""The probe registry (one instance for this plug-in kind) and the bases every probe derives from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from slidemil.core.params import Section
from slidemil.core.registry import Registry

PROBES: Registry = Registry("probe")

#: (estimator parameter, values) chosen on each fold's validation slides, e.g. ("C", [0.01, 1.0])
Search = tuple[str, Sequence[Any]]


class NoOptions(Section):
    """A probe without options in ``probe.probe_kwargs``."""


class ProbeBase(BaseEstimator):
    """What every registered probe declares: its ``probe.probe_kwargs.<name>`` options and its task kinds.

    ``Options`` is the pydantic model of those options (validated up front by the CLI);
    :meth:`from_options` builds the estimator and, optionally, the hyper-parameter searched per fold;
    ``kinds`` names the task kinds (``task.type``) the probe supports.
    """

    Options: ClassVar[type[Section]] = NoOptions
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    @classmethod
    def from_options(cls, options: Section) -> tuple[ProbeBase, Search | None]:
        """The probe built with ``options`` as constructor arguments, no search (override to differ)."""
        return cls(**options.model_dump()), None


class Probe(ClassifierMixin, ProbeBase):
    """Base of the classification probes: a scikit-learn classifier on slide embeddings ``[n, D]``
    (``classes_`` orders the ``predict_proba`` columns)."""


class RegressionProbe(RegressorMixin, ProbeBase):
    """Base of the regression probes: a scikit-learn regressor, embeddings ``[n, D]`` → values ``[n]``."""

    kinds = ("regression",)


class SurvivalProbe(ProbeBase):
    """Base of the survival probes: embeddings ``[n, D]`` and targets ``[n, 2]`` (time, event) → a risk ``[n]``
    (higher = earlier event). Not a scikit-learn regressor: its target is two columns and its score the C-index."""

    kinds = ("survival",)
