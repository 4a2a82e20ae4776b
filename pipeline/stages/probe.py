"""Linear, kNN and prototype probes on pooled slide embeddings, on the same folds as `train`.

Each slide's stored patch features are pooled into one embedding (probe.pooling: mean | max | mean+max);
a tile/ROI dataset is a cohort of 1-patch bags and needs nothing else. Per fold, each probe is fitted on
the training slides (the linear probe's C chosen on the validation slides from
probe.probe_kwargs.linear.c_grid by log-loss) and scored on the test slides. Writes, per probe,
metrics/probe@<name>.json (headline numbers), predictions/probe@<name>.csv and .details.json (every metric,
per fold), plots/probe@<name>/, and MLflow runs (a parent per probe, a child per fold).

Survival tasks use the ``cox`` (penalty from probe.probe_kwargs.cox.alphas, by validation C-index) and
``knn_risk`` probes, regression tasks ``ridge`` (probe.probe_kwargs.ridge.alphas, by validation MSE) and
``knn_regression``; a probe of probe.probes that does not support the task kind is skipped with a warning.
At ``task.level: patient`` the units are patients (all their slides pooled together).

`slidemil probe --probe knn` runs one probe (a DVC matrix stage over probe.probes); without --probe
every probe of probe.probes runs.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from slidemil.core.errors import ParamsError
from slidemil.core.params import Section, checks_plugins, read_section, section_defaults

HELP = "linear / kNN / prototype (or survival / regression) probes on pooled slide embeddings → metrics/probe@<name>.json"

class ProbeSection(Section):
    """The ``probe:`` params section; each probe's own options live in ``probe_kwargs`` (declared by the probe)."""

    features: str = Field("", description="feature store; empty: data/features/<extract.encoder>.zarr")
    splits: str = Field("data/splits.json", description="folds (split)")
    probes: list[str] = Field(["linear", "knn", "prototype"], min_length=1, description="probes run without --probe")
    pooling: Literal["mean", "max", "mean+max"] = Field("mean", description="patch features → slide embedding")
    probe_kwargs: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="per-probe options, e.g. {knn: {n_neighbors: 5}}; each probe declares "
        "its own (probe_kwargs.<probe>.* below)")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of the pooled test predictions "
                             "(95% intervals; 0: none)")
    seed: int = Field(0, description="seed of the bootstrap")

    @model_validator(mode="after")
    def _known_probes_and_options(self, info: ValidationInfo) -> ProbeSection:
        """Probe names registered and each probe's options valid (imports the probes: scikit-learn)."""
        if not checks_plugins(info):
            return self
        from slidemil.pipeline.probes import PROBES, probe_options

        unknown = [n for n in [*self.probes, *self.probe_kwargs] if n not in PROBES]
        if unknown:
            import difflib

            close = {n: difflib.get_close_matches(n, PROBES.names(), n=1) for n in unknown}
            hints = "".join(f"; did you mean {c[0]!r} for {n!r}?" for n, c in close.items() if c)
            raise ParamsError(f"probe.probes / probe.probe_kwargs name unknown probe(s) {unknown}{hints} "
                              f"(registered: {', '.join(PROBES.names())})")
        for name, kwargs in self.probe_kwargs.items():
            probe_options(name, kwargs)
        return self

    def options(self, name: str) -> Section:
        """The validated ``probe_kwargs`` of probe ``name`` (its defaults where not given)."""
        from slidemil.pipeline.probes import probe_options

        return probe_options(name, self.probe_kwargs.get(name))


SECTION = ProbeSection  # the CLI validates every stage's section before any stage works


