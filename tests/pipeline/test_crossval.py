"""The one fold loop: a failed fold is handled the same way by every stage; other errors stop the stage."""

import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from slidemil.core.errors import StoreError
from slidemil.pipeline.crossval import FoldResult, Tracking, cross_validate
from slidemil.pipeline.data import load_method_data
from slidemil.pipeline.task_kinds import Bootstrap, create_task_kind
from slidemil.splits.task import Task

NAN_SLIDE = "s03"  # a test slide of fold 0 only (its features are NaN)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def project(tmp_path, monkeypatch, helpers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    helpers.write_project(tmp_path, nan_slide=NAN_SLIDE)
    return tmp_path


def _runs(project):
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("label: benign vs tumor").experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return parent, {int(r.data.tags["fold"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}


STAGES = {
    "train": ("train@mean_mlp", dict(head=None), ["train.heads=[mean_mlp]", "train.epochs=1", "train.n_bootstrap=20",
                                                   "train.log_model=false", "train.n_heatmaps=0", "train.patience=0"]),
    "probe": ("probe@linear", dict(probe="linear"), []),
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_failed_fold_is_handled_the_same_by_train_and_probe(project, helpers, stage):
    method, options, overrides = STAGES[stage]
    assert helpers.run_stage(stage, overrides, **options) == 0
    metrics = json.loads((project / f"predictions/{method}.details.json").read_text())
    failed = metrics["folds"][0]
    assert set(failed) == {"fold", "repeat", "status", "reason"}
    assert failed["fold"] == 0 and failed["status"] == "failed"
    assert "non-finite" in failed["reason"] and NAN_SLIDE in failed["reason"]
    assert [f["status"] for f in metrics["folds"][1:]] == ["ok", "ok"]
    assert metrics["n_failed_folds"] == 1 and metrics["test/n_usable_folds"] == 2
    preds = pd.read_csv(project / f"predictions/{method}.csv", dtype={"slide_id": str})
    assert sorted(preds["fold"].unique()) == [1, 2] and NAN_SLIDE not in set(preds["slide_id"])

    parent, children = _runs(project)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test/n_usable_folds"] == 2 and parent.data.metrics["n_failed_folds"] == 1
    assert children[0].info.status == "FAILED"
    assert children[0].data.tags["status"] == "failed" and children[0].data.tags["reason"] == failed["reason"][:500]
    assert "test/auroc" not in children[0].data.metrics
    for k in (1, 2):
        assert children[k].info.status == "FINISHED" and "status" not in children[k].data.tags
        assert children[k].data.metrics["test/auroc"] == pytest.approx(metrics["folds"][k]["test/auroc"])


def _loop(project, fold_fn, **kwargs):
    data = load_method_data("data/features/conch_v1.zarr", "data/splits.json")
    kind = create_task_kind(Task("label", ("benign", "tumor"), False), data)
    tracking = Tracking("label: benign vs tumor", f"sqlite:///{project}/mlflow.db", {"probe": {"seed": 0}})
    return data, cross_validate("probe", "fake", data, fold_fn, kind=kind, tracking=tracking, bootstrap=Bootstrap(0),
                                **kwargs)


def test_fold_records_put_chosen_before_and_info_after_the_metrics(project):
    def fold_fn(fold, child):
        y = np.array([int(s[1:]) % 2 for s in fold["test"]])
        proba = np.stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1], 1)  # right on every slide
        return FoldResult(fold["test"], y, proba, chosen={"C": 0.5}, info={"epochs_run": 3})

    _, summary = _loop(project, fold_fn, fold_figures=True)
    assert summary["test/auroc_mean"] == 1.0 and summary["test/n_usable_folds"] == 3
    record = json.loads((project / "predictions/probe@fake.details.json").read_text())["folds"][1]
    keys = list(record)
    assert keys[:4] == ["fold", "repeat", "status", "C"] and keys[-1] == "epochs_run"
    assert record["test/balanced_accuracy"] == 1.0
    parent, children = _runs(project)
    # the fold run: its own params (the method's and the chosen C), named and tagged by method and fold
    assert children[1].data.params == {**parent.data.params, "C": "0.5"} and parent.data.params["probe.seed"] == "0"
    assert children[1].info.run_name == "fake fold-1" and parent.info.run_name.startswith("fake · ")
    assert {k: children[1].data.tags[k] for k in ("stage", "method", "fold")} == {"stage": "probe", "method": "fake",
                                                                                   "fold": "1"}
    assert set(parent.data.metrics) >= {"test/auroc_mean", "test/auroc_std", "test/n_usable_folds"}
    assert not any(key.startswith(("test/kappa", "test/brier")) for key in parent.data.metrics)  # details only
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    for run in (parent, children[1]):
        assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {
            "figures/roc.png", "figures/confusion.png"}
    assert 0 < parent.data.metrics["tracking/fraction_of_wall"] < 1


def test_an_error_outside_the_fold_errors_stops_the_stage_and_fails_the_parent(project):
    def fold_fn(fold, child):
        if fold["fold"] == 1:
            raise KeyError("a bug, not a bad fold")
        if fold["fold"] == 0:
            raise StoreError("slide s00 unreadable")  # a SlidemilError fails only its fold
        raise AssertionError("not reached")

    with pytest.raises(KeyError, match="a bug"):
        _loop(project, fold_fn)
    parent, children = _runs(project)
    assert parent.info.status == "FAILED" and sorted(children) == [0, 1]
    assert children[0].data.tags["reason"] == "slide s00 unreadable" and children[1].info.status == "FAILED"
    assert not (project / "metrics/probe@fake.json").exists()
