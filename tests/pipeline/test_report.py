"""The comparison report: numbers equal the metrics files, paired comparison, synthetic banner, MLflow run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import finish_method, fold_test_metrics, predictions_table
from pipeline.report import SYNTHETIC_BANNER, best_method, compare_to_best, placeholder_stores, summary_table

CLASSES = ("benign", "tumor")


@pytest.fixture(scope="module")
def helpers():
    """``write_project`` and ``run_stage`` of test_probes.py: one project builder for the three stages' tests."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("probe_tests", Path(__file__).with_name("test_probes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_method(stage, name, signal, seed, n_folds=3, per_fold=12):
    """A method's metrics/predictions files through finish_method (same slides and folds for all methods)."""
    rng = np.random.default_rng(seed)
    tables, folds = [], []
    for k in range(n_folds):
        y = np.tile([0, 1], per_fold // 2)
        logit = signal * (y - 0.5) + rng.normal(0, 1, y.size)
        proba = np.stack([1 / (1 + np.exp(logit)), 1 / (1 + np.exp(-logit))], axis=1)
        ids = [f"s{k}-{i:02d}" for i in range(y.size)]
        tables.append(predictions_table(ids, ids, y, proba, CLASSES, fold=k))
        folds.append({"fold": k, "repeat": 0, "status": "ok", **fold_test_metrics(y, proba)})
    return finish_method(stage, name, pd.concat(tables, ignore_index=True), CLASSES, folds, n_bootstrap=30)


@pytest.fixture
def project(tmp_path, monkeypatch, helpers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    helpers.write_project(tmp_path)  # params.yaml + a feature store made with synthetic:1 weights
    write_method("train", "abmil", 3.0, 0)
    write_method("probe", "linear", 1.0, 1)
    write_method("zeroshot", "top1", 0.0, 2)
    return tmp_path


def test_report_numbers_equal_metrics_files(project, helpers):
    from mlflow import MlflowClient

    assert helpers.run_stage("report") == 0
    text = (project / "reports/summary.md").read_text()
    assert text.splitlines()[0] == SYNTHETIC_BANNER
    assert "`data/features/conch_v1.zarr` (synthetic:1)" in text.splitlines()[1]
    files = {p.stem: json.loads(p.read_text()) for p in (project / "metrics").glob("*@*.json")}
    assert set(files) == {"train@abmil", "probe@linear", "zeroshot@top1"}
    for method, m in files.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {method} |")
                   or line.startswith(f"| **{method}** |"))
        for metric in ("auroc", "balanced_accuracy", "f1_weighted", "kappa", "brier", "ece"):
            cell = (f"{m[f'test/{metric}_mean']:.3f} ± {m[f'test/{metric}_std']:.3f} "
                    f"[{m[f'test/{metric}_ci_low']:.3f}, {m[f'test/{metric}_ci_high']:.3f}]")
            assert cell in row, (method, metric)
        assert f"| {m['test/n_usable_folds']}/3 |" in row
    report = json.loads((project / "reports/metrics.json").read_text())
    best = max(files, key=lambda k: files[k]["test/auroc_mean"])
    assert report["best_method"] == best == "train@abmil"
    assert report["best_test_auroc_mean"] == files[best]["test/auroc_mean"]
    assert report["synthetic_features"] is True
    assert set(report["comparison"]) == {"probe@linear", "zeroshot@top1"}
    zs = report["comparison"]["zeroshot@top1"]
    assert zs["auroc_diff"] == pytest.approx(files["zeroshot@top1"]["test/auroc_mean"] - files[best]["test/auroc_mean"])
    assert zs["p_value"] < 0.01 and zs["ci_high"] < 0 and zs["n_slides"] == 36 and zs["n_folds"] == 3
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("label").experiment_id],
                             filter_string="tags.stage = 'report'")[0]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"summary.md", "metrics.json"}
    assert run.data.tags["encoder.weights"] == "synthetic"


def test_skipped_zeroshot_is_listed_not_reported(project, helpers):
    (project / "metrics/zeroshot.json").write_text(json.dumps({"skipped": "no CONCH tokenizer file"}))
    assert helpers.run_stage("report") == 0
    text = (project / "reports/summary.md").read_text()
    assert "zeroshot@top1" not in text  # stale files of a skipped stage are left out
    assert "`zeroshot`: no CONCH tokenizer file" in text
    report = json.loads((project / "reports/metrics.json").read_text())
    assert report["not_run"] == {"zeroshot": "no CONCH tokenizer file"} and set(report["comparison"]) == {"probe@linear"}


def test_no_banner_with_real_weights(tmp_path, monkeypatch, helpers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    helpers.write_project(tmp_path, weights="ab" * 32)
    write_method("probe", "knn", 1.0, 0)
    assert helpers.run_stage("report") == 0
    text = (tmp_path / "reports/summary.md").read_text()
    assert "SYNTHETIC" not in text and "probe@knn" in text


def test_summary_table_order_and_best():
    summaries = {
        "a@x": {"test/auroc_mean": 0.7, "test/n_usable_folds": 3},
        "b@y": {"test/auroc_mean": float("nan"), "test/n_usable_folds": 0},
        "c@z": {"test/auroc_mean": 0.9, "test/n_usable_folds": 2},
    }
    table = summary_table(summaries)
    assert list(table.index) == ["c@z", "a@x", "b@y"]
    assert best_method(table) == "c@z"
    assert best_method(summary_table({"b@y": summaries["b@y"]})) is None


def test_compare_to_best_pairs_on_shared_slides():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 10)
    ids = [f"s{i}" for i in range(20)]

    def table(signal, keep):
        p1 = 1 / (1 + np.exp(-(signal * (y - 0.5) + rng.normal(0, 1, 20))))
        t = predictions_table(ids, ids, y, np.stack([1 - p1, p1], 1), CLASSES, fold=0)
        t.loc[10:, "fold"] = 1
        return t.iloc[keep]

    best = table(3.0, slice(None))
    other = table(0.5, slice(0, 16))  # scored only 16 of the 20 slides
    result = compare_to_best({"best": best, "other": other}, "best", n_boot=100, seed=0)
    assert result.loc["other", "n_slides"] == 16
    assert result.loc["other", "auroc_diff"] < 0


def test_placeholder_weights_are_synthetic_or_random():
    weights = {"a.zarr": "synthetic:1", "b.zarr": "random:0", "c.zarr": "ab" * 32}
    assert placeholder_stores(weights) == {"a.zarr": "synthetic:1", "b.zarr": "random:0"}
