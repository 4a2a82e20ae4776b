"""Survival and regression end to end: import-features (.h5) → split → probe / train → report, on planted signal.

The cohort is synthetic (:func:`slidemil.mil_models.synthetic.planted_outcome_bags`): a bag's hazard (and its
regression target) grows with the fraction of a planted instance type; 30% of the bags are censored.
"""

import argparse
import json

import h5py
import numpy as np
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from slidemil.mil_models.synthetic import planted_outcome_bags
from slidemil.pipeline.stages import import_features

STORE = "data/features/store.zarr"


def _project(root, helpers, kind, n=100, planted=True, level="slide", seed=0):
    """Feature files → store (import-features), cohort.csv with the user's own column names, params.yaml."""
    data = planted_outcome_bags(n, dim=16, n_instances=(20, 40), seed=seed)
    files = root / "h5"
    files.mkdir()
    rng = np.random.default_rng(seed)
    for i, bag in enumerate(data.bags):
        feats = bag.numpy() if planted else rng.normal(size=bag.shape).astype(np.float32)
        with h5py.File(files / f"slide{i:03d}.h5", "w") as f:
            f.create_dataset("features", data=feats)
            f.create_dataset("coords", data=np.stack([np.arange(len(feats)) * 256, np.zeros(len(feats))], 1)
                             .astype(np.int64)).attrs.update({"patch_size": 256, "target_magnification": 20})
            f["features"].attrs["encoder"] = "resnet50_trunc"
    args = argparse.Namespace(input=files, output=root / STORE, encoder_id=None, patch_size=None,
                              magnification=None, weights_sha256="random:0")
    assert import_features.run({}, args) == 0
    patients = [f"P{i // 2:03d}" if level == "patient" else f"P{i:03d}" for i in range(n)]
    if level == "patient":  # two slides per patient share the patient's outcome
        time = np.repeat(data.time.numpy()[::2], 2)[:n]
        event = np.repeat(data.event.numpy()[::2], 2)[:n]
        target = np.repeat(data.target.numpy().reshape(-1, 2).mean(1), 2)  # the patient's bag holds both slides
    else:
        time, event, target = data.time.numpy(), data.event.numpy(), data.target.numpy()
    pd.DataFrame({"slide_id": [f"slide{i:03d}" for i in range(n)], "path": [f"slides/slide{i:03d}.svs" for i in range(n)],
                  "patient_id": patients, "os_months": np.round(time, 4),
                  "vital_status": np.where(event == 1, "dead", "alive"), "tumour_fraction": np.round(target, 4)}
                 ).to_csv(root / "cohort.csv", index=False)
    columns = "time: os_months, event: vital_status" if kind == "survival" else "label: tumour_fraction"
    task = f"{{type: {kind}, {columns}, level: {level}}}"
    probes = "[cox, knn_risk]" if kind == "survival" else "[ridge, knn_regression]"
    knn = "knn_risk" if kind == "survival" else "knn_regression"
    helpers.write_mlflow_store(root)
    (root / "params.yaml").write_text(
        f"cohort: cohort.csv\ntask: {task}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{root}/mlflow.db'}}\n"
        "split: {n_folds: 3, val_fraction: 0.25, require_features: false}\n"
        f"train: {{heads: [abmil], features: {STORE}, epochs: 3, batch_size: 8, n_bootstrap: 20, log_model: false,"
        " n_heatmaps: 0, device: cpu}\n"
        f"probe: {{features: {STORE}, probes: {probes}, probe_kwargs: {{{knn}: {{n_neighbors: 5}}}}, n_bootstrap: 50}}\n"
        f"report: {{features: {STORE}, n_bootstrap: 200}}\n"
    )
    return data


