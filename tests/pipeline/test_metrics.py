"""Metrics equal direct scikit-learn calls; one-class folds; bootstrap intervals; fold summaries."""

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)

from slidemil.pipeline.metrics import (
    OneClassWarning,
    bootstrap_ci,
    classification_metrics,
    expected_calibration_error,
    resampled_metrics,
    summarize_folds,
)


def _data(n=60, c=2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.0  # informative but imperfect
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def test_binary_metrics_equal_sklearn():
    y, p = _data()
    m = classification_metrics(y, p)
    pred = p.argmax(1)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p[:, 1]))
    assert "kappa_quadratic" not in m
    assert 0.0 <= m["ece"] <= 1.0


def test_multiclass_macro_ovr_and_ordered_kappa():
    y, p = _data(n=90, c=3, seed=1)
    m = classification_metrics(y, p, ordered=True)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["kappa_quadratic"] == pytest.approx(cohen_kappa_score(y, p.argmax(1), weights="quadratic"))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p, labels=[0, 1, 2]))


def test_ece_by_hand():
    # two bins: confidence 0.9 (2 slides, both right), 0.6 (2 slides, one right)
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    expected = 0.5 * abs(1.0 - 0.9) + 0.5 * abs(0.5 - 0.6)
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_one_class_fold_gives_nan_auroc_with_warning():
    y = np.ones(5, dtype=int)
    p = np.tile([0.3, 0.7], (5, 1))
    with pytest.warns(OneClassWarning):
        m = classification_metrics(y, p)
    assert math.isnan(m["auroc"])
    assert m["accuracy"] == 1.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="labels but"):
        classification_metrics([0, 1], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="0..1"):
        classification_metrics([0, 2], np.full((2, 2), 0.5))


def test_bootstrap_ci_contains_point_estimate_and_is_seeded():
    y, p = _data(n=80, c=2, seed=3)
    point = classification_metrics(y, p)
    ci = bootstrap_ci(y, p, n_boot=200, seed=7)
    for key in ("auroc", "balanced_accuracy", "brier"):
        low, high = ci[key]
        assert low < high
        assert low <= point[key] <= high
    assert ci == bootstrap_ci(y, p, n_boot=200, seed=7)
    assert ci != bootstrap_ci(y, p, n_boot=200, seed=8)


def test_summarize_folds_skips_nan_auroc():
    folds = [
        {"test/auroc": 0.8, "test/accuracy": 0.7},
        {"test/auroc": 0.6, "test/accuracy": 0.5},
        {"test/auroc": float("nan"), "test/accuracy": 1.0},
        {"val/auroc": 0.99},  # other split: ignored
    ]
    s = summarize_folds(folds[:3] + [{}], split="test", ci={"auroc": (0.55, 0.85)})
    assert s["test/auroc_mean"] == pytest.approx(0.7)
    assert s["test/auroc_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert s["test/accuracy_mean"] == pytest.approx(np.mean([0.7, 0.5, 1.0]))
    assert s["test/n_usable_folds"] == 2
    assert s["test/n_folds"] == 4
    assert (s["test/auroc_ci_low"], s["test/auroc_ci_high"]) == (0.55, 0.85)
    assert "test/accuracy_ci_low" not in s
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = summarize_folds([{"auroc": 0.9}])
    assert one["test/auroc_std"] == 0.0 and one["test/auroc_mean"] == 0.9


@pytest.mark.parametrize("n_classes, ordered", [(2, False), (3, True)])
def test_resampled_metrics_equal_sklearn_on_each_resample(n_classes, ordered):
    y, p = _data(n=40, c=n_classes, seed=5)
    p = np.round(p, 1)  # ties in the scores
    p /= p.sum(1, keepdims=True)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, y.size, (6, y.size))
    counts = np.stack([np.bincount(i, minlength=y.size) for i in idx]).astype(float)
    fast = resampled_metrics(y, p, counts, ordered)
    for b, i in enumerate(idx):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = classification_metrics(y[i], p[i], ordered)
        assert set(fast) == set(ref)
        for key, value in ref.items():
            assert fast[key][b] == pytest.approx(value, nan_ok=True), key
