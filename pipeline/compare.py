"""Paired comparison of two methods' AUROC on the same test slides (stratified paired bootstrap).

The statistic is the difference of the mean per-fold test AUROC (the ``test/auroc_mean`` every metrics
file reports), computed on the slides both methods scored. Each bootstrap replicate resamples slides
with replacement within every fold × class stratum (fold-stratified as the cross-validation is, and
class-stratified so every replicate keeps both classes and its AUROC is defined — pROC's default), and
the same resampled slides score both methods: the pairing cancels the between-slide variance the two
methods share (Efron & Tibshirani 1993, ch. 16; Robin et al., BMC Bioinformatics 2011).

AUROC here is vectorised over replicates (Mann–Whitney U from ranks): scikit-learn's ``roc_auc_score``
scores one replicate per call, which is ~100× slower for thousands of replicates × folds × methods.
Binary: positive class = column 1; multiclass: macro one-vs-rest — the definitions of
:func:`pipeline.metrics.classification_metrics`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class PairedComparison:
    """Result of :func:`paired_bootstrap_auroc` (difference = method A − method B)."""

    auroc_a: float
    auroc_b: float
    auroc_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_slides: int
    n_folds: int
    n_boot: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def auroc_replicates(y: np.ndarray, proba: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUROC of each resample ``idx`` [B, n] of slides whose labels ``y[idx[b]]`` are the same for every b.

    Args:
        y: integer labels [n_total]; proba: class probabilities [n_total, C];
        idx: slide indices [B, n], class-stratified so that ``y[idx]`` has identical rows.

    Returns:
        AUROC per replicate [B] (binary: column 1; multiclass: macro one-vs-rest); NaN when a class is absent.
    """
    layout = y[idx[0]]  # (n,)
    n_classes = proba.shape[1]
    columns = [1] if n_classes == 2 else range(n_classes)
    aucs = []
    for c in columns:
        positive = layout == c  # (n,)
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            return np.full(idx.shape[0], np.nan)
        ranks = rankdata(proba[idx, c], axis=1)  # (B, n), ties → average rank
        aucs.append((ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return np.mean(aucs, axis=0)  # (B,)


def paired_bootstrap_auroc(
    y: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    folds: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedComparison:
    """Paired, fold × class stratified bootstrap of the mean per-fold AUROC difference A − B.

    Args:
        y: integer labels [n] of the slides both methods scored; proba_a, proba_b: [n, C];
        folds: stratum of each slide [n] (fold, or repeat × fold, of its test set);
        n_boot: replicates; seed: of the resampling; level: coverage of the percentile interval.

    Returns:
        :class:`PairedComparison`. Folds missing a class (AUROC undefined) are left out, as in
        :func:`pipeline.metrics.summarize_folds`. Interval and ``p_value`` come from the same
        replicates (:func:`percentile_interval_and_p`): an interval strictly off 0 goes with p < 1 − level,
        0 strictly inside it with p ≥ 1 − level.

    Raises:
        ValueError: shapes disagree or no fold holds every class.
    """
    y = np.asarray(y).astype(int)
    proba_a, proba_b, folds = np.asarray(proba_a, float), np.asarray(proba_b, float), np.asarray(folds)
    if not (proba_a.shape == proba_b.shape == (y.size, proba_a.shape[1])) or folds.shape != y.shape:
        raise ValueError(f"shapes disagree: y {y.shape}, A {proba_a.shape}, B {proba_b.shape}, folds {folds.shape}")
    rng = np.random.default_rng(seed)
    n_classes = proba_a.shape[1]
    point_a, point_b, reps_a, reps_b = [], [], [], []
    for fold in np.unique(folds):
        members = np.flatnonzero(folds == fold)
        by_class = [members[y[members] == c] for c in range(n_classes)]
        if any(len(m) == 0 for m in by_class):
            continue
        identity = np.concatenate(by_class)[None, :]  # (1, n_fold)
        resampled = np.concatenate(
            [m[rng.integers(0, len(m), size=(n_boot, len(m)))] for m in by_class], axis=1
        )  # (B, n_fold), same class layout as identity
        point_a.append(auroc_replicates(y, proba_a, identity)[0])
        point_b.append(auroc_replicates(y, proba_b, identity)[0])
        reps_a.append(auroc_replicates(y, proba_a, resampled))
        reps_b.append(auroc_replicates(y, proba_b, resampled))
    if not point_a:
        raise ValueError("no fold holds every class: AUROC is undefined in all folds")
    diffs = np.mean(reps_a, axis=0) - np.mean(reps_b, axis=0)  # (B,)
    low, high, p_value = percentile_interval_and_p(diffs, level)
    auroc_a, auroc_b = float(np.mean(point_a)), float(np.mean(point_b))
    return PairedComparison(
        auroc_a=auroc_a,
        auroc_b=auroc_b,
        auroc_diff=auroc_a - auroc_b,
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(p_value),
        n_slides=int(y.size),
        n_folds=len(point_a),
        n_boot=n_boot,
    )


def percentile_interval_and_p(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile interval and two-sided p-value of H0: Δ = 0 from bootstrap replicates ``diffs`` [B] of Δ.

    ``p = 2·min(P*(Δ ≤ 0), P*(Δ ≥ 0))``, capped at 1, with replicates exactly at 0 counted half on each
    side (methods that rank the resampled slides identically give Δ* = 0 exactly; counting those ties
    fully on both sides inflated p). Floored at 2/(B+1): B replicates cannot resolve a smaller p.
    The interval ends are the ⌈B·α/2⌉-th order statistics from either end (α = 1 − level): lower =
    smallest Δ* with P*(Δ ≤ ·) ≥ α/2, upper = largest with P*(Δ ≥ ·) ≥ α/2 — so that, with B ≥ 2/α,
    an interval strictly above or below 0 implies p < α and an interval with 0 strictly inside implies
    p ≥ α (an end exactly at 0, possible only with ties at 0, is the boundary case).
    Efron & Tibshirani 1993, ch. 15-16.

    Returns:
        ``(ci_low, ci_high, p_value)``.
    """
    diffs = np.sort(np.asarray(diffs, float))
    n = diffs.size
    # the k-th order statistic from either end, k = ⌈n·α/2⌉ with n·α/2 rounded first: np.quantile's
    # inverted_cdf does not round (1000 × 0.025 = 25.000000000000004 → the 26th value), breaking the
    # exact agreement with p
    k = max(1, math.ceil(round(n * (1.0 - level) / 2, 9)))
    low, high = float(diffs[k - 1]), float(diffs[n - k])
    ties = float((diffs == 0).sum()) / 2
    below, above = (diffs < 0).sum() + ties, (diffs > 0).sum() + ties
    p_value = min(1.0, max(2.0 * min(below, above) / n, 2.0 / (n + 1)))
    return low, high, float(p_value)


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values [m] of ``p_values`` [m] (family-wise error control; NaN kept).

    Own code: SciPy has no Holm (only Benjamini–Hochberg) and statsmodels is not a dependency for 5 lines.
    """
    p = np.asarray(p_values, float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    steps = np.maximum.accumulate((m - np.arange(m)) * p[order])  # (m,), monotone in rank
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def paired_bootstrap_metric(
    score,
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    folds: np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedComparison:
    """Paired, fold-stratified bootstrap of the mean per-fold difference A − B of a metric that ``score`` computes
    for many resamples at once (survival: Harrell's C-index; regression: Pearson r).

    Args:
        score: ``score(y_fold, pred_fold, weights [B, n_fold]) -> [B]`` with ``weights`` the subjects' counts in
            each resample (a row of ones = the fold itself), e.g.
            :func:`slidemil.pipeline.kinds.survival_metrics.harrell_c_resampled` on ``(time, event)``;
        y: targets ``[n]`` or ``[n, 2]``; pred_a, pred_b: ``[n]``; folds: stratum of each subject ``[n]``.

    Returns:
        :class:`PairedComparison` (its ``auroc_*`` fields hold the metric); folds where the metric is undefined
        are left out.

    Raises:
        ValueError: shapes disagree or the metric is undefined in every fold.
    """
    pred_a, pred_b, folds = np.asarray(pred_a, float), np.asarray(pred_b, float), np.asarray(folds)
    if not (pred_a.shape == pred_b.shape == folds.shape == (len(y),)):
        raise ValueError(f"shapes disagree: y {np.shape(y)}, A {pred_a.shape}, B {pred_b.shape}, folds {folds.shape}")
    rng = np.random.default_rng(seed)
    point_a, point_b, reps_a, reps_b = [], [], [], []
    for fold in np.unique(folds):
        members = np.flatnonzero(folds == fold)
        ones = np.ones((1, len(members)))
        a, b = score(y[members], pred_a[members], ones)[0], score(y[members], pred_b[members], ones)[0]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        idx = rng.integers(0, len(members), (n_boot, len(members)))
        counts = np.stack([np.bincount(row, minlength=len(members)) for row in idx]).astype(float)
        point_a.append(a)
        point_b.append(b)
        reps_a.append(score(y[members], pred_a[members], counts))
        reps_b.append(score(y[members], pred_b[members], counts))
    if not point_a:
        raise ValueError("the metric is undefined in every fold")
    diffs = np.nanmean(reps_a, axis=0) - np.nanmean(reps_b, axis=0)
    low, high, p_value = percentile_interval_and_p(diffs[np.isfinite(diffs)], level)
    value_a, value_b = float(np.mean(point_a)), float(np.mean(point_b))
    return PairedComparison(auroc_a=value_a, auroc_b=value_b, auroc_diff=value_a - value_b, ci_low=float(low),
                            ci_high=float(high), p_value=float(p_value), n_slides=len(y), n_folds=len(point_a),
                            n_boot=n_boot)
