"""Figures for MLflow: ROC curves, confusion matrix (heatmaps of slides: :mod:`pipeline.heatmaps`).

The plotting functions are pure: they take arrays and return a matplotlib ``Figure`` (Agg backend,
no display); the caller logs and closes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402


def roc_figure(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """ROC curves: binary → the positive class (``classes[1]``); multiclass → one-vs-rest per class.

    Args:
        y_true: ``(n,)`` integer labels; proba: ``(n, C)``; classes: names in index order.
    Classes absent from ``y_true`` (or present alone) are skipped; with none left the axes say so.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    y = np.asarray(y_true, dtype=int)
    targets = [1] if len(classes) == 2 else list(range(len(classes)))
    drawn = 0
    for j in targets:
        positive = y == j
        if positive.all() or not positive.any():
            continue
        RocCurveDisplay.from_predictions(positive, proba[:, j], name=str(classes[j]), ax=ax, plot_chance_level=drawn == 0)
        drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
    # scikit-learn labels the axes "(Positive label: 1)"; name the classes instead
    if len(classes) == 2:
        ax.set_xlabel(f"false positive rate ({classes[0]} slides called {classes[1]})")
        ax.set_ylabel(f"true positive rate ({classes[1]} slides called {classes[1]})")
    else:
        ax.set_xlabel("false positive rate (other classes' slides called the class)")
        ax.set_ylabel("true positive rate (the class's slides called the class)")
    ax.set_title(title or "ROC (out-of-fold test predictions)")
    fig.tight_layout()
    return fig


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), counts."""
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(len(classes))), display_labels=list(classes), ax=ax, colorbar=False
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix")
    fig.tight_layout()
    return fig


def is_informative(attention: np.ndarray | None) -> bool:
    """Whether an attention vector ``[N]`` is worth a heatmap: present, finite and not constant.

    Heads without attention return None or a uniform vector (``mean_mlp``: ``1/N`` per instance), whose
    heatmap would be one flat colour.
    """
    if attention is None:
        return False
    att = np.asarray(attention, dtype=float).reshape(-1)
    if not att.size or not np.isfinite(att).all():
        return False
    return not np.allclose(att, att[0], rtol=1e-6, atol=0.0)