def _metrics(method):
    """Every figure of a method (fold values, pooled, CIs): the details beside its predictions; the DVC metrics
    file holds the headline subset of the same numbers."""
    details = json.loads(open(f"predictions/{method}.details.json").read())
    headline = json.loads(open(f"metrics/{method}.json").read())
    primary = next(k for k in headline if k.endswith("_low")).removesuffix("_low")
    assert headline[primary] == pytest.approx(details[f"test/{primary}_mean"], nan_ok=True)
    return details


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_survival_end_to_end(tmp_path, monkeypatch, helpers):
    _project(tmp_path, helpers, "survival")
    monkeypatch.chdir(tmp_path)
    assert helpers.run_stage("split") == 0
    splits = json.loads(open("data/splits.json").read())
    assert splits["task"]["type"] == "survival" and splits["targets"]["slide000"]["event"] in (0, 1)
    assert helpers.run_stage("probe") == 0
    cox = _metrics("probe@cox")
    assert cox["test/c_index_mean"] >= 0.8, cox["test/c_index_mean"]
    assert cox["test/c_index_ci_low"] <= cox["test/pooled_c_index"] <= cox["test/c_index_ci_high"]
    predictions = pd.read_csv("predictions/probe@cox.csv", dtype={"slide_id": str})
    assert list(predictions.columns[:8]) == ["slide_id", "patient_id", "fold", "repeat", "time", "event", "risk",
                                             "risk_cut"]
    for record in cox["folds"]:  # the reported C-index is scikit-survival's on the predictions CSV
        part = predictions[predictions["fold"] == record["fold"]]
        expected = concordance_index_censored(part["event"].astype(bool), part["time"], part["risk"])[0]
        assert record["test/c_index"] == pytest.approx(expected, abs=1e-12)
    km = pd.read_csv("plots/probe@cox/km.csv")
    assert set(km["group"]) == {"high", "low"} and km["survival"].between(0, 1).all()
    assert helpers.run_stage("train") == 0
    train = pd.read_csv("predictions/train@abmil.csv")
    assert {"surv_bin1", "surv_bin4"} <= set(train.columns)  # discrete-time NLL with 4 bins
    assert np.isfinite(_metrics("train@abmil")["test/c_index_mean"])
    assert helpers.run_stage("report") == 0
    report = open("reports/summary.md").read()
    assert "C-index (Harrell)" in report and "Paired comparison with probe@cox" in report
    assert json.loads(open("reports/metrics.json").read())["best_method"] == "probe@cox"


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_random_features_give_c_index_near_half(tmp_path, monkeypatch, helpers):
    _project(tmp_path, helpers, "survival", planted=False)
    monkeypatch.chdir(tmp_path)
    assert helpers.run_stage("split") == 0
    assert helpers.run_stage("probe", probe="cox") == 0
    assert abs(_metrics("probe@cox")["test/pooled_c_index"] - 0.5) < 0.15


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_regression_end_to_end_at_patient_level(tmp_path, monkeypatch, helpers):
    _project(tmp_path, helpers, "regression", n=80, level="patient")
    monkeypatch.chdir(tmp_path)
    assert helpers.run_stage("split") == 0
    assert helpers.run_stage("probe") == 0
    ridge = _metrics("probe@ridge")
    assert ridge["test/pearson_r_mean"] >= 0.8, ridge["test/pearson_r_mean"]
    predictions = pd.read_csv("predictions/probe@ridge.csv", dtype=str)
    assert list(predictions.columns) == ["slide_id", "patient_id", "fold", "repeat", "target", "prediction"]
    assert len(predictions) == 40 and (predictions["slide_id"] == predictions["patient_id"]).all()  # per patient
    assert pd.read_csv("plots/probe@ridge/scatter.csv").shape == (40, 3)
    assert helpers.run_stage("report") == 0
    assert "Pearson r" in open("reports/summary.md").read()


def test_classification_probe_on_a_survival_task_is_skipped(tmp_path, monkeypatch, helpers, caplog):
    from slidemil.core.errors import ParamsError

    _project(tmp_path, helpers, "survival", n=30)
    monkeypatch.chdir(tmp_path)
    assert helpers.run_stage("split") == 0
    with pytest.raises(ParamsError, match="no probe of probe.probes supports a survival task; use cox, knn_risk"):
        helpers.run_stage("probe", ["probe.probes=[linear, knn]"])
