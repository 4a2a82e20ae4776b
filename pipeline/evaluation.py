"""Method-agnostic evaluation outputs: the predictions table, the metrics JSON, DVC plot data.

Every evaluated method (``train@<head>``, ``probe@<kind>``, ``zeroshot``) ends with
:func:`finish_method`, so DVC and the report read the same files for all of them:

- ``predictions/<stage>@<name>.csv``: slide_id, patient_id, fold, repeat, label, y_true, prob_<class>…, pred
- ``metrics/<stage>@<name>.json`` (DVC metrics, :func:`headline_numbers`): each headline metric's test mean
  over usable folds and pooled 95% interval (``auroc``, ``auroc_low``, ``auroc_high``, …) and
  ``n_usable_folds``, so ``dvc metrics show`` and ``dvc exp show`` stay a line per method
- ``predictions/<stage>@<name>.details.json``: everything else, flat ``<split>/<metric>_mean|_std|_ci_low|
  _ci_high`` keys + ``folds`` (per-fold values and failures); the report reads it
- ``plots/<stage>@<name>/roc.csv`` (fpr, tpr, threshold) and ``confusion.csv`` (slide_id, actual, predicted)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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



#: decimals of the plot data DVC tracks in git (roc.csv, KM and scatter tables): float32 last-bit differences
#: between runs (the order of reductions in multi-threaded CPU kernels) would otherwise show as changes in
#: ``git diff`` and ``dvc plots diff`` although no result changed
PLOT_DECIMALS = 6

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
        "details": root / "predictions" / f"{key}.details.json",
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
    headline: Sequence[str] = ("auroc", "balanced_accuracy"),
) -> dict[str, float]:
    """Write a method's metrics JSON, details JSON, predictions table and DVC plot data; return the summary.

    Args:
        stage, name: e.g. ``train``, ``abmil`` → files named ``train@abmil``.
        predictions: test predictions of all usable folds (:func:`predictions_table`, concatenated).
        fold_metrics: one dict per fold (usable or not): ``fold``, ``repeat``, ``status`` (``ok`` or
            ``failed``), optional ``reason``, and ``<split>/<metric>`` values; stored as ``folds``.
        scoring: classes, ordinal or not, bootstrap (:class:`Scoring`).
        root: folder the ``metrics/``, ``predictions/``, ``plots/`` paths are relative to.
        headline: metrics of the DVC metrics JSON (:func:`headline_numbers`).

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
    write_csv(paths["roc"], roc.round(PLOT_DECIMALS))
    write_csv(paths["confusion"], confusion_table(predictions) if len(predictions) else
              pd.DataFrame(columns=["slide_id", "actual", "predicted"]))
    write_method_metrics(paths, summary, fold_metrics, headline)
    return summary


def headline_numbers(summary: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, float | None]:
    """The DVC metrics of a method: for each of ``metrics`` (a task kind's ``headline_metrics``) its test mean
    over usable folds as ``<metric>`` and the pooled 95% bootstrap interval as ``<metric>_low|_high``
    (``test/<metric>_ci_low|_ci_high`` in the details and MLflow), then ``n_usable_folds``; a value that is
    absent or not finite is ``None`` (JSON ``null``).

    Short keys on purpose: ``dvc metrics show`` prints one column per key, and these keep a method on one
    160-column line.
    """
    out: dict[str, float | None] = {}
    for metric in metrics:
        for suffix, key in (("mean", metric), ("ci_low", f"{metric}_low"), ("ci_high", f"{metric}_high")):
            out[key] = _finite_or_none(summary.get(f"test/{metric}_{suffix}"))
    out["n_usable_folds"] = int(summary.get("test/n_usable_folds") or 0)
    return out


def write_method_metrics(paths: Mapping[str, Path], summary: Mapping[str, Any],
                         fold_metrics: Sequence[Mapping[str, Any]], headline: Sequence[str]) -> None:
    """Write ``paths["metrics"]`` (:func:`headline_numbers`) and ``paths["details"]`` (``summary`` + ``folds``),
    atomically; every task kind's ``finish`` ends here."""
    write_json(paths["details"], {**summary, "folds": list(fold_metrics)})
    write_json(paths["metrics"], headline_numbers(summary, headline))


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def fold_test_metrics(y_true: np.ndarray, proba: np.ndarray, ordered: bool = False) -> dict[str, float]:
    """``test/<metric>`` values of one fold; a one-class fold gives AUROC NaN with a ``OneClassWarning``."""
    return {f"test/{k}": v for k, v in classification_metrics(y_true, proba, ordered).items()}


def _numeric(fold_metrics: Sequence[dict[str, Any]], split: str) -> list[dict[str, float]]:
    prefix = f"{split}/"
    return [
        {k: float(v) for k, v in m.items() if k.startswith(prefix) and isinstance(v, (int, float))}
        for m in fold_metrics
    ]
