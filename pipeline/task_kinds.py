"""Task kinds: what a cross-validated method predicts and how it is scored, one registry.

The fold loop (:func:`slidemil.pipeline.crossval.cross_validate`) is the same for every kind; a kind
supplies only what differs between, say, classification and survival: per-fold metrics, the predictions
table's columns, the files written at the end (metrics JSON, predictions, DVC plot data), the figures
and a one-line summary for the log. A new kind is a class registered with
``@TASK_KINDS.register("<name>")`` whose constructor takes ``(task, data)``; ``task.type`` names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from slidemil.core.registry import Registry


class TaskKind(Protocol):
    """What :func:`~slidemil.pipeline.crossval.cross_validate` needs from a task kind.

    ``y_true`` and ``outputs`` are the kind's own: for classification integer labels ``[n]`` and class
    probabilities ``[n, C]``.
    """

    name: str
    #: metrics in the DVC metrics JSON and the MLflow runs view (mean and 95% CI each), first = the one to sort by
    headline_metrics: tuple[str, ...]

    def fold_metrics(self, y_true: Any, outputs: np.ndarray) -> dict[str, float]:
        """One fold's ``test/<metric>`` values."""

    def predictions_table(self, slide_ids: Sequence[str], patient_ids: Sequence[str], y_true: Any,
                          outputs: np.ndarray, fold: int, repeat: int) -> pd.DataFrame:
        """One fold's test predictions (rows: slides) in the kind's layout."""

    def finish(self, stage: str, method: str, predictions: pd.DataFrame, folds: Sequence[Mapping[str, Any]],
               bootstrap: Bootstrap, root: str | Path = ".") -> dict[str, float]:
        """Write ``metrics|predictions|plots/<stage>@<method>``; return the flat summary (``test/n_usable_folds``
        and ``n_failed_folds`` included)."""

    def pooled(self, predictions: pd.DataFrame) -> tuple[Any, np.ndarray]:
        """Out-of-fold ``(y_true, outputs)``, one row per slide (averaged over repeats)."""

    def figures(self, y_true: Any, outputs: np.ndarray, title: str, scope: str) -> dict[str, Any]:
        """Matplotlib figures by artifact path (e.g. ``figures/roc.png``); ``scope`` e.g. ``test``, ``out-of-fold``."""

    def headline(self, summary: Mapping[str, float]) -> str:
        """A one-line summary for the log, e.g. ``test AUROC 0.81 ± 0.05 over 5 usable folds (0 failed)``."""


TASK_KINDS: Registry = Registry("task kind")


@dataclass(frozen=True)
class Bootstrap:
    """Resampling of the pooled out-of-fold predictions over slides: ``n`` resamples (0: no intervals), ``seed``."""

    n: int = 1000
    seed: int = 0


@TASK_KINDS.register("classification")
class Classification:
    """Slide classification: integer labels ``[n]``, class probabilities ``[n, C]`` (rows sum to 1).

    Metrics: :func:`slidemil.pipeline.metrics.classification_metrics` (AUROC, balanced accuracy, …,
    quadratic kappa for ordered classes); files: :func:`slidemil.pipeline.evaluation.finish_method`;
    figures: ROC and confusion matrix.
    """

    name = "classification"
    headline_metrics = ("auroc", "balanced_accuracy")

    def __init__(self, task: Any, data: Any) -> None:
        self.classes = list(data.classes)
        self.ordered = bool(task.ordered)

    def fold_metrics(self, y_true: Any, outputs: np.ndarray) -> dict[str, float]:
        from slidemil.pipeline.evaluation import fold_test_metrics

        return fold_test_metrics(np.asarray(y_true, dtype=int), outputs, self.ordered)

    def predictions_table(self, slide_ids, patient_ids, y_true, outputs, fold, repeat) -> pd.DataFrame:
        from slidemil.pipeline.evaluation import predictions_table

        return predictions_table(slide_ids, patient_ids, y_true, outputs, self.classes, fold, repeat)

    def finish(self, stage, method, predictions, folds, bootstrap, root=".") -> dict[str, float]:
        from slidemil.pipeline.evaluation import Scoring, finish_method

        scoring = Scoring(tuple(self.classes), self.ordered, bootstrap.n, bootstrap.seed)
        return finish_method(stage, method, predictions, folds, scoring, root, self.headline_metrics)

    def pooled(self, predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        from slidemil.pipeline.evaluation import pooled_by_slide

        return pooled_by_slide(predictions, self.classes)

    def figures(self, y_true, outputs, title, scope) -> dict[str, Any]:
        from slidemil.pipeline.figures import confusion_figure, roc_figure

        return {
            "figures/roc.png": roc_figure(y_true, outputs, self.classes, f"{title}: {scope} ROC"),
            "figures/confusion.png": confusion_figure(y_true, np.asarray(outputs).argmax(1), self.classes, title),
        }

    def headline(self, summary: Mapping[str, float]) -> str:
        return (f"test AUROC {summary.get('test/auroc_mean', float('nan')):.3f} ± "
                f"{summary.get('test/auroc_std', float('nan')):.3f} over {summary.get('test/n_usable_folds', 0)} "
                f"usable folds ({summary.get('n_failed_folds', 0)} failed)")


def create_task_kind(task: Any, data: Any) -> TaskKind:
    """The task kind named by ``task.type`` (default ``classification``), built for ``data``'s classes/labels.

    Raises:
        UnknownPluginError: no kind registered under that name.
    """
    from slidemil.pipeline import kinds  # noqa: F401  (registers survival and regression)

    return TASK_KINDS.get(getattr(task, "type", "classification"))(task, data)
