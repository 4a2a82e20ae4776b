"""Method-agnostic evaluation outputs: the predictions table, the metrics JSON, DVC plot data.

Every evaluated method (``train@<head>``, ``probe@<kind>``, ``zeroshot``) ends with
:func:`finish_method`, so DVC and the report read the same files for all of them:

- ``predictions/<stage>@<name>.csv``: slide_id, patient_id, fold, repeat, label, y_true, prob_<class>…, pred
- ``metrics/<stage>@<name>.json``: flat ``<split>/<metric>_mean|_std|_ci_low|_ci_high`` keys + ``folds``
- ``plots/<stage>@<name>/roc.csv`` (fpr, tpr, threshold) and ``confusion.csv`` (slide_id, actual, predicted)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve
from sklearn.preprocessing import label_binarize

from slidemil.core.atomic import write_csv, write_json
from slidemil.pipeline.metrics import bootstrap_ci, classification_metrics, summarize_folds

PREDICTION_COLUMNS = ("slide_id", "patient_id", "fold", "repeat", "label", "y_true")


def predictions_table(
    slide_ids: Sequence[str],
    patient_ids: Sequence[str],
    y_true: Sequence[int],
    proba: np.ndarray,
    classes: Sequence[str],
    fold: int,
    repeat: int = 0,
) -> pd.DataFrame:
    """One fold's test predictions in the shared layout.

    Args:
        slide_ids, patient_ids: ``(n,)``; y_true: integer labels ``(n,)``; proba: ``(n, C)`` class
        probabilities in the order of ``classes``; fold, repeat: the fold's indices.

    Returns:
        columns slide_id, patient_id, fold, repeat, label (class name), y_true, ``prob_<class>`` per
        class, pred (class name of the argmax).
    """
    proba = np.asarray(proba, dtype=float)
    y = np.asarray(y_true, dtype=int)
    names = np.asarray(list(classes), dtype=object)
    table = pd.DataFrame(
        {
            "slide_id": list(slide_ids),
            "patient_id": list(patient_ids),
            "fold": int(fold),
            "repeat": int(repeat),
            "label": names[y],
            "y_true": y,
        }
    )
    for j, name in enumerate(classes):
        table[f"prob_{name}"] = proba[:, j]
    table["pred"] = names[proba.argmax(axis=1)]
    return table


def probabilities(predictions: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """The ``prob_<class>`` columns as an ``(n, C)`` array."""
    return predictions[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)


def pooled_by_slide(predictions: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions, one row per slide: probabilities averaged over repeats.

    Returns ``(y_true (n_slides,), proba (n_slides, C))``; with one repeat of k-fold CV this is each
    slide's single test prediction.
    """
    cols = [f"prob_{c}" for c in classes]
    grouped = predictions.groupby("slide_id", sort=True)
    return grouped["y_true"].first().to_numpy(dtype=int), grouped[cols].mean().to_numpy(dtype=float)


@dataclass(frozen=True)
class Scoring:
    """How a classification method's predictions are scored.

    Attributes:
        classes: class names in index order; ordered: ordinal classes (adds quadratic kappa);
        n_bootstrap: resamples over slides of the pooled out-of-fold predictions for the 95% intervals (0: none);
        seed: seed of the resampling.
    """

    classes: tuple[str, ...]
    ordered: bool = False
    n_bootstrap: int = 1000
    seed: int = 0


def summarize_method(
    predictions: pd.DataFrame, fold_metrics: Sequence[dict[str, Any]], scoring: Scoring
) -> dict[str, float]:
    """Flat summary: mean ± std over usable folds for each split in ``fold_metrics`` (keys ``<split>/<metric>``)
    and, for ``test``, 95% bootstrap intervals over slides of the pooled out-of-fold predictions.

    Folds whose ``status`` is not ``ok`` are left out; ``scoring.n_bootstrap = 0`` skips the intervals.
    """
    usable = [m for m in fold_metrics if m.get("status", "ok") == "ok"]
    splits = sorted({k.split("/", 1)[0] for m in usable for k in m if "/" in k})
    ci = None
    if scoring.n_bootstrap > 0 and len(predictions):
        y, proba = pooled_by_slide(predictions, scoring.classes)
        ci = bootstrap_ci(y, proba, n_boot=scoring.n_bootstrap, seed=scoring.seed, ordered=scoring.ordered)
    summary: dict[str, float] = {}
    for split in splits or ["test"]:
        summary.update(summarize_folds(_numeric(usable, split), split=split, ci=ci if split == "test" else None))
    summary["n_failed_folds"] = len(fold_metrics) - len(usable)
    return summary


