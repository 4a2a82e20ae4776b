"""The one cross-validation loop of every evaluating stage (train, probe, zero-shot).

:func:`cross_validate` opens the method's MLflow parent run, runs a per-fold function on each fold of
the splits inside its own child run, handles a failed fold the same way for every stage, and finishes
with the task kind's files (headline metrics JSON, details JSON, pooled predictions, DVC plot data), the parent's headline
metrics and figures, and the share of wall time spent in MLflow.

A failed fold: ``fold_fn`` raising a :class:`~slidemil.core.errors.SlidemilError`, ``ValueError`` or
``RuntimeError`` (e.g. one class in the training slides, a non-finite loss naming the slides). Its child
run ends FAILED with tags ``status=failed`` and ``reason``, the details JSON records it as
``{"fold", "repeat", "status": "failed", "reason"}``, and the other folds go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from slidemil.core.errors import SlidemilError
from slidemil.pipeline.data import MethodData
from slidemil.pipeline.evaluation import output_paths
from slidemil.pipeline.task_kinds import Bootstrap, TaskKind
from slidemil.pipeline.tracking import Run

log = logging.getLogger(__name__)

#: exceptions that fail one fold; anything else (a bug, KeyboardInterrupt) stops the stage
FOLD_ERRORS = (SlidemilError, ValueError, RuntimeError)


@dataclass
class FoldResult:
    """One fold's test predictions and what goes beside its metrics.

    Attributes:
        slide_ids: the test slides, in the order of ``y_true`` and ``outputs`` (``[n]``).
        y_true: the kind's targets (classification: integer labels ``[n]``).
        outputs: the kind's predictions (classification: class probabilities ``[n, C]``).
        chosen: hyper-parameters chosen on the fold (e.g. the linear probe's ``C``): logged as the child
            run's params and stored in the fold's record before its metrics.
        info: further per-fold values stored after the metrics (e.g. ``val/*`` of the best epoch,
            ``best_epoch``); ``fold_fn`` logs to the child run what it wants of them.
        model_id: the MLflow LoggedModel ``fold_fn`` logged (:meth:`Run.log_model`), if any: the fold's test
            metrics are linked to it.
    """

    slide_ids: Sequence[str]
    y_true: Any
    outputs: np.ndarray
    chosen: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None


#: fold_fn(fold, child_run) → FoldResult; ``fold`` is one entry of splits["folds"] (train/val/test slide IDs)
FoldFn = Callable[[dict[str, Any], Run], FoldResult]


@dataclass(frozen=True)
class Tracking:
    """Where and what the parent run logs.

    Attributes:
        experiment: MLflow experiment name; tracking_uri: store (empty → default, see
        :func:`slidemil.pipeline.tracking.tracking_uri`); params: the method's own params, logged on the
        parent and on each fold run (nested, flattened); shown: ``{flattened key: label}`` of the params the
        parent run's name shows (:func:`slidemil.pipeline.tracking.run_label`); max_model_mb: larger fold
        models are not logged to MLflow (``mlflow.max_model_mb``).
    """

    experiment: str
    tracking_uri: str
    params: Mapping[str, Any]
    shown: Mapping[str, str] = field(default_factory=dict)
    max_model_mb: float = 200


def cross_validate(
    stage: str,
    method: str,
    data: MethodData,
    fold_fn: FoldFn,
    *,
    kind: TaskKind,
    tracking: Tracking,
    bootstrap: Bootstrap,
    fold_figures: bool = False,
) -> dict[str, float]:
    """Evaluate ``method`` on every fold of ``data.splits``; write ``metrics|predictions|plots/<stage>@<method>``.

    Args:
        stage, method: e.g. ``train``, ``abmil`` → files and parent run ``train@abmil``.
        data: splits + feature store (leakage-checked); fold_fn: trains/fits and predicts one fold.
        kind: scores folds and writes the files (:mod:`slidemil.pipeline.task_kinds`).
        tracking: experiment, store and parent params; bootstrap: intervals over slides of the pooled
        out-of-fold predictions; fold_figures: also log each fold's figures on its child run.

    Returns:
        the flat summary (``test/<metric>_mean|_std|_ci_low|_ci_high``, …) written to
        ``predictions/<stage>@<method>.details.json``; the parent run logs the headline metrics' part of it.

    MLflow: the parent run is named by :func:`~slidemil.pipeline.tracking.run_label`, each child
    ``<method> fold-<k>`` with the method's params; both record the feature store and splits as datasets;
    the experiment gets the runs view of the kind's headline metrics (:func:`~slidemil.pipeline.tracking.runs_view`).

    A failed fold is recorded and the others go on (module docstring); other exceptions end the parent run
    FAILED and propagate.
    """
    from slidemil.pipeline.tracking import fold_name, parent_run, run_label, runs_view

    start = time.perf_counter()
    title = f"{stage}@{method}"
    tables: list[pd.DataFrame] = []
    records: list[dict[str, Any]] = []
    headline = headline_keys(kind)
    with parent_run(stage, method, tracking.params, data.tags, tracking.experiment, tracking.tracking_uri,
                    run_name=run_label(method, tracking.params, tracking.shown),
                    max_model_mb=tracking.max_model_mb) as parent:
        parent.set_experiment_tags(runs_view([key for key in headline if not key.endswith("_std")]))
        parent.log_datasets(data.inputs)
        for fold in data.splits["folds"]:
            k, repeat = int(fold["fold"]), int(fold.get("repeat", 0))
            record: dict[str, Any] = {"fold": k, "repeat": repeat}
            try:
                with parent.fold_run(k, repeat, params=tracking.params) as child:
                    try:
                        child.log_datasets(data.inputs)
                        result = fold_fn(fold, child)
                        metrics = kind.fold_metrics(result.y_true, result.outputs)
                        child.log_metrics(metrics, model_id=result.model_id)
                        if result.chosen:
                            child.log_params(result.chosen)
                        if fold_figures:
                            for path, fig in kind.figures(result.y_true, result.outputs,
                                                          f"{method} {fold_name(k, repeat)}", "test").items():
                                child.log_figure(fig, path)
                    except FOLD_ERRORS as exc:
                        child.set_tags({"status": "failed", "reason": str(exc)[:500]})
                        raise  # the child run ends FAILED
            except FOLD_ERRORS as exc:
                log.warning("%s fold %d (repeat %d) FAILED: %s", title, k, repeat, exc)
                records.append({**record, "status": "failed", "reason": str(exc)})
                continue
            ids = list(result.slide_ids)
            tables.append(kind.predictions_table(ids, [data.patients[s] for s in ids], result.y_true,
                                                 result.outputs, k, repeat))
            records.append({**record, "status": "ok", **result.chosen, **metrics, **result.info})
        predictions = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        summary = kind.finish(stage, method, predictions, records, bootstrap)
        parent.log_metrics({key: value for key, value in summary.items() if key in headline})
        paths = output_paths(stage, method)
        parent.log_artifact(paths["details"])
        if tables:
            parent.log_artifact(paths["predictions"])
            y, outputs = kind.pooled(predictions)
            for path, fig in kind.figures(y, outputs, title, "out-of-fold").items():
                parent.log_figure(fig, path)
        wall = time.perf_counter() - start
        parent.log_metrics({"tracking/seconds": parent.seconds, "tracking/fraction_of_wall": parent.seconds / wall})
    log.info("%s: %s; %.1f s wall time, of which MLflow took %.1f%% (creating runs, logging metrics, figures and "
             "models)", title, kind.headline(summary), wall, 100 * parent.seconds / wall)
    return summary


def headline_keys(kind: TaskKind) -> list[str]:
    """The parent run's metrics: ``test/<metric>_mean|_ci_low|_ci_high|_std`` of each of the kind's headline
    metrics (the first, ``test/auroc_mean`` for classification, first), then usable and failed folds."""
    keys = [f"test/{m}_{s}" for m in kind.headline_metrics for s in ("mean", "ci_low", "ci_high", "std")]
    return [*keys, "test/n_usable_folds", "n_failed_folds"]


def tracking_for(params: Mapping[str, Any], data: MethodData, logged: Mapping[str, Any],
                 shown: Mapping[str, str] | None = None) -> Tracking:
    """The :class:`Tracking` of a stage: experiment and store from ``params``' ``mlflow`` section (experiment
    empty → :func:`~slidemil.pipeline.tracking.experiment_name` of the task), params = ``task`` section +
    ``logged`` (only the method's own: no list of the other heads or probes); ``shown``: see :class:`Tracking`."""
    from slidemil.core.params import read_section
    from slidemil.pipeline.tracking import MlflowSection, experiment_name

    section = read_section(params, "mlflow", MlflowSection)
    task = data.splits.get("task") or {}
    name = experiment_name(section.experiment, data.splits["label"], data.classes, task.get("type", "classification"),
                           task.get("time", ""), task.get("event", ""))
    return Tracking(experiment=name,
                    tracking_uri=section.tracking_uri, params={"task": params.get("task") or {}, **logged},
                    shown=dict(shown or {}), max_model_mb=section.max_model_mb)
