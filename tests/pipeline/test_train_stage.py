"""`slidemil train` end to end on a tiny synthetic feature store + splits file, tracked in a temporary SQLite store."""

import argparse
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from slidemil.core.errors import LeakageError
from slidemil.extract.store import FeatureStoreWriter
from slidemil.mil_models.synthetic import planted_signal_bags
from slidemil.pipeline.stages import train as stage
from slidemil.pipeline.tracking import tracking_uri
from slidemil.splits.io import write_splits

DIM = 16
N_SLIDES = 12
CMU1 = "wsi-aperio-svs/CMU-1-Small-Region.svs"  # 2220 x 2967 level-0 px

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _project(root, real_data, nan_slide=None, leak=False):
    """12 slides (alternating benign/tumor, planted witnesses in tumor bags), 3 folds of 4 test slides."""
    (root / "params.yaml").write_text("task: {label: diagnosis}\n")
    planted = planted_signal_bags(N_SLIDES, dim=DIM, n_instances=(9, 16), shift=3.0, seed=0)
    writer = FeatureStoreWriter(root / "data/features/tiny_test.zarr", "tiny_test", "synthetic:1", DIM)
    ids = [f"S{i:02d}" for i in range(N_SLIDES)]
    for i, sid in enumerate(ids):
        feats = planted.bags[i].numpy()
        if sid == nan_slide:
            feats = np.full_like(feats, np.nan)
        n = feats.shape[0]
        coords = np.stack([np.arange(n) % 4 * 256, np.arange(n) // 4 * 256], 1).astype(np.int64)
        attrs = {"slide_id": sid, "patch_size_level0": 256, "level": 0, "read_size": 256, "patch_size": 64}
        if i == 0:
            attrs["slide_path"] = str(real_data / CMU1)
        with writer.lock(sid) as lock:
            writer.write_slide(sid, feats, coords, attrs, lock)
    labels = {sid: ("tumor" if planted.labels[i] else "benign") for i, sid in enumerate(ids)}
    folds = []
    for k in range(3):
        test = ids[4 * k : 4 * k + 4]
        rest = [s for s in ids if s not in test]
        folds.append({"fold": k, "repeat": 0, "train": rest[2:], "val": rest[:2], "test": test})
    patients = {sid: f"P{sid}" for sid in ids}
    if leak:
        patients[folds[0]["test"][0]] = patients[folds[0]["train"][0]]
    write_splits(root / "data/splits.json", {
        "schema_version": 1, "label": "diagnosis", "classes": ["benign", "tumor"], "n_folds": 3, "seed": 0,
        "seeds": [0], "strategy": "kfold", "folds": folds, "excluded": {}, "patients": patients, "labels": labels,
    })
    return {
        "task": {"label": "diagnosis", "classes": ["benign", "tumor"]},
        "extract": {"encoder": "tiny_test"},
        "train": {"heads": ["abmil", "mean_mlp"], "epochs": 3, "lr": 2e-3, "batch_size": 4, "max_instances": 8,
                  "patience": 0, "n_bootstrap": 50, "n_heatmaps": 1, "log_model": False,
                  "head_kwargs": {"abmil": {"dropout": 0.0}}},
    }


@pytest.fixture
def project(tmp_path, monkeypatch, blank_db):
    shutil.copy(blank_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_train_stage_end_to_end(project, real_data):
    params = _project(project, real_data)
    assert stage.run(params, argparse.Namespace(head=None)) == 0
    for head in ("abmil", "mean_mlp"):
        metrics = json.loads((project / f"predictions/train@{head}.details.json").read_text())
        assert metrics["test/n_usable_folds"] == 3 and metrics["n_failed_folds"] == 0
        assert metrics["test/auroc_ci_low"] <= metrics["test/auroc_ci_high"]
        assert [f["fold"] for f in metrics["folds"]] == [0, 1, 2]
        assert np.mean([f["test/auroc"] for f in metrics["folds"]]) == pytest.approx(metrics["test/auroc_mean"])
        assert all(0 <= f["best_epoch"] < 3 and "val/auroc" in f for f in metrics["folds"])
        preds = pd.read_csv(project / f"predictions/train@{head}.csv")
        assert sorted(preds["slide_id"]) == [f"S{i:02d}" for i in range(N_SLIDES)]
        np.testing.assert_allclose(preds[["prob_benign", "prob_tumor"]].sum(1), 1.0, rtol=1e-5)
        assert (project / f"plots/train@{head}/roc.csv").is_file()
        assert len(pd.read_csv(project / f"plots/train@{head}/confusion.csv")) == N_SLIDES
        state = torch.load(project / f"models/{head}/fold-2.pt", weights_only=False)
        assert state["classes"] == ["benign", "tumor"] and state["in_dim"] == DIM
        provenance = state["provenance"]  # what deploy re-tiles and re-encodes new cohorts with
        assert provenance["embed_dim"] == DIM and provenance["encoder_id"] and set(provenance["tiling"]) >= {
            "target_mpp", "patch_size", "overlap", "tissue", "params_digest", "mpp_override"}

    client = MlflowClient(tracking_uri(root=project))
    exp = client.get_experiment_by_name("diagnosis: benign vs tumor")
    runs = client.search_runs([exp.experiment_id])
    parents = {r.data.tags["method"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"abmil", "mean_mlp"}
    parent = parents["abmil"]
    assert parent.data.tags["encoder.weights"] == "synthetic"
    assert parent.data.params["train.head_kwargs.dropout"] == "0.0"
    assert parent.data.metrics["test/auroc_mean"] == pytest.approx(
        json.loads((project / "predictions/train@abmil.details.json").read_text())["test/auroc_mean"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["fold"] for r in children) == ["0", "1", "2"]
    child = children[0]
    assert len(client.get_metric_history(child.info.run_id, "train/loss")) == 3
    assert {"test/auroc", "test/balanced_accuracy", "val/loss", "best_epoch", "best/val_auroc",
            "best/val_loss"} <= set(child.data.metrics)
    # one point per epoch in the val/* curves (the best epoch's summary is not logged again at step 0)
    curve = client.get_metric_history(child.info.run_id, "val/loss")
    assert sorted(m.step for m in curve) == [0, 1, 2]
    best_epoch = int(child.data.metrics["best_epoch"])
    assert child.data.metrics["best/val_loss"] == pytest.approx(next(m.value for m in curve if m.step == best_epoch))
    fold_record = next(f for f in json.loads((project / "predictions/train@abmil.details.json").read_text())["folds"]
                       if f["fold"] == int(child.data.tags["fold"]))
    assert fold_record["val/loss"] == pytest.approx(child.data.metrics["best/val_loss"])
    figures = {a.path for a in client.list_artifacts(child.info.run_id, "figures")}
    assert figures == {"figures/roc.png", "figures/confusion.png"}
    first = {r.data.tags["fold"]: r for r in children}["0"]  # holds S00, drawn on the real CMU-1 thumbnail
    assert [a.path for a in client.list_artifacts(first.info.run_id, "heatmaps")] == ["heatmaps/S00.png"]
    # mean_mlp's attention is uniform (1/N): no heatmap, the figures still
    mean_children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents["mean_mlp"].info.run_id]
    assert len(mean_children) == 3
    for run in mean_children:
        assert client.list_artifacts(run.info.run_id, "heatmaps") == []
        assert len(client.list_artifacts(run.info.run_id, "figures")) == 2


def test_failed_folds_are_recorded_and_others_go_on(project, real_data):
    params = _project(project, real_data, nan_slide="S11")  # NaN features; S11 is a test slide of fold 2
    splits = json.loads((project / "data/splits.json").read_text())
    for part in ("train", "val"):  # fold 1 does without it; fold 0 trains on it
        splits["folds"][1][part] = [s for s in splits["folds"][1][part] if s != "S11"]
    write_splits(project / "data/splits.json", splits)
    params["train"]["heads"] = ["mean_mlp"]
    params["train"]["batch_size"] = 8
    assert stage.run(params, argparse.Namespace(head=None)) == 0
    metrics = json.loads((project / "predictions/train@mean_mlp.details.json").read_text())
    status = {f["fold"]: f["status"] for f in metrics["folds"]}
    assert status == {0: "failed", 1: "ok", 2: "failed"}
    assert "non-finite training loss" in metrics["folds"][0]["reason"] and "S11" in metrics["folds"][0]["reason"]
    assert "non-finite outputs" in metrics["folds"][2]["reason"] and "S11" in metrics["folds"][2]["reason"]
    assert metrics["n_failed_folds"] == 2 and metrics["test/n_usable_folds"] == 1
    client = MlflowClient(tracking_uri(root=project))
    runs = client.search_runs([client.get_experiment_by_name("diagnosis: benign vs tumor").experiment_id])
    by_fold = {r.data.tags.get("fold"): r.info.status for r in runs}
    assert by_fold == {"0": "FAILED", "1": "FINISHED", "2": "FAILED", None: "FINISHED"}
    params["train"]["heads"] = ["abmil"]
    params["train"]["epochs"] = 1
    splits["folds"] = splits["folds"][:1]
    splits["strategy"] = "holdout+kfold"
    write_splits(project / "data/splits.json", splits)
    assert stage.run(params, argparse.Namespace(head=None)) == 1  # no usable fold


def test_leakage_stops_before_training(project, real_data):
    params = _project(project, real_data, leak=True)
    with pytest.raises(LeakageError):
        stage.run(params, argparse.Namespace(head="abmil"))
    assert not (project / "metrics").exists() and not (project / "mlartifacts").exists()


def test_heatmaps_only_for_informative_attention():
    from slidemil.pipeline.figures import is_informative

    assert is_informative(np.array([0.1, 0.7, 0.2]))
    assert is_informative(np.array([0.0, 0.0, 1.0]))  # max_mlp-style shares: one instance holds every maximum
    assert not is_informative(None)
    assert not is_informative(np.full(5, 0.2, dtype=np.float32))  # mean_mlp: 1/N everywhere
    assert not is_informative(np.array([0.5, np.nan]))
    assert not is_informative(np.array([]))


def test_an_interrupted_run_keeps_the_last_complete_fold_models(project, real_data, monkeypatch):
    """Fold models replace models/<head>/ only when every fold is done: Ctrl-C in fold 1 keeps the old set."""
    params = _project(project, real_data)
    params["train"].update(heads=["mean_mlp"], epochs=1)
    assert stage.run(params, argparse.Namespace(head=None)) == 0
    models = project / "models/mean_mlp"
    before = {p.name: p.read_bytes() for p in models.glob("*.pt")}
    assert sorted(before) == ["fold-0.pt", "fold-1.pt", "fold-2.pt"]
    train_fold = stage._train_fold

    def interrupt_in_fold_1(job, fold, child):
        if fold["fold"] == 1:
            raise KeyboardInterrupt
        return train_fold(job, fold, child)

    monkeypatch.setattr(stage, "_train_fold", interrupt_in_fold_1)
    params["train"]["seed"] = 7  # a new fold-0 model would differ
    with pytest.raises(KeyboardInterrupt):
        stage.run(params, argparse.Namespace(head=None))
    assert {p.name: p.read_bytes() for p in models.glob("*.pt")} == before
    monkeypatch.setattr(stage, "_train_fold", train_fold)
    assert stage.run(params, argparse.Namespace(head=None)) == 0  # the next complete run replaces them
    after = {p.name: p.read_bytes() for p in models.glob("*.pt")}
    assert sorted(after) == sorted(before) and after["fold-0.pt"] != before["fold-0.pt"]
    assert not list(project.glob("models/.*"))  # no staging folder left


def test_head_options_are_checked_before_any_work():
    from slidemil.core.errors import ParamsError

    with pytest.raises(ParamsError, match=r"MIL head 'abmil' does not take option\(s\) \['hiddn'\]"):
        stage.check_heads(["abmil"], {"abmil": {"hiddn": 3}})
    with pytest.raises(ParamsError, match=r"unknown or no MIL head \['abmill'\]"):
        stage.check_heads(["abmill"], {})
    stage.check_heads(["abmil", "clam_sb"], {"abmil": {"dropout": 0.1}})
