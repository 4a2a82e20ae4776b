"""Survival metrics (pure): Harrell's and Uno's C-index, time-dependent AUC, bootstrap intervals, KM groups.

Point estimates are scikit-survival's (``concordance_index_censored``, ``concordance_index_ipcw``,
``cumulative_dynamic_auc``); the log-rank test is lifelines'. Harrell's C-index is also computed here
for many resamples at once (:func:`harrell_c_resampled`, tested equal to scikit-survival), because the
paired comparison in the report scores thousands of resamples × folds × methods and one library call
per resample is too slow.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

SURVIVAL_METRICS = ("c_index", "c_index_uno", "td_auc")
TIED_TOL = 1e-8  # risks this close are a tie (scikit-survival's ``tied_tol``)


def structured(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """scikit-survival's structured array ``[("event", bool), ("time", float)]`` of ``n`` subjects."""
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event).astype(bool), time=np.asarray(time, dtype=float))


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizons: Sequence[float] = (),
                     reference: np.ndarray | None = None) -> dict[str, float]:
    """Score risks (higher = earlier event) of ``n`` subjects against their follow-up.

    Args:
        time: follow-up ``[n]`` (> 0, any unit); event: ``[n]`` 1 = event, 0 = censored; risk: ``[n]``.
        horizons: times for the cumulative/dynamic AUC (Uno et al. 2007; Hung & Chiang 2010); those outside
            the subjects' follow-up range are left out.
        reference: structured array of the subjects whose censoring distribution weighs Uno's C-index and
            the time-dependent AUC (the cohort; default: these subjects).

    Returns:
        ``c_index`` (Harrell 1982), ``c_index_uno`` (Uno et al., Stat. Med. 2011, IPCW), ``td_auc`` (mean
        over the usable horizons), ``td_auc_t<h>`` per horizon, ``n_events``. NaN where undefined (no
        comparable pair, no usable horizon).
    """
    from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, cumulative_dynamic_auc

    time, event, risk = np.asarray(time, float), np.asarray(event).astype(bool), np.asarray(risk, float)
    test = structured(time, event)
    train = test if reference is None else reference
    out = {"c_index": float("nan"), "c_index_uno": float("nan"), "td_auc": float("nan"),
           "n_events": float(event.sum())}
    if event.any() and len(time) > 1:
        try:
            out["c_index"] = float(concordance_index_censored(event, time, risk)[0])
        except ZeroDivisionError:  # no comparable pair
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out["c_index_uno"] = float(concordance_index_ipcw(train, test, risk)[0])
            except (ValueError, ZeroDivisionError):
                pass
    usable = [h for h in horizons if time.min() <= h < time.max() and (event & (time <= h)).any()]
    for h in horizons:
        out[f"td_auc_t{h:g}"] = float("nan")
    if usable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                aucs, mean = cumulative_dynamic_auc(train, test, risk, np.asarray(usable, float))
                out.update({f"td_auc_t{h:g}": float(a) for h, a in zip(usable, aucs, strict=True)})
                out["td_auc"] = float(mean)
            except ValueError:
                pass
    return out


def harrell_c_resampled(time: np.ndarray, event: np.ndarray, risk: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Harrell's C-index of ``B`` weighted copies of ``n`` subjects at once.

    Pairs as scikit-survival counts them: ``(i, j)`` is comparable when ``i`` had the event and
    ``time_j > time_i``, or ``time_j == time_i`` with ``j`` censored; concordant when ``risk_i > risk_j``,
    half when tied (within :data:`TIED_TOL`). With ``weights`` = the subjects' counts in a resample, a pair counts
    ``weights_i × weights_j`` times, which equals scikit-survival on that resample (tested).

    Args:
        time, event, risk: ``[n]``; weights: ``[B, n]`` non-negative.

    Returns:
        ``[B]`` C-index values (NaN without a comparable pair).
    """
    time, event, risk = np.asarray(time, float), np.asarray(event).astype(bool), np.asarray(risk, float)
    later = (time[None, :] > time[:, None]) | ((time[None, :] == time[:, None]) & ~event[None, :])
    comparable = later & event[:, None]
    np.fill_diagonal(comparable, False)
    gap = risk[:, None] - risk[None, :]
    tied = np.abs(gap) <= TIED_TOL
    score = ((gap > 0) & ~tied) + 0.5 * tied  # [n, n]
    w = np.asarray(weights, float)
    pairs = np.einsum("bi,ij,bj->b", w, comparable.astype(float), w)
    concordant = np.einsum("bi,ij,bj->b", w, comparable * score, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / pairs, np.nan)


def survival_bootstrap_ci(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizons: Sequence[float],
                          reference: np.ndarray | None, n_boot: int, seed: int = 0, level: float = 0.95
                          ) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval (resampling subjects) of Harrell's and Uno's C-index and the mean
    time-dependent AUC of :func:`survival_metrics`; undefined resamples are left out.

    Returns:
        ``{metric: (low, high)}``.
    """
    rng = np.random.default_rng(seed)
    n = len(time)
    idx = rng.integers(0, n, (n_boot, n))
    counts = np.stack([np.bincount(row, minlength=n) for row in idx]) if n_boot else np.zeros((0, n))
    values: dict[str, list[float]] = {"c_index": list(harrell_c_resampled(time, event, risk, counts))}
    for row in idx:
        scores = survival_metrics(time[row], event[row], risk[row], horizons, reference)
        for key in ("c_index_uno", "td_auc"):
            values.setdefault(key, []).append(scores[key])
    return {key: percentile_interval(vals, level) for key, vals in values.items()}


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """``(low, high)`` percentiles of the finite ``values`` (``(nan, nan)`` when none is finite)."""
    arr = np.asarray(values, float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(arr, [tail, 100 - tail])
    return float(low), float(high)


def risk_groups(risk: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """``"high"`` where ``risk`` > the training fold's median risk ``cut`` (per subject), else ``"low"``."""
    return np.where(np.asarray(risk, float) > np.asarray(cut, float), "high", "low")


def logrank_p(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> float:
    """Two-sided log-rank p-value between the ``high`` and ``low`` risk groups (lifelines); NaN with one group."""
    from lifelines.statistics import logrank_test

    high = np.asarray(groups) == "high"
    if high.all() or not high.any():
        return float("nan")
    result = logrank_test(time[high], time[~high], event_observed_A=event[high], event_observed_B=event[~high])
    return float(result.p_value)
