"""Choosing one hyper-parameter of a probe on a fold's validation set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.metrics import log_loss


def select_on_validation(
    estimator: ClassifierMixin,
    param: str,
    grid: Sequence[Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    loss: Callable[[Any, np.ndarray, np.ndarray], float] | None = None,
) -> tuple[Any, ClassifierMixin, dict[Any, float]]:
    """Fit ``estimator`` on the training slides for each value of ``param`` in ``grid`` and keep the
    value with the lowest validation log-loss (or ``loss(model, x_val, y_val)``, e.g. − C-index for a survival
    probe; ties → the earlier grid value, so list the strongest regularisation first).

    Log-loss rather than AUROC: it is defined on a validation set holding one class and it does not tie
    on the few slides a validation fold has.

    Args:
        x_train, x_val: embeddings of shape (n_samples, n_features).
        y_train, y_val: integer labels of shape (n_samples,).

    Returns:
        (best value, estimator fitted on the training slides with it, {value: validation log-loss}).

    Raises:
        ValueError: empty grid or empty validation set.
    """
    if not grid:
        raise ValueError(f"empty grid for {param!r}")
    if len(x_val) == 0:
        raise ValueError("empty validation set: cannot choose a hyper-parameter")
    labels = np.unique(np.concatenate([y_train, y_val])) if loss is None else None
    losses: dict[Any, float] = {}
    best_value, best_model, best_loss = None, None, np.inf
    for value in grid:
        model = clone(estimator).set_params(**{param: value}).fit(x_train, y_train)
        if loss is None:
            proba = np.zeros((len(x_val), len(labels)))
            proba[:, np.searchsorted(labels, model.classes_)] = model.predict_proba(x_val)
            value_loss = float(log_loss(y_val, proba, labels=labels))
        else:
            value_loss = float(loss(model, x_val, y_val))
        losses[value] = value_loss
        if value_loss < best_loss:
            best_value, best_model, best_loss = value, model, value_loss
    return best_value, best_model, losses


def fit_probe(
    estimator: ClassifierMixin,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    search: tuple[str, Sequence[Any]] | None = None,
    loss: Callable[[Any, np.ndarray, np.ndarray], float] | None = None,
) -> tuple[ClassifierMixin, dict[str, Any]]:
    """Fit a fresh copy of ``estimator`` on one fold's training slides, tuning ``search = (param, grid)``
    on its validation slides when the grid has more than one value.

    Args:
        x_train, x_val: embeddings (n_samples, n_features); y_train, y_val: integer labels (n_samples,), or the
        kind's targets when ``loss`` is given (see :func:`select_on_validation`).

    Returns:
        (fitted probe, ``{param: chosen value}`` or ``{}``).

    Raises:
        ValueError: one class in the training slides; a grid to search but no validation slides.
    """
    if loss is None and np.unique(y_train).size < 2:
        raise ValueError(f"the training slides hold one class only (label {int(y_train[0])})")
    if search is None:
        return clone(estimator).fit(x_train, y_train), {}
    param, grid = search
    if len(grid) == 1:
        return clone(estimator).set_params(**{param: grid[0]}).fit(x_train, y_train), {param: grid[0]}
    if len(x_val) == 0:
        raise ValueError(f"no validation slides to choose {param} from {list(grid)}; set split.val_fraction > 0 "
                         "or give a single value")
    best, model, _ = select_on_validation(estimator, param, grid, x_train, y_train, x_val, y_val, loss)
    return model, {param: best}
