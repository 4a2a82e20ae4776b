"""Figures for MLflow: ROC curves, confusion matrix, attention heatmaps on slide thumbnails.

The plotting functions are pure: they take arrays and return a matplotlib ``Figure`` (Agg backend,
no display); the caller logs and closes it. :func:`read_slide_view` is the one reader: it fetches the
thumbnail and the top-attended patches of a slide for :func:`attention_heatmap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass
class SlideView:
    """What a heatmap is drawn on.

    Attributes:
        thumbnail: RGB ``[h, w, 3]`` uint8, or None (heatmap drawn on a blank canvas).
        scale: thumbnail pixels per level-0 pixel (None without a thumbnail).
        patches: RGB patches ``[p, p, 3]`` of the top-attended positions, in attention order.
    """

    thumbnail: np.ndarray | None = None
    scale: float | None = None
    patches: list[np.ndarray] = field(default_factory=list)


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


def attention_percentiles(attention: np.ndarray) -> np.ndarray:
    """Each patch's attention as its percentile rank within the slide, in [0, 1] (ties share their mean rank).

    Attention weights are skewed (a few patches take most of the mass), so min-max scaling paints one or
    two patches red and the rest blue; ranks spread the colour scale over the slide's patches and do not
    depend on the bag size. One patch → 0.5. ``attention``: ``[N]`` → ``[N]``.
    """
    from scipy.stats import rankdata

    att = np.asarray(attention, dtype=float).reshape(-1)
    if att.size < 2:
        return np.full_like(att, 0.5)
    return (rankdata(att) - 1) / (att.size - 1)


def attention_heatmap(
    coords: np.ndarray,
    attention: np.ndarray,
    patch_size_level0: float,
    view: SlideView,
    top_k: int = 4,
    title: str = "",
) -> Figure:
    """Attention of one bag drawn over its slide thumbnail, with its top-attended patches below.

    Args:
        coords: ``[N, 2]`` int (x, y) top-left corners in level-0 pixels.
        attention: ``[N]`` attention weights (any scale; shown as percentiles within the slide,
            :func:`attention_percentiles`).
        patch_size_level0: patch side in level-0 pixels.
        view: thumbnail + scale and top patches (:func:`read_slide_view`); without a thumbnail the
            patches are drawn in level-0 coordinates on a blank canvas.
        top_k: how many top patches to show (at most ``len(view.patches)`` when given).
    """
    coords = np.asarray(coords, dtype=float)
    att = np.asarray(attention, dtype=float).reshape(-1)
    norm = attention_percentiles(att)
    n_top = min(top_k, len(view.patches)) if view.patches else 0
    fig = plt.figure(figsize=(8, 8 if n_top else 6))
    grid = fig.add_gridspec(2 if n_top else 1, max(n_top, 1), height_ratios=[3, 1] if n_top else [1])
    ax = fig.add_subplot(grid[0, :])
    scale = view.scale if view.thumbnail is not None and view.scale else 1.0
    if view.thumbnail is not None:
        ax.imshow(view.thumbnail)
    else:
        ax.set_facecolor("white")
        ax.invert_yaxis()
    # One coloured square per patch (the grid is regular, so squares tile the tissue).
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    side = patch_size_level0 * scale
    squares = [Rectangle((x * scale, y * scale), side, side) for x, y in coords]
    collection = PatchCollection(squares, cmap="jet", alpha=0.45, linewidths=0)
    collection.set_array(norm)
    collection.set_clim(0, 1)
    ax.add_collection(collection)
    if view.thumbnail is None:
        ax.set_xlim(coords[:, 0].min() - side, coords[:, 0].max() + 2 * side)
        ax.set_ylim(coords[:, 1].max() + 2 * side, coords[:, 1].min() - side)
        ax.set_aspect("equal")
    fig.colorbar(collection, ax=ax, fraction=0.03, label="attention percentile within the slide")
    ax.set_title(title)
    ax.axis("off")
    order = np.argsort(-att)
    for i in range(n_top):
        sub = fig.add_subplot(grid[1, i])
        sub.imshow(view.patches[i])
        x, y = coords[order[i]]
        sub.set_title(f"#{i + 1} ({int(x)}, {int(y)})", fontsize=8)
        sub.axis("off")
    return fig


def read_slide_view(
    slide_path: str,
    coords: np.ndarray,
    attention: np.ndarray,
    attrs: dict,
    top_k: int = 4,
    max_size: int = 1024,
) -> SlideView:
    """Read a slide's thumbnail and its ``top_k`` most-attended patches (via :mod:`extract.slide`).

    Args:
        slide_path: the slide file (features attrs ``slide_path``); coords ``[N, 2]`` level-0 px;
        attention ``[N]``; attrs: the slide's store attrs (``level``, ``read_size``, ``patch_size``).

    Raises:
        pipeline.errors.SlideError: the slide cannot be opened or read.
    """
    from slidemil.extract.slide import open_slide, read_patch

    order = np.argsort(-np.asarray(attention, dtype=float).reshape(-1))[:top_k]
    with open_slide(slide_path) as slide:
        thumbnail = np.asarray(slide.thumbnail(max_size))
        scale = thumbnail.shape[1] / slide.dimensions[0]
        patches = [
            read_patch(slide, int(coords[i, 0]), int(coords[i, 1]), int(attrs["level"]),
                       int(attrs["read_size"]), int(attrs["patch_size"]))
            for i in order
        ]
    return SlideView(thumbnail=thumbnail, scale=scale, patches=patches)
