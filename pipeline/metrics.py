"""Slide-level classification metrics, bootstrap intervals over slides, and fold summaries.

Pure functions (no logging, no files); every method (MIL heads, probes, zero-shot) is scored here so
their numbers are comparable. Point estimates are scikit-learn's; the expected calibration error is
computed here because scikit-learn has no multiclass ECE (``calibration_curve`` is binary only), and
bootstrap resamples are scored in closed form (:func:`resampled_metrics`, tested equal to scikit-learn)
because a scikit-learn call per resample is too slow.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

METRICS = ("auroc", "balanced_accuracy", "accuracy", "f1_weighted", "kappa", "brier", "ece")
ORDERED_METRICS = ("kappa_quadratic",)
ECE_BINS = 15
_BOOT_CHUNK = 200  # resamples scored at once (memory: chunk × n_slides floats)


class OneClassWarning(UserWarning):
    """The labels hold a single class, so AUROC (and kappa) are undefined and set to NaN."""


def classification_metrics(y_true: Sequence[int], proba: np.ndarray, ordered: bool = False) -> dict[str, float]:
    """Score class probabilities of ``n`` slides against their labels.

    Args:
        y_true: integer labels, shape ``(n,)``, values in ``0..C-1``.
        proba: class probabilities, shape ``(n, C)`` (rows sum to 1); ``C >= 2``.
        ordered: classes are ordered grades → also the quadratic-weighted Cohen's kappa.

    Returns:
        ``auroc`` (binary: positive class = column 1; multiclass: macro one-vs-rest),
        ``balanced_accuracy``, ``accuracy``, ``f1_weighted``, ``kappa`` (Cohen), ``kappa_quadratic``
        (only if ``ordered``), ``brier`` (scikit-learn's: binary in [0, 1], multiclass in [0, 2]) and
        ``ece`` (top-label expected calibration error, 15 equal-width bins; Guo et al., ICML 2017).
        Predicted class = argmax of ``proba``.

    Labels of a single class give ``auroc`` (and kappa) NaN with a :class:`OneClassWarning`, never an
    error. A class absent from ``y_true`` in a multiclass problem also makes the macro AUROC NaN.

    Raises:
        ValueError: shapes disagree, fewer than 2 columns, or a label outside ``0..C-1``.
    """
    y, p = _check(y_true, proba)
    n_classes = p.shape[1]
    labels = list(range(n_classes))
    pred = p.argmax(axis=1)
    one_class = np.unique(y).size < 2
    if one_class:
        warnings.warn(
            f"labels hold one class only ({int(y[0])}) in {y.size} slides: AUROC and kappa are NaN",
            OneClassWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        # Undefined values are NaN by design (reported above); scikit-learn's repeats are noise.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        warnings.filterwarnings("ignore", message=".*single label was found.*")
        warnings.filterwarnings("ignore", message=".*only one label in common.*")
        out = {
            "auroc": _auroc(y, p) if not one_class else float("nan"),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "accuracy": float(accuracy_score(y, pred)),
            "f1_weighted": float(f1_score(y, pred, average="weighted", labels=labels, zero_division=0)),
            "kappa": float(cohen_kappa_score(y, pred, labels=labels)),
        }
        if ordered:
            out["kappa_quadratic"] = float(cohen_kappa_score(y, pred, labels=labels, weights="quadratic"))
        out["brier"] = float(
            brier_score_loss(y, p[:, 1]) if n_classes == 2 else brier_score_loss(y, p, labels=labels)
        )
    out["ece"] = expected_calibration_error(y, p)
    return out


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: Σ_bins |accuracy − confidence| × (bin size / n) over equal-width confidence bins.

    Args:
        y_true: integer labels ``(n,)``; proba: ``(n, C)``.
    """
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)  # confidence 1.0 → last bin
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += abs(correct[in_bin].mean() - confidence[in_bin].mean()) * in_bin.mean()
    return float(ece)


