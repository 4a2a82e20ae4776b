"""The comparison report: numbers equal the metrics files, only the current params' methods, paired
comparison, synthetic banner, MLflow run, strict JSON, no-method error."""

import json

import numpy as np
import pandas as pd
import pytest

from slidemil.core.errors import SlidemilError
from slidemil.pipeline.compare import holm_adjust
from slidemil.pipeline.evaluation import Scoring, finish_method, fold_test_metrics, predictions_table
from slidemil.pipeline.report import (
    SYNTHETIC_BANNER,
    best_method,
    compare_to_best,
    placeholder_stores,
    report_json,
    select_methods,
    summary_table,
)

CLASSES = ("benign", "tumor")


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
    return finish_method(stage, name, pd.concat(tables, ignore_index=True), folds, Scoring(CLASSES, n_bootstrap=30))


@pytest.fixture
def project(tmp_path, monkeypatch, helpers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    helpers.write_project(tmp_path)  # params.yaml + a feature store made with synthetic:1 weights
    params = (tmp_path / "params.yaml").read_text()
    params = params.replace("probe: {", "probe: {probes: [linear], ").replace("topk: [1, 2]", "topk: [1]")
    (tmp_path / "params.yaml").write_text(params + "train: {heads: [abmil]}\n")
    write_method("train", "abmil", 3.0, 0)
    write_method("probe", "linear", 1.0, 1)
    write_method("zeroshot", "top1", 0.0, 2)
    (tmp_path / "metrics/zeroshot.json").write_text(json.dumps({"skipped": False}))  # zero-shot ran
    return tmp_path


def table_rows(text):
    """The method names of the markdown tables' rows."""
    return {line.split("|")[1].strip().strip("*") for line in text.splitlines() if line.startswith("| ")}


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
    p_values = [report["comparison"][m]["p_value"] for m in ("probe@linear", "zeroshot@top1")]
    holm = holm_adjust(np.array(p_values))
    assert [report["comparison"][m]["p_holm"] for m in ("probe@linear", "zeroshot@top1")] == list(holm)
    assert "Each cell is `fold mean ± fold SD [pooled 95% CI]`" in text
    assert "| AUROC ↑ mean ± SD [pooled CI] |" in text and "| 95% CI of Δ | p | p (Holm) |" in text
    assert "chosen as best on these same test folds" in text and "not corrected for multiple comparisons" in text
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("label").experiment_id],
                             filter_string="tags.stage = 'report'")[0]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"summary.md", "metrics.json"}
    assert run.data.tags["encoder.weights"] == "synthetic"


def test_skipped_zeroshot_is_listed_not_reported(project, helpers):
    (project / "metrics/zeroshot.json").write_text(json.dumps({"skipped": "no CONCH tokenizer file"}))
    assert helpers.run_stage("report") == 0
    text = (project / "reports/summary.md").read_text()
    assert "zeroshot@top1" not in table_rows(text)  # stale files of a skipped stage are left out
    assert "`zeroshot`: no CONCH tokenizer file" in text
    report = json.loads((project / "reports/metrics.json").read_text())
    assert report["not_run"] == {"zeroshot": "no CONCH tokenizer file"} and set(report["comparison"]) == {"probe@linear"}
    assert report["ignored"] == ["zeroshot@top1"]


def test_report_has_only_the_methods_of_the_current_params(project, helpers):
    """`dvc exp run -S 'train.heads=[…]'`: stale metrics of other heads must not be reported or ranked."""
    write_method("train", "abmil", 0.8, 0)
    write_method("train", "dsmil", 6.0, 3)  # stale, from another configuration, and the best by far
    files = {m: json.loads((project / f"metrics/{m}.json").read_text())["test/auroc_mean"]
             for m in ("train@abmil", "train@dsmil", "probe@linear", "zeroshot@top1")}
    assert max(files, key=files.get) == "train@dsmil"
    current = max(set(files) - {"train@dsmil"}, key=files.get)
    assert helpers.run_stage("report", ["train.heads=[abmil, mean_mlp]"]) == 0
    text = (project / "reports/summary.md").read_text()
    report = json.loads((project / "reports/metrics.json").read_text())
    assert report["best_method"] == current and report["n_methods"] == 3
    assert "train@dsmil" not in table_rows(text) and "train@dsmil" not in report["comparison"]
    ignored = text.split("Not in this configuration (ignored)")[1]
    assert "- `train@dsmil`" in ignored and report["ignored"] == ["train@dsmil"]
    missing = text.split("Missing (")[1].split("Not in this configuration")[0]
    assert "- `train@mean_mlp`" in missing and report["missing"] == ["train@mean_mlp"]
    # the zero-shot summary gone: zero-shot did not run, its old files are ignored too
    (project / "metrics/zeroshot.json").unlink()
    assert helpers.run_stage("report") == 0
    report = json.loads((project / "reports/metrics.json").read_text())
    assert report["ignored"] == ["train@dsmil", "zeroshot@top1"] and "zeroshot" in report["not_run"]


def test_select_methods_splits_found_by_configured():
    found = ["train@dsmil", "train@abmil", "probe@knn"]
    configured = ["train@abmil", "train@mean_mlp", "probe@knn"]
    assert select_methods(found, configured) == (["train@abmil", "probe@knn"], ["train@dsmil"], ["train@mean_mlp"])


@pytest.mark.parametrize("stale", [False, True])
def test_no_method_is_an_error_and_writes_nothing(project, helpers, stale):
    """`slidemil report` without metrics of the current params: exit 2, no report, no MLflow run."""
    from mlflow import MlflowClient

    from slidemil.pipeline.cli import main

    for path in (project / "metrics").glob("*@*.json"):
        path.unlink()
    if stale:
        write_method("train", "dsmil", 3.0, 0)
    with pytest.raises(SlidemilError, match="Run the evaluation stages first.*dvc repro"):
        helpers.run_stage("report")
    assert main(["report"]) == 2
    assert not (project / "reports").exists()
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("label")
    assert experiment is None or not client.search_runs([experiment.experiment_id], "tags.stage = 'report'")


def test_metrics_json_is_strict_json_without_finite_auroc():
    table = summary_table({"a@x": {"test/auroc_mean": float("nan"), "test/n_usable_folds": 0}})
    document = report_json(table, pd.DataFrame(), best_method(table), synthetic={}, skipped={})
    assert document["best_test_auroc_mean"] is None
    json.loads(json.dumps(document, allow_nan=False))
    table = summary_table({"a@x": {"test/auroc_mean": 0.8}})
    assert report_json(table, pd.DataFrame(), "a@x", synthetic={}, skipped={})["best_test_auroc_mean"] == 0.8


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


def test_method_failed_on_every_fold_is_reported_not_a_crash(project, helpers, caplog):
    """A probe whose folds all failed leaves an empty predictions table: the report names it, no EmptyDataError."""
    folds = [{"fold": k, "repeat": 0, "status": "failed", "reason": "one class in train"} for k in range(3)]
    finish_method("probe", "linear", pd.DataFrame(), folds, Scoring(CLASSES, n_bootstrap=30))
    assert (project / "predictions/probe@linear.csv").read_text().strip() == ""
    assert helpers.run_stage("report") == 0
    report = json.loads((project / "reports/metrics.json").read_text())
    assert report["best_method"] == "train@abmil"
    assert "probe@linear: predictions table" in caplog.text and "no rows" in caplog.text