def help_rows() -> list[tuple[str, Any, str]]:
    """``--help`` rows: the section's keys, then every registered probe's options with their defaults."""
    from slidemil.pipeline.probes import PROBES

    rows = section_defaults(ProbeSection)
    for name in PROBES.names():
        rows.extend(section_defaults(PROBES.get(name).Options, f"probe_kwargs.{name}."))
    return rows

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe", default=None, help="run only this probe (default: every one of probe.probes)")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Evaluate the probes; returns 0, or 1 when a probe has no usable fold (user errors raise SlidemilError)."""
    from slidemil.pipeline.crossval import FoldResult, cross_validate, tracking_for
    from slidemil.pipeline.data import features_path, load_method_data
    from slidemil.pipeline.kinds import kind_for
    from slidemil.pipeline.probes import (
        PROBES,
        fit_probe,
        pool_bag,
        predict_proba_all,
        probe_from_options,
        probe_kinds,
    )
    from slidemil.pipeline.task_kinds import Bootstrap
    from slidemil.splits.task import load_task

    section = read_section(params, "probe", ProbeSection)
    features = features_path(section.features, params)
    task = load_task(params)
    names = [args.probe] if getattr(args, "probe", None) else list(section.probes)
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise ParamsError(f"unknown probe(s) {unknown}; registered: {', '.join(PROBES.names())}")

    skipped = {n: f"supports {', '.join(probe_kinds(n))}, not {task.type}" for n in names
               if task.type not in probe_kinds(n)}
    for name, reason in skipped.items():
        log.warning("probe %s skipped: it %s", name, reason)
    names = [n for n in names if n not in skipped]
    if not names:
        fitting = [n for n in PROBES.names() if task.type in probe_kinds(n)]
        raise ParamsError(f"no probe of probe.probes supports a {task.type} task; use {', '.join(fitting)}")
    data = load_method_data(features, section.splits)
    log.info("pooling %d units (%s)", len(data.slides()), section.pooling)
    embeddings = {sid: pool_bag(data.load_features(sid), section.pooling) for sid in data.slides()}
    n_classes = len(data.classes)
    kind = kind_for(params, task, data)
    logged = {**section.model_dump(), "features": features}
    failed = []
    for name in names:
        # search: the hyper-parameter chosen on each fold's validation slides (e.g. the linear probe's C)
        options = section.options(name)
        estimator, search = probe_from_options(name, options)

        def fit_predict(fold: dict[str, Any], child, estimator=estimator, search=search) -> FoldResult:
            if kind.name != "classification":
                return _fit_predict_targets(kind, estimator, search, embeddings, data, fold)
            train, val, test = (_xy(embeddings, data.labels, fold[part]) for part in ("train", "val", "test"))
            model, chosen = fit_probe(estimator, *train, *val, search=search)
            return FoldResult(fold["test"], test[1], predict_proba_all(model, test[0], n_classes), chosen=chosen)

        # this probe's params, defaults filled: not the list of the other probes nor their options
        probe_params = {**{k: v for k, v in logged.items() if k not in ("probes", "probe_kwargs")},
                        "probe_kwargs": {name: options.model_dump()}}
        tracking = tracking_for(params, data, {"probe": probe_params, "method": f"probe@{name}"},
                                shown={"probe.pooling": "pooling"})
        summary = cross_validate("probe", name, data, fit_predict, kind=kind, tracking=tracking,
                                 bootstrap=Bootstrap(section.n_bootstrap, section.seed))
        if not summary.get("test/n_usable_folds"):
            failed.append(name)
    if failed:
        log.error("probe(s) %s have no usable fold (see predictions/probe@<name>.details.json, folds[].reason)", failed)
        return 1
    return 0


def _fit_predict_targets(kind, estimator, search, embeddings: dict, data, fold: dict[str, Any]):
    """One fold of a survival / regression probe: tune on validation (− C-index / MSE), predict risk / value."""
    from slidemil.pipeline.crossval import FoldResult
    from slidemil.pipeline.probes import fit_probe
    from slidemil.pipeline.probes.regression import mean_squared_error
    from slidemil.pipeline.probes.survival import negative_c_index

    (x_train, _), (x_val, _), (x_test, _) = (_xy(embeddings, None, fold[p]) for p in ("train", "val", "test"))
    y_train, y_val, y_test = (kind.targets(data, fold[p]) for p in ("train", "val", "test"))
    loss = negative_c_index if kind.name == "survival" else mean_squared_error
    model, chosen = fit_probe(estimator, x_train, y_train, x_val, y_val, search=search, loss=loss)
    outputs = kind.outputs(model.predict(x_test), model.predict(x_train))
    return FoldResult(fold["test"], y_test, outputs, chosen=chosen)


def _xy(embeddings: dict, labels: dict[str, int] | None, slide_ids: list[str]):
    """Stacked slide embeddings [n, D'] and integer labels [n] of ``slide_ids`` (empty → shape [0, D']).

    Raises:
        ValueError: a slide's embedding holds NaN/inf (names the slides; fails the fold).
    """
    import numpy as np

    dim = len(next(iter(embeddings.values())))
    x = np.stack([embeddings[s] for s in slide_ids]) if slide_ids else np.zeros((0, dim))
    bad = [s for s, row in zip(slide_ids, x, strict=True) if not np.isfinite(row).all()]
    if bad:
        raise ValueError(f"non-finite pooled features for slides {bad}; check their features for NaN/inf")
    return x, np.array([labels[s] for s in slide_ids], dtype=int) if labels is not None else None