def bootstrap_ci(
    y_true: Sequence[int],
    proba: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    ordered: bool = False,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each metric of :func:`classification_metrics`, resampling slides.

    Each resample draws ``n`` slides with replacement. Resamples whose AUROC is undefined (one class)
    are left out of that metric's interval (a metric with no finite resample gets ``(nan, nan)``).

    Args:
        y_true: ``(n,)`` labels; proba: ``(n, C)``; n_boot: resamples; seed: of the resampling;
        level: coverage (0.95 → 2.5th and 97.5th percentiles).

    Returns:
        ``{metric: (low, high)}``.
    """
    y, p = _check(y_true, proba)
    rng = np.random.default_rng(seed)
    n = y.size
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - start)
        idx = rng.integers(0, n, (b, n))
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        for key, values in resampled_metrics(y, p, counts.astype(float), ordered).items():
            chunks.setdefault(key, []).append(values)
    tail = (1.0 - level) / 2 * 100
    out = {}
    for key, parts in chunks.items():
        arr = np.concatenate(parts)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            out[key] = (float("nan"), float("nan"))
        else:
            low, high = np.percentile(arr, [tail, 100 - tail])
            out[key] = (float(low), float(high))
    return out


def resampled_metrics(y: np.ndarray, p: np.ndarray, weights: np.ndarray, ordered: bool = False) -> dict[str, np.ndarray]:
    """The metrics of :func:`classification_metrics` for ``B`` weighted copies of the slides at once.

    Calling scikit-learn once per bootstrap resample costs ~15 ms of input validation per call
    (~15 s for 1,000 resamples per method), so the resamples are scored here in closed form from
    per-resample confusion matrices and rank sums; with ``weights`` = slide counts of a resample the
    values equal scikit-learn's on that resample (tested).

    Args:
        y: ``(n,)`` int labels; p: ``(n, C)`` probabilities; weights: ``(B, n)`` non-negative slide weights.

    Returns:
        ``{metric: (B,) values}`` (NaN where undefined).
    """
    from scipy import sparse

    n_classes = p.shape[1]
    pred = p.argmax(axis=1)
    total = weights.sum(axis=1)  # (B,)
    cells = sparse.csr_matrix((np.ones(y.size), (np.arange(y.size), y * n_classes + pred)),
                              shape=(y.size, n_classes * n_classes))
    confusion = np.asarray((cells.T @ weights.T).T).reshape(-1, n_classes, n_classes)  # (B, true, pred)
    support = confusion.sum(axis=2)  # (B, C) true counts
    predicted = confusion.sum(axis=1)  # (B, C) predicted counts
    diag = np.diagonal(confusion, axis1=1, axis2=2)  # (B, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, diag / support, np.nan)
        f1 = np.where(support + predicted > 0, 2 * diag / (support + predicted), 0.0)
        out = {
            "auroc": _weighted_auroc(y, p, weights),
            "balanced_accuracy": np.nanmean(recall, axis=1),
            "accuracy": diag.sum(axis=1) / total,
            "f1_weighted": (f1 * support).sum(axis=1) / total,
            "kappa": _kappa(confusion, 1.0 - np.eye(n_classes)),
        }
        if ordered:
            grades = np.arange(n_classes)
            out["kappa_quadratic"] = _kappa(confusion, (grades[:, None] - grades[None, :]) ** 2.0)
        onehot = np.eye(n_classes)[y]
        per_slide = (p[:, 1] - y) ** 2 if n_classes == 2 else ((p - onehot) ** 2).sum(axis=1)
        out["brier"] = weights @ per_slide / total
        confidence = p.max(axis=1)
        correct = (pred == y).astype(float)
        bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
        binned = sparse.csr_matrix((np.ones(y.size), (np.arange(y.size), bins)), shape=(y.size, ECE_BINS))
        gap = binned.T @ (weights * (correct - confidence)).T  # (bins, B)
        out["ece"] = np.abs(np.asarray(gap)).sum(axis=0) / total
    return out


def _kappa(confusion: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Cohen's kappa ``1 - Σ w·O / Σ w·E`` per resample (E from the margins), as scikit-learn defines it."""
    total = confusion.sum(axis=(1, 2), keepdims=True)
    expected = confusion.sum(axis=2, keepdims=True) * confusion.sum(axis=1, keepdims=True) / total
    denominator = (penalty * expected).sum(axis=(1, 2))
    return np.where(denominator > 0, 1.0 - (penalty * confusion).sum(axis=(1, 2)) / denominator, np.nan)


def _weighted_auroc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC per resample from weighted rank sums (ties count ½); multiclass: macro one-vs-rest."""
    from scipy import sparse

    targets = [1] if p.shape[1] == 2 else range(p.shape[1])
    aucs = []
    for c in targets:
        values, inverse = np.unique(p[:, c], return_inverse=True)
        by_value = sparse.csr_matrix((np.ones(y.size), (np.arange(y.size), inverse)), shape=(y.size, values.size))
        positive = y == c
        w_pos = np.asarray((by_value.T @ (weights * positive).T).T)  # (B, U), scores ascending
        w_neg = np.asarray((by_value.T @ (weights * ~positive).T).T)
        below = np.cumsum(w_neg, axis=1) - w_neg  # negative weight strictly below each score
        pairs = w_pos.sum(axis=1) * w_neg.sum(axis=1)
        aucs.append(np.where(pairs > 0, (w_pos * (below + 0.5 * w_neg)).sum(axis=1) / pairs, np.nan))
    return np.mean(aucs, axis=0)  # NaN if any class is undefined, as scikit-learn's macro average


def summarize_folds(
    fold_metrics: Sequence[dict[str, float]],
    split: str = "test",
    ci: dict[str, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """Mean ± std of each metric over the usable folds, as flat ``<split>/<metric>_mean|_std`` keys.

    A fold is usable for a metric when its value is finite (a one-class test fold has NaN AUROC and
    does not count toward AUROC). ``<split>/n_usable_folds`` is the number of folds with a finite AUROC
    (or with any finite value when no fold reports AUROC); ``<split>/n_folds`` counts all folds given.
    ``std`` is the sample std (ddof=1; 0 for one usable fold). ``ci`` (e.g. from :func:`bootstrap_ci`
    on the pooled out-of-fold predictions) adds ``_ci_low`` / ``_ci_high`` keys.

    Keys of ``fold_metrics`` may be bare (``auroc``) or already prefixed (``test/auroc``); only bare
    keys and keys with this ``split`` prefix are summarised.
    """
    prefix = f"{split}/"
    values: dict[str, list[float]] = {}
    for metrics in fold_metrics:
        for key, value in metrics.items():
            if "/" in key and not key.startswith(prefix):
                continue
            name = key.removeprefix(prefix)
            values.setdefault(name, []).append(float(value) if value is not None else float("nan"))
    out: dict[str, float] = {}
    for name, vals in values.items():
        arr = np.asarray(vals, dtype=float)
        finite = arr[np.isfinite(arr)]
        out[f"{prefix}{name}_mean"] = float(finite.mean()) if finite.size else float("nan")
        out[f"{prefix}{name}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else (0.0 if finite.size else float("nan"))
        if ci and name in ci:
            out[f"{prefix}{name}_ci_low"], out[f"{prefix}{name}_ci_high"] = (float(v) for v in ci[name])
    if "auroc" in values:
        usable = int(np.isfinite(np.asarray(values["auroc"], dtype=float)).sum())
    else:
        usable = sum(any(np.isfinite(float(v)) for v in m.values() if v is not None) for m in fold_metrics)
    out[f"{prefix}n_usable_folds"] = usable
    out[f"{prefix}n_folds"] = len(fold_metrics)
    return out


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    if p.shape[1] == 2:
        return float(roc_auc_score(y, p[:, 1]))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(p.shape[1]))))


def _check(y_true: Sequence[int], proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).reshape(-1)
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must have shape (n, C) with C >= 2, got {p.shape}")
    if p.shape[0] != y.size:
        raise ValueError(f"{y.size} labels but {p.shape[0]} rows of probabilities")
    if y.size == 0:
        raise ValueError("no slides to score")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}, got {sorted(set(y.tolist()))}")
    return y, p
