"""Predictions table, metrics JSON, DVC plot data and figures written by finish_method."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from slidemil.pipeline.evaluation import Scoring, finish_method, pooled_by_slide, predictions_table, roc_table
from slidemil.pipeline.figures import confusion_figure, roc_figure

CLASSES = ("benign", "tumor")


def _fold_tables(n_folds=3, per_fold=8, seed=0):
    rng = np.random.default_rng(seed)
    tables, folds = [], []
    for k in range(n_folds):
        y = np.array([0, 1] * (per_fold // 2))
        p1 = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, y.size), 0.01, 0.99)
        proba = np.stack([1 - p1, p1], 1)
        ids = [f"s{k}_{i:02d}" for i in range(y.size)]
        tables.append(predictions_table(ids, [f"p{k}_{i // 2}" for i in range(y.size)], y, proba, CLASSES, fold=k))
        folds.append({"fold": k, "repeat": 0, "status": "ok", "test/auroc": roc_auc_score(y, p1),
                      "test/balanced_accuracy": 0.5 + 0.1 * k})
    return pd.concat(tables, ignore_index=True), folds


def test_predictions_table_layout():
    t = predictions_table(["a", "b"], ["pa", "pb"], [1, 0], np.array([[0.2, 0.8], [0.6, 0.4]]), CLASSES, fold=2, repeat=1)
    assert list(t.columns) == ["slide_id", "patient_id", "fold", "repeat", "label", "y_true",
                               "prob_benign", "prob_tumor", "pred"]
    assert t["label"].tolist() == ["tumor", "benign"]
    assert t["pred"].tolist() == ["tumor", "benign"]
    assert t["fold"].tolist() == [2, 2] and t["repeat"].tolist() == [1, 1]


def test_finish_method_writes_contract_files(tmp_path):
    preds, folds = _fold_tables()
    folds.append({"fold": 3, "repeat": 0, "status": "failed", "reason": "non-finite loss"})
    summary = finish_method("train", "abmil", preds, folds, Scoring(CLASSES, n_bootstrap=50), root=tmp_path)
    metrics = json.loads((tmp_path / "predictions" / "train@abmil.details.json").read_text())
    headline = json.loads((tmp_path / "metrics" / "train@abmil.json").read_text())
    assert headline == {
        "auroc": metrics["test/auroc_mean"], "auroc_low": metrics["test/auroc_ci_low"],
        "auroc_high": metrics["test/auroc_ci_high"], "balanced_accuracy": metrics["test/balanced_accuracy_mean"],
        "balanced_accuracy_low": metrics["test/balanced_accuracy_ci_low"],
        "balanced_accuracy_high": metrics["test/balanced_accuracy_ci_high"], "n_usable_folds": 3,
    }
    expected = np.mean([f["test/auroc"] for f in folds[:3]])
    assert metrics["test/auroc_mean"] == pytest.approx(expected)
    assert metrics["test/auroc_ci_low"] <= metrics["test/auroc_ci_high"]
    assert metrics["test/n_usable_folds"] == 3
    assert metrics["n_failed_folds"] == 1
    assert len(metrics["folds"]) == 4 and metrics["folds"][3]["status"] == "failed"
    assert summary["test/auroc_mean"] == metrics["test/auroc_mean"]
    written = pd.read_csv(tmp_path / "predictions" / "train@abmil.csv", dtype={"slide_id": str})
    assert len(written) == len(preds) and set(written["slide_id"]) == set(preds["slide_id"])
    roc = pd.read_csv(tmp_path / "plots" / "train@abmil" / "roc.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert roc["fpr"].iloc[0] == 0 and roc["tpr"].iloc[-1] == 1
    confusion = pd.read_csv(tmp_path / "plots" / "train@abmil" / "confusion.csv")
    assert list(confusion.columns) == ["slide_id", "actual", "predicted"]
    assert (confusion["actual"] == preds["label"]).all()


def test_pooled_by_slide_averages_repeats():
    a = predictions_table(["x", "y"], ["p", "q"], [0, 1], np.array([[0.8, 0.2], [0.4, 0.6]]), CLASSES, 0, repeat=0)
    b = predictions_table(["x", "y"], ["p", "q"], [0, 1], np.array([[0.6, 0.4], [0.2, 0.8]]), CLASSES, 1, repeat=1)
    y, proba = pooled_by_slide(pd.concat([a, b]), CLASSES)
    assert y.tolist() == [0, 1]
    np.testing.assert_allclose(proba, [[0.7, 0.3], [0.3, 0.7]])


def test_roc_table_multiclass_micro_and_one_class():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[y] * 0.7 + 0.1
    roc = roc_table(y, p, ("a", "b", "c"))
    assert roc["tpr"].iloc[-1] == 1 and len(roc) >= 2
    assert roc_table(np.ones(3, int), np.full((3, 2), 0.5), CLASSES).empty


def test_figures_render(tmp_path):
    preds, _ = _fold_tables()
    y, proba = pooled_by_slide(preds, CLASSES)
    roc_figure(y, proba, CLASSES).savefig(tmp_path / "roc.png")
    confusion_figure(y, proba.argmax(1), CLASSES).savefig(tmp_path / "cm.png")
    assert (tmp_path / "roc.png").stat().st_size > 1000 and (tmp_path / "cm.png").stat().st_size > 1000


def test_figures_name_the_classes():
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    ax = roc_figure(y, proba, ["dense", "sparse"], "abmil fold-0: test ROC").axes[0]
    assert ax.get_xlabel() == "false positive rate (dense slides called sparse)"
    assert ax.get_ylabel() == "true positive rate (sparse slides called sparse)"
    assert ax.get_title() == "abmil fold-0: test ROC" and "Positive label" not in ax.get_xlabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("sparse")
    cm = confusion_figure(y, proba.argmax(1), ["dense", "sparse"], "abmil fold-0").axes[0]
    assert [t.get_text() for t in cm.get_xticklabels()] == ["dense", "sparse"] and cm.get_ylabel() == "true class"
