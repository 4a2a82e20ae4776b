"""Linear, kNN and prototype probes on pooled slide embeddings, on the same folds as `train`.

Each slide's stored patch features are pooled into one embedding (probe.pooling: mean | max | mean+max);
a tile/ROI dataset is a cohort of 1-patch bags and needs nothing else. Per fold, each probe is fitted on
the training slides (the linear probe's C chosen on the validation slides from probe.c_grid by
log-loss) and scored on the test slides. Writes, per probe, metrics/probe@<name>.json,
predictions/probe@<name>.csv and plots/probe@<name>/, and MLflow runs (a parent per probe, a child per fold).

Survival tasks use the ``cox`` (penalty from probe.cox_alphas, by validation C-index) and ``knn_risk`` probes,
regression tasks ``ridge`` (probe.ridge_alphas, by validation MSE) and ``knn_regression``; a probe of
probe.probes that does not support the task kind is skipped with a warning. At ``task.level: patient`` the
units are patients (all their slides pooled together).

`slidemil probe --probe knn` runs one probe (a DVC matrix stage over probe.probes); without --probe
every probe of probe.probes runs.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from slidemil.core.errors import ParamsError
from slidemil.core.params import stage_params

HELP = "linear / kNN / prototype probes on pooled slide embeddings → metrics/probe@<name>.json"

DEFAULTS: dict[str, Any] = {
    "features": "",  # feature store; empty → data/features/<extract.encoder>.zarr
    "splits": "data/splits.json",  # folds (split)
    "probes": ["linear", "knn", "prototype"],  # probes run without --probe
    "pooling": "mean",  # patch features → slide embedding: mean | max | mean+max
    "c_grid": [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1, 1.0, 1.0e1, 1.0e2],  # linear: inverse regularisation, ascending
    "class_weight": "balanced",  # linear: balanced | none
    "knn_k": 20,  # knn: neighbours (clipped to the number of training slides)
    "prototype_temperature": 0.1,  # prototype: softmax(-d²/T); changes calibration only
    "cox_alphas": [1.0, 0.3, 0.1, 0.03, 0.01],  # cox (survival): penalties, strongest first (chosen on validation)
    "cox_l1_ratio": 0.5,  # cox: share of the L1 penalty in the elastic net
    "ridge_alphas": [1.0e4, 1.0e3, 1.0e2, 1.0e1, 1.0],  # ridge (regression): penalties, strongest first
    "n_bootstrap": 1000,  # bootstrap resamples of the pooled test predictions (95% intervals)
    "seed": 0,
}

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe", default=None, help="run only this probe (default: every one of probe.probes)")


def run(params: dict[str, Any], args: argparse.Namespace) -> int:
    """Evaluate the probes; returns 0, or 1 when a probe has no usable fold (user errors raise SlidemilError)."""
    from slidemil.pipeline.crossval import FoldResult, cross_validate, tracking_for
    from slidemil.pipeline.data import features_path, load_method_data
    from slidemil.pipeline.kinds import kind_for
    from slidemil.pipeline.probes import (
        POOLINGS,
        PROBES,
        create_probe,
        fit_probe,
        pool_bag,
        predict_proba_all,
        probe_kinds,
    )
    from slidemil.splits.task import load_task

    section = stage_params(params, "probe", DEFAULTS)
    section["features"] = features_path(section["features"], params)
    task = load_task(params)
    names = [args.probe] if getattr(args, "probe", None) else list(section["probes"])
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise ParamsError(f"unknown probe(s) {unknown}; registered: {', '.join(PROBES.names())}")
    if section["pooling"] not in POOLINGS:
        raise ParamsError(f"probe.pooling {section['pooling']!r} unknown; choose one of {', '.join(POOLINGS)}")
    if section["class_weight"] not in ("balanced", "none", None):
        raise ParamsError(f"probe.class_weight must be 'balanced' or 'none', got {section['class_weight']!r}")
    c_grid = sorted(float(c) for c in section["c_grid"])
    if not c_grid or min(c_grid) <= 0:
        raise ParamsError(f"probe.c_grid must hold positive values, got {section['c_grid']!r}")

    skipped = {n: f"supports {', '.join(probe_kinds(n))}, not {task.type}" for n in names
               if task.type not in probe_kinds(n)}
    for name, reason in skipped.items():
        log.warning("probe %s skipped: it %s", name, reason)
    names = [n for n in names if n not in skipped]
    if not names:
        fitting = [n for n in PROBES.names() if task.type in probe_kinds(n)]
        raise ParamsError(f"no probe of probe.probes supports a {task.type} task; use {', '.join(fitting)}")
    data = load_method_data(section["features"], section["splits"])
    log.info("pooling %d units (%s)", len(data.slides()), section["pooling"])
    embeddings = {sid: pool_bag(data.load(sid)[0], section["pooling"]) for sid in data.slides()}
    n_classes = len(data.classes)
    hyper = {
        "linear": {"class_weight": None if section["class_weight"] in ("none", None) else "balanced"},
        "knn": {"n_neighbors": int(section["knn_k"])},
        "prototype": {"temperature": float(section["prototype_temperature"])},
        "cox": {"l1_ratio": float(section["cox_l1_ratio"])},
        "knn_risk": {"n_neighbors": int(section["knn_k"])},
        "knn_regression": {"n_neighbors": int(section["knn_k"])},
    }

    search = {"linear": ("C", c_grid),  # hyper-parameter chosen on each fold's validation slides
              "cox": ("alpha", [float(a) for a in section["cox_alphas"]]),
              "ridge": ("alpha", [float(a) for a in section["ridge_alphas"]])}
    kind = kind_for(params, task, data)
    failed = []
    for name in names:
        estimator = create_probe(name, **hyper.get(name, {}))

        def fit_predict(fold: dict[str, Any], child, estimator=estimator, name=name) -> FoldResult:
            if kind.name != "classification":
                return _fit_predict_targets(kind, estimator, search.get(name), embeddings, data, fold)
            train, val, test = (_xy(embeddings, data.labels, fold[part]) for part in ("train", "val", "test"))
            model, chosen = fit_probe(estimator, *train, *val, search=search.get(name))
            return FoldResult(fold["test"], test[1], predict_proba_all(model, test[0], n_classes), chosen=chosen)

        tracking = tracking_for(params, data, {"probe": section, "method": f"probe@{name}"})
        summary = cross_validate("probe", name, data, fit_predict, kind=kind, tracking=tracking,
                                 n_bootstrap=int(section["n_bootstrap"]), seed=int(section["seed"]))
        if not summary.get("test/n_usable_folds"):
            failed.append(name)
    if failed:
        log.error("probe(s) %s have no usable fold (see metrics/probe@<name>.json, folds[].reason)", failed)
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
