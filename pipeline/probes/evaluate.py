"""Cross-validated evaluation of methods without a training loop (probes, zero-shot) on the splits' folds.

The I/O edge shared by ``slidemil probe`` and ``slidemil zeroshot``: loads the splits and the feature
store (with the leakage guard), runs a per-fold predict function on each fold's test slides, logs the
parent and fold runs to MLflow and writes the method's metrics, predictions and plot data through
:func:`pipeline.evaluation.finish_method` — the same files and layout as ``train``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluation import finish_method, fold_test_metrics, output_paths, predictions_table
from pipeline.params import stage_params
from pipeline.tracking import MLFLOW_DEFAULTS, file_digest, json_digest, parent_run, provenance_tags

log = logging.getLogger(__name__)

#: predict(fold) → (class probabilities [n_test, C] in the order of fold["test"], extra fold info)
FoldPredict = Callable[[dict[str, Any]], tuple[np.ndarray, dict[str, Any]]]


@dataclass
class MethodData:
    """Splits + feature store of one evaluation, with integer labels per slide."""

    splits: dict[str, Any]
    store: Any  # extract.store.FeatureStore
    classes: list[str]
    labels: dict[str, int]  # slide_id → class index
    patients: dict[str, str]  # slide_id → patient_id
    tags: dict[str, str]  # provenance tags for MLflow

    def slides(self) -> list[str]:
        """Every slide in any part of any fold, sorted."""
        return sorted({sid for f in self.splits["folds"] for part in ("train", "val", "test") for sid in f[part]})


def features_path(configured: str, params: Mapping[str, Any]) -> str:
    """The feature store to read: ``configured``, else ``<extract.output>/<extract.encoder>.zarr`` (as ``train``)."""
    if configured:
        return configured
    extract = params.get("extract") or {}
    name = str(extract.get("encoder", "conch_v1"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return str(Path(extract.get("output", "data/features")) / f"{safe}.zarr")


def load_method_data(features: str | Path, splits_path: str | Path) -> MethodData:
    """Open the feature store and the splits file and check them against each other.

    Raises:
        StoreError: store or splits missing/invalid. LeakageError: patient in two parts of a fold, or a
            split slide missing from the features.
    """
    from extract.store import open_features
    from splits.guard import check_splits
    from splits.io import load_splits

    splits = load_splits(splits_path)
    store = open_features(features)
    check_splits(splits, set(store.slide_ids))
    classes = list(splits["classes"])
    index = {name: i for i, name in enumerate(classes)}
    data = MethodData(
        splits=splits,
        store=store,
        classes=classes,
        labels={sid: index[name] for sid, name in splits["labels"].items()},
        patients=dict(splits["patients"]),
        tags={},
    )
    data.tags = provenance_tags(
        weights_sha256=store.weights_sha256,
        features_digest=json_digest({sid: store.attrs(sid) for sid in data.slides()}),
        splits_digest=file_digest(splits_path),
        encoder_id=store.encoder_id,
    )
    return data


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
