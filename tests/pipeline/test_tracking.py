"""MLflow layout against a temporary SQLite store: one parent, k children tagged ``fold``, failures isolated."""

import os
import shutil

import mlflow.models
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from slidemil.pipeline.tracking import (
    experiment_name,
    flatten,
    parent_run,
    provenance_tags,
    repo_root,
    run_label,
    tracking_uri,
)


@pytest.fixture
def project(tmp_path, monkeypatch, blank_db):
    shutil.copy(blank_db, tmp_path / "mlflow.db")
    (tmp_path / "params.yaml").write_text("task: {label: label}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_tracking_uri_absolute_at_repo_root(project, monkeypatch):
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    assert repo_root(sub) == project.resolve()
    assert tracking_uri(root=sub) == f"sqlite:///{project.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    assert tracking_uri() == "http://server:5000"
    assert tracking_uri("sqlite:////x.db") == "sqlite:////x.db"


def test_provenance_tags_mark_synthetic(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    tags = provenance_tags("synthetic:1", "f" * 64, "a" * 64)
    assert tags["encoder.weights"] == "synthetic" and tags["dvc.exp_name"] == "exp-1"
    assert provenance_tags("ab" * 32)["encoder.weights"] == "real"
    assert flatten({"train": {"lr": 1e-4, "heads": ["abmil"]}}) == {"train.lr": "0.0001", "train.heads": '["abmil"]'}


class _Bag(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):  # [B, N, 4] → [B, 2]
        return self.linear(x).mean(1).softmax(-1)


def test_parent_children_metrics_artifacts_and_failed_fold(project, monkeypatch):
    monkeypatch.setenv("MLFLOW_RUN_ID", "inherited-run-id")
    import matplotlib.pyplot as plt

    params = {"train": {"lr": 0.001, "epochs": 2}}
    with parent_run("train", "abmil", params, provenance_tags("synthetic:1"), experiment="label") as parent:
        for fold in range(3):
            try:
                with parent.fold_run(fold) as child:
                    for epoch in range(3):
                        child.log_metrics({"train/loss": 1.0 / (epoch + 1), "val/auroc": 0.5}, step=epoch)
                    if fold == 1:
                        raise RuntimeError("forced failure")
                    fig, ax = plt.subplots()
                    ax.plot([0, 1], [0, 1])
                    child.log_figure(fig, "figures/roc.png")
                    model_id = None
                    if fold == 2:  # linked to the epoch-1 curves' points, then to the test metric
                        model_id = child.log_model(_Bag(), in_dim=4, n_outputs=2, tracking=parent.tracking,
                                                   name="abmil-fold-2", step=1, params={"head": "abmil"})
                    child.log_metrics({"test/auroc": 0.7 + fold / 100}, model_id=model_id)
            except RuntimeError:
                pass
        parent.log_metrics({"test/auroc_mean": 0.71})
    assert parent.seconds > 0
    assert "MLFLOW_RUN_ID" not in os.environ

    client = MlflowClient(tracking_uri(root=project))
    exp = client.get_experiment_by_name("label")
    assert exp.artifact_location == (project.resolve() / "mlartifacts").as_uri()
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    p = parents[0]
    assert p.info.status == "FINISHED"
    assert p.data.params == {"train.lr": "0.001", "train.epochs": "2"}
    assert p.data.tags["encoder.weights"] == "synthetic" and p.data.metrics["test/auroc_mean"] == 0.71
    by_fold = {r.data.tags["fold"]: r for r in children}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {p.info.run_id}
    assert by_fold["1"].info.status == "FAILED"
    assert by_fold["0"].info.status == by_fold["2"].info.status == "FINISHED"
    history = client.get_metric_history(by_fold["0"].info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3])
    assert by_fold["2"].data.metrics["test/auroc"] == pytest.approx(0.72)
    assert "test/auroc" not in by_fold["1"].data.metrics
    arts = [a.path for a in client.list_artifacts(by_fold["0"].info.run_id, "figures")]
    assert arts == ["figures/roc.png"]
    assert by_fold["0"].info.run_name == "abmil fold-0" and by_fold["0"].data.tags["method"] == "abmil"
    assert by_fold["0"].data.tags["stage"] == "train"
    models = client.search_logged_models([exp.experiment_id])
    assert len(models) == 1 and models[0].source_run_id == by_fold["2"].info.run_id
    assert models[0].name == "abmil-fold-2" and models[0].params == {"head": "abmil"}
    linked = {(m.key, m.step): m.value for m in models[0].metrics}
    assert linked == {("train/loss", 1): 0.5, ("val/auroc", 1): 0.5, ("test/auroc", 0): pytest.approx(0.72)}
    spec = mlflow.models.get_model_info(models[0].model_uri).signature.inputs.inputs[0]
    assert spec.shape == (-1, -1, 4)  # any number of bags of any size
    loaded = mlflow.pytorch.load_model(models[0].model_uri)
    with torch.no_grad():
        out = loaded(torch.ones(1, 7, 4))
    assert out.shape == (1, 2) and np.isclose(float(out.sum()), 1.0)


def test_the_pipeline_leaves_no_empty_default_experiment(tmp_path):
    """MLflow makes an empty "Default" in every new store; the first parent run deletes it (a Default with
    runs stays)."""
    from mlflow.entities import ViewType

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    client = MlflowClient(uri)
    assert [e.name for e in client.search_experiments()] == ["Default"]  # MLflow's doing
    with parent_run("probe", "linear", {}, {}, experiment=experiment_name("", "label", ["a", "b"]), tracking=uri,
                    root=tmp_path):
        pass
    assert [e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)] == ["label: a vs b"]
    assert client.get_experiment("0").lifecycle_stage == "deleted"  # restorable, and MLflow makes no other
    client.restore_experiment("0")
    client.create_run("0")
    with parent_run("probe", "linear", {}, {}, experiment="label: a vs b", tracking=uri, root=tmp_path):
        pass
    assert client.get_experiment("0").lifecycle_stage == "active"


