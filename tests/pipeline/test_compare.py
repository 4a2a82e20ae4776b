"""Paired bootstrap of the AUROC difference: equals the metrics' AUROC, sane p-values."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from slidemil.pipeline.compare import (
    auroc_replicates,
    holm_adjust,
    paired_bootstrap_auroc,
    percentile_interval_and_p,
)
from slidemil.pipeline.metrics import classification_metrics


def _method(y, n_classes, signal, rng):
    """Probabilities whose true-class column is boosted by ``signal`` (0 → uninformative)."""
    logits = rng.normal(size=(y.size, n_classes))
    logits[np.arange(y.size), y] += signal
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_point_estimate_is_mean_per_fold_auroc_of_metrics(n_classes):
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(n_classes), 30)
    folds = (np.arange(y.size) // n_classes) % 4  # every fold holds every class
    a, b = _method(y, n_classes, 1.5, rng), _method(y, n_classes, 0.5, rng)
    result = paired_bootstrap_auroc(y, a, b, folds, n_boot=100, seed=0)
    for proba, value in ((a, result.auroc_a), (b, result.auroc_b)):
        per_fold = [classification_metrics(y[folds == f], proba[folds == f])["auroc"] for f in range(4)]
        assert value == pytest.approx(np.mean(per_fold), abs=1e-12)
    assert result.auroc_diff == pytest.approx(result.auroc_a - result.auroc_b)
    assert result.n_folds == 4 and result.n_slides == y.size


def test_replicates_equal_sklearn_on_each_resample():
    rng = np.random.default_rng(1)
    y = np.array([0] * 7 + [1] * 5 + [2] * 6)
    proba = _method(y, 3, 1.0, rng)
    proba[:4] = proba[0]  # ties
    by_class = [np.flatnonzero(y == c) for c in range(3)]
    idx = np.concatenate([m[rng.integers(0, m.size, (20, m.size))] for m in by_class], axis=1)  # (20, 18)
    got = auroc_replicates(y, proba, idx)
    expected = [roc_auc_score(y[i], proba[i], multi_class="ovr", average="macro") for i in idx]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    binary = np.r_[np.zeros(6, int), np.ones(4, int)]
    p = _method(binary, 2, 1.0, rng)
    np.testing.assert_allclose(auroc_replicates(binary, p, np.arange(10)[None]), [roc_auc_score(binary, p[:, 1])])


def test_identical_methods_give_p_one():
    rng = np.random.default_rng(2)
    y = np.tile([0, 1], 40)
    a = _method(y, 2, 1.0, rng)
    result = paired_bootstrap_auroc(y, a, a.copy(), np.arange(y.size) % 5, n_boot=300, seed=0)
    assert result.p_value == 1.0 and result.auroc_diff == 0.0 and result.ci_low == result.ci_high == 0.0


def test_clearly_better_method_gives_small_p():
    rng = np.random.default_rng(3)
    y = np.tile([0, 1], 60)
    result = paired_bootstrap_auroc(y, _method(y, 2, 3.0, rng), _method(y, 2, 0.0, rng), np.arange(y.size) % 5,
                                    n_boot=500, seed=0)
    assert result.auroc_diff > 0.3
    assert result.ci_low > 0
    assert result.p_value <= 2 / 501 + 1e-12


def test_p_values_under_the_null_are_not_too_small():
    """Two equally good methods: p < 0.05 in about 5% of data sets (well below 20%)."""
    rng = np.random.default_rng(4)
    small = 0
    for trial in range(40):
        y = np.tile([0, 1], 30)
        a, b = _method(y, 2, 1.0, rng), _method(y, 2, 1.0, rng)
        small += paired_bootstrap_auroc(y, a, b, np.arange(y.size) % 3, n_boot=200, seed=trial).p_value < 0.05
    assert small <= 8


def test_fold_without_both_classes_is_left_out():
    rng = np.random.default_rng(5)
    y = np.array([0, 1] * 10 + [0] * 5)
    folds = np.array([0] * 10 + [1] * 10 + [2] * 5)  # fold 2 holds class 0 only
    result = paired_bootstrap_auroc(y, _method(y, 2, 1, rng), _method(y, 2, 1, rng), folds, n_boot=50)
    assert result.n_folds == 2
    with pytest.raises(ValueError, match="no fold"):
        paired_bootstrap_auroc(y[20:], _method(y[20:], 2, 1, rng), _method(y[20:], 2, 1, rng), folds[20:], n_boot=5)


def _interval_agrees_with_p(low, high, p, alpha=0.05):
    """Off 0 ⇒ p < α; 0 strictly inside ⇒ p ≥ α (an end exactly at 0 is the tie boundary)."""
    if low > 0 or high < 0:
        return p < alpha
    if low < 0 < high:
        return p >= alpha
    return True


def test_interval_and_p_agree_on_synthetic_replicates():
    rng = np.random.default_rng(6)
    cases = [rng.normal(shift, 1.0, size) for shift in np.linspace(0, 3, 13) for size in (200, 1000, 2001)]
    for size in (200, 1000):  # tie-heavy: a share of replicates exactly 0 (identical slide rankings)
        for zeros in (0.02, 0.3, 0.6):
            d = rng.normal(-1.0, 0.5, size)
            d[: int(zeros * size)] = 0.0
            cases += [d, -d]
    cases.append(np.r_[np.full(25, -0.001), np.ones(975)])  # 2.5% just below 0: the interval's end is below 0
    for diffs in cases:
        low, high, p = percentile_interval_and_p(diffs)
        assert _interval_agrees_with_p(low, high, p), (low, high, p)
    low, high, p = percentile_interval_and_p(cases[-1])
    assert low < 0 and p == pytest.approx(0.05)


def test_ties_at_zero_count_half():
    """The QA case: Δ interval [-0.167, +0.000] with p = 0.678 — ties at 0 were counted on both sides."""
    diffs = np.r_[np.full(640, -0.1), np.zeros(340), np.full(20, 0.05)]
    low, high, p = percentile_interval_and_p(diffs)
    assert (low, high) == (-0.1, 0.0)
    assert p == pytest.approx(2 * (20 + 340 / 2) / 1000)
    assert percentile_interval_and_p(np.zeros(50))[2] == 1.0


@pytest.mark.parametrize("signal", [0.0, 0.3, 0.6, 1.0, 2.0])
def test_bootstrap_interval_and_p_agree(signal):
    rng = np.random.default_rng(7)
    y = np.tile([0, 1], 30)
    result = paired_bootstrap_auroc(y, _method(y, 2, 1.0 + signal, rng), _method(y, 2, 1.0, rng),
                                    np.arange(y.size) % 3, n_boot=200, seed=1)
    assert _interval_agrees_with_p(result.ci_low, result.ci_high, result.p_value)


def test_holm_adjustment():
    p = np.array([0.01, 0.04, np.nan, 0.03])
    adjusted = holm_adjust(p)
    # sorted 0.01, 0.03, 0.04 × (3, 2, 1) → 0.03, 0.06, 0.04 → running max 0.03, 0.06, 0.06
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])
    assert holm_adjust(np.array([0.5, 0.9]))[1] == 1.0
