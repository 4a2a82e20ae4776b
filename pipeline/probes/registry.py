"""The probe registry (one instance for this plug-in kind) and the base every probe derives from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sklearn.base import BaseEstimator, ClassifierMixin

from slidemil.core.params import Section
from slidemil.core.registry import Registry

PROBES: Registry = Registry("probe")

#: (estimator parameter, values) chosen on each fold's validation slides, e.g. ("C", [0.01, 1.0])
Search = tuple[str, Sequence[Any]]


class NoOptions(Section):
    """A probe without options in ``probe.probe_kwargs``."""


class Probe(ClassifierMixin, BaseEstimator):
    """Base of the registered probes: a scikit-learn classifier on slide embeddings ``[n, D]`` that declares
    its ``probe.probe_kwargs.<name>`` options.

    ``Options`` is the pydantic model of those options (validated up front by the CLI);
    :meth:`from_options` builds the estimator and, optionally, the hyper-parameter searched per fold.
    """

    Options: ClassVar[type[Section]] = NoOptions

    @classmethod
    def from_options(cls, options: Section) -> tuple[Probe, Search | None]:
        """The probe built with ``options`` as constructor arguments, no search (override to differ)."""
        return cls(**options.model_dump()), None
