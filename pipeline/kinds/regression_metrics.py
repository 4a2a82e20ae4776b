"""Regression metrics (pure): Pearson r, Spearman ρ, R², MAE, and their bootstrap intervals.

Point estimates are SciPy's / scikit-learn's. Pearson r is also computed here for many resamples at
once (:func:`pearson_r_resampled`, tested equal to SciPy), for the report's paired bootstrap.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, r2_score

from slidemil.pipeline.kinds.survival_metrics import percentile_interval

REGRESSION_METRICS = ("pearson_r", "spearman_rho", "r2", "mae")


def regression_metrics(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Score predictions ``[n]`` against targets ``[n]`` (the user's units).

    Returns:
        ``pearson_r``, ``spearman_rho`` (NaN for a constant input or n < 2), ``r2`` (scikit-learn's
        coefficient of determination, NaN for n < 2), ``mae`` (in the target's units).
    """
    y, p = np.asarray(target, float), np.asarray(prediction, float)
    out = {"pearson_r": float("nan"), "spearman_rho": float("nan"), "r2": float("nan"),
           "mae": float(mean_absolute_error(y, p)) if len(y) else float("nan")}
    if len(y) >= 2:
        out["r2"] = float(r2_score(y, p))
        if np.ptp(y) > 0 and np.ptp(p) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out["pearson_r"] = float(pearsonr(y, p)[0])
                out["spearman_rho"] = float(spearmanr(y, p)[0])
    return out


def pearson_r_resampled(target: np.ndarray, prediction: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r of ``B`` weighted copies of ``n`` subjects (``weights [B, n]`` resample counts) → ``[B]``."""
    y, p, w = np.asarray(target, float), np.asarray(prediction, float), np.asarray(weights, float)
    total = w.sum(axis=1, keepdims=True)
    dy = y[None, :] - (w @ y)[:, None] / total
    dp = p[None, :] - (w @ p)[:, None] / total
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * dy * dp).sum(1) / np.sqrt((w * dy**2).sum(1) * (w * dp**2).sum(1))


def regression_bootstrap_ci(target: np.ndarray, prediction: np.ndarray, n_boot: int, seed: int = 0,
                            level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval (resampling subjects) of every metric of :func:`regression_metrics`."""
    rng = np.random.default_rng(seed)
    y, p = np.asarray(target, float), np.asarray(prediction, float)
    values: dict[str, list[float]] = {m: [] for m in REGRESSION_METRICS}
    for _ in range(n_boot):
        row = rng.integers(0, len(y), len(y))
        for key, value in regression_metrics(y[row], p[row]).items():
            values[key].append(value)
    return {key: percentile_interval(vals, level) for key, vals in values.items()}