def test_run_label_names_the_configuration():
    params = {"train": {"lr": 2e-4, "epochs": 20, "seed": 0}}
    shown = {"train.lr": "lr", "train.epochs": "epochs"}
    label = run_label("abmil", params, shown)
    assert label.startswith("abmil · lr=0.0002 · epochs=20 · ") and len(label.rsplit(" · ", 1)[1]) == 6
    assert run_label("abmil", params, shown) == label
    assert run_label("abmil", {"train": {**params["train"], "seed": 1}}, shown) != label  # the digest tells
    assert experiment_name("", "grade", ["G1", "G2", "G3"]) == "grade: G1 vs G2 vs G3"
    assert experiment_name("my-study", "grade", ["G1"]) == "my-study" and experiment_name("", "os", []) == "os"


def test_parent_failure_is_marked(project):
    with pytest.raises(ValueError):
        with parent_run("probe", "linear", {}, {}, experiment="label") as parent:
            raise ValueError("boom")
    client = MlflowClient(tracking_uri(root=project))
    assert client.get_run(parent.run_id).info.status == "FAILED"


def test_repo_root_of_a_temporary_dvc_experiment_is_the_original_repo(tmp_path, monkeypatch):
    from slidemil.pipeline.tracking import repo_root, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text("{}")
    temp_workspace = tmp_path / "elsewhere" / "tmpabc123"  # where `dvc exp run --temp` runs the stages
    temp_workspace.mkdir(parents=True)
    (temp_workspace / "params.yaml").write_text("{}")
    monkeypatch.chdir(temp_workspace)
    assert repo_root() == temp_workspace
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert repo_root() == tmp_path
    assert tracking_uri("") == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_large_models_and_feature_stores_are_not_logged(project, caplog):
    """A model above mlflow.max_model_mb and a feature store never reach MLflow; a warning says so."""
    store = project / "data/features/conch_v1.zarr"
    store.mkdir(parents=True)
    (project / "features.h5").write_bytes(b"\0" * 10)
    (project / "small.csv").write_text("a\n1\n")
    big = torch.nn.Linear(600, 600)  # 600 × 601 float32 ≈ 1.38 MB
    with parent_run("train", "abmil", {}, {}, experiment="label", max_model_mb=1.0) as parent:
        with parent.fold_run(0) as child:
            child.log_model(big, in_dim=600, n_outputs=600, tracking=parent.tracking)
            child.log_model(_Bag(), in_dim=4, n_outputs=2, tracking=parent.tracking)
        for path in (store, project / "features.h5", project / "small.csv"):
            parent.log_artifact(path)
    assert "model of 1 MB not logged to MLflow (mlflow.max_model_mb=1.0)" in caplog.text
    assert caplog.text.count("folders and feature stores stay on disk") == 2
    client = MlflowClient(tracking_uri(root=project))
    exp = client.get_experiment_by_name("label")
    assert len(client.search_logged_models([exp.experiment_id])) == 1  # only the small one
    assert [a.path for a in client.list_artifacts(parent.run_id)] == ["small.csv"]
