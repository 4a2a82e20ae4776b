"""Cross-validated evaluation of methods without a training loop (probes, zero-shot) on the splits' folds.

The I/O edge shared by ``slidemil probe`` and ``slidemil zeroshot``: loads the splits and the feature
store (with the leakage guard), runs a per-fold predict function on each fold's test slides, logs the
parent and fold runs to MLflow and writes the method's metrics, predictions and plot data through
:func:`pipeline.evaluation.finish_method` — the same files and layout as ``train``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from slidemil.core.params import stage_params
from slidemil.pipeline.data import MethodData
from slidemil.pipeline.evaluation import finish_method, fold_test_metrics, output_paths, predictions_table
from slidemil.pipeline.tracking import MLFLOW_DEFAULTS, parent_run

log = logging.getLogger(__name__)

#: predict(fold) → (class probabilities [n_test, C] in the order of fold["test"], extra fold info)
FoldPredict = Callable[[dict[str, Any]], tuple[np.ndarray, dict[str, Any]]]


def evaluate_folds(
    stage: str,
    name: str,
    data: MethodData,
    predict: FoldPredict,
    params: Mapping[str, Any],
    section: Mapping[str, Any],
    *,
    ordered: bool,
    n_bootstrap: int,
    seed: int,
) -> dict[str, float]:
    """Run ``predict`` on every fold, log to MLflow, write ``metrics|predictions|plots/<stage>@<name>``.

    A fold whose ``predict`` raises ``ValueError`` (e.g. one class in its training slides) is recorded
    as ``status: failed`` with the reason, and the other folds go on.

    Args:
        params: the full params (``task`` and ``mlflow`` sections); section: this stage's validated section.
        The parent run logs ``task``, ``section`` (under the stage's name) and the method name.

    Returns:
        the flat summary written to ``metrics/<stage>@<name>.json``.
    """
    mlflow_section = stage_params(params, "mlflow", MLFLOW_DEFAULTS)
    experiment = mlflow_section["experiment"] or data.splits["label"]
    logged = {"task": params.get("task") or {}, stage: dict(section), "method": f"{stage}@{name}"}
    tables: list[pd.DataFrame] = []
    fold_metrics: list[dict[str, Any]] = []
    with parent_run(stage, name, logged, data.tags, experiment, mlflow_section["tracking_uri"]) as parent:
        for fold in data.splits["folds"]:
            repeat = int(fold.get("repeat", 0))
            record: dict[str, Any] = {"fold": int(fold["fold"]), "repeat": repeat}
            with parent.fold_run(int(fold["fold"]), repeat) as child:
                test = list(fold["test"])
                try:
                    proba, extra = predict(fold)
                except ValueError as exc:
                    log.warning("%s@%s fold %s: failed: %s", stage, name, fold["fold"], exc)
                    fold_metrics.append({**record, "status": "failed", "reason": str(exc)})
                    child.set_tags({"status": "failed", "reason": str(exc)[:500]})
                    continue
                y = np.array([data.labels[sid] for sid in test])
                metrics = fold_test_metrics(y, proba, ordered)
                fold_metrics.append({**record, "status": "ok", **extra, **metrics})
                tables.append(
                    predictions_table(test, [data.patients[s] for s in test], y, proba, data.classes,
                                      fold["fold"], repeat)
                )
                child.log_metrics(metrics)
                if extra:
                    child.log_params(extra)
        predictions = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        summary = finish_method(stage, name, predictions, data.classes, fold_metrics, ordered, n_bootstrap, seed)
        parent.log_metrics(summary)
        if tables:
            parent.log_artifact(output_paths(stage, name)["predictions"])
    log.info("%s@%s: test AUROC %.3f ± %.3f over %s folds", stage, name, summary.get("test/auroc_mean", np.nan),
             summary.get("test/auroc_std", np.nan), summary.get("test/n_usable_folds", 0))
    return summary