def roc_table(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """ROC points for ``dvc plots``: binary → the positive class (column 1); multiclass → micro-average.

    Returns columns fpr, tpr, threshold; empty when the labels hold one class.
    """
    y = np.asarray(y_true, dtype=int)
    if np.unique(y).size < 2:
        return pd.DataFrame(columns=["fpr", "tpr", "threshold"])
    if len(classes) == 2:
        fpr, tpr, thr = roc_curve(y, proba[:, 1])
    else:
        onehot = label_binarize(y, classes=list(range(len(classes))))
        fpr, tpr, thr = roc_curve(onehot.ravel(), np.asarray(proba).ravel())
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.clip(thr, 0.0, 1.0)})


def confusion_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per-slide actual/predicted class names, the input of DVC's ``confusion`` plot template."""
    return pd.DataFrame(
        {"slide_id": predictions["slide_id"], "actual": predictions["label"], "predicted": predictions["pred"]}
    )


def output_paths(stage: str, name: str, root: str | Path = ".") -> dict[str, Path]:
    """Where :func:`finish_method` writes, relative to ``root`` (the stage's cwd)."""
    root = Path(root)
    key = f"{stage}@{name}"
    return {
        "metrics": root / "metrics" / f"{key}.json",
        "predictions": root / "predictions" / f"{key}.csv",
        "roc": root / "plots" / key / "roc.csv",
        "confusion": root / "plots" / key / "confusion.csv",
    }


def finish_method(
    stage: str,
    name: str,
    predictions: pd.DataFrame,
    fold_metrics: Sequence[dict[str, Any]],
    scoring: Scoring,
    root: str | Path = ".",
) -> dict[str, float]:
    """Write a method's metrics JSON, predictions table and DVC plot data; return the flat summary.

    Args:
        stage, name: e.g. ``train``, ``abmil`` → files named ``train@abmil``.
        predictions: test predictions of all usable folds (:func:`predictions_table`, concatenated).
        fold_metrics: one dict per fold (usable or not): ``fold``, ``repeat``, ``status`` (``ok`` or
            ``failed``), optional ``reason``, and ``<split>/<metric>`` values; stored as ``folds``.
        scoring: classes, ordinal or not, bootstrap (:class:`Scoring`).
        root: folder the ``metrics/``, ``predictions/``, ``plots/`` paths are relative to.

    All files are written atomically; the summary holds ``test/<metric>_mean|_std|_ci_low|_ci_high``,
    ``test/n_usable_folds`` and ``n_failed_folds``.
    """
    paths = output_paths(stage, name, root)
    summary = summarize_method(predictions, fold_metrics, scoring)
    classes = scoring.classes
    if len(predictions):
        y, proba = pooled_by_slide(predictions, classes)
        roc = roc_table(y, proba, classes)
    else:
        roc = roc_table(np.zeros(0, dtype=int), np.zeros((0, len(classes))), classes)
    write_csv(paths["predictions"], predictions)
    write_csv(paths["roc"], roc)
    write_csv(paths["confusion"], confusion_table(predictions) if len(predictions) else
              pd.DataFrame(columns=["slide_id", "actual", "predicted"]))
    write_json(paths["metrics"], {**summary, "folds": list(fold_metrics)})
    return summary


def fold_test_metrics(y_true: np.ndarray, proba: np.ndarray, ordered: bool = False) -> dict[str, float]:
    """``test/<metric>`` values of one fold; a one-class fold gives AUROC NaN with a ``OneClassWarning``."""
    return {f"test/{k}": v for k, v in classification_metrics(y_true, proba, ordered).items()}


def _numeric(fold_metrics: Sequence[dict[str, Any]], split: str) -> list[dict[str, float]]:
    prefix = f"{split}/"
    return [
        {k: float(v) for k, v in m.items() if k.startswith(prefix) and isinstance(v, (int, float))}
        for m in fold_metrics
    ]
