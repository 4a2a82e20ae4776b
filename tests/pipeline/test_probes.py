"""Probes: equal to direct scikit-learn / NumPy computations, planted clusters, the stage end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_do_not_raise_errors_in_init_or_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    parametrize_with_checks,
)

from slidemil.pipeline.probes import (
    create_probe,
    list_probes,
    pool_bag,
    predict_proba_all,
    probe_kinds,
    select_on_validation,
)


def _clusters(n_per_class=15, n_classes=3, dim=16, spread=0.3, seed=0):
    """Planted clusters: class c around a random centre, far from the others."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + rng.normal(0, spread, (y.size, dim))
    return x, y


def _noisy(n=60, dim=8, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = (x[:, 0] + 0.8 * rng.normal(size=n) > 0).astype(int)
    return x, y


def test_registry_lists_the_three_probes():
    assert {"linear", "knn", "prototype"} <= set(list_probes())
    with pytest.raises(KeyError, match="registered"):
        create_probe("linaer")


def _probes_of(kind):
    return [n for n in list_probes() if kind in probe_kinds(n)]


# survival probes are left out: their target is [n, 2] (time, event), which no estimator check generates (the
# checks fit on 1-D class or regression targets); they get the checks that do not fit, below, and
# tests/pipeline/test_survival_regression.py checks their fits against scikit-survival
@parametrize_with_checks([create_probe(name) for name in list_probes() if "survival" not in probe_kinds(name)])
def test_probes_pass_the_scikit_learn_estimator_checks(estimator, check):
    check(estimator)  # the fold loop clones, fits and scores every probe alike


@pytest.mark.parametrize("name", _probes_of("survival"))
@pytest.mark.parametrize("check", [check_parameters_default_constructible, check_no_attributes_set_in_init,
                                   check_get_params_invariance, check_set_params, check_estimator_cloneable,
                                   check_estimator_repr, check_do_not_raise_errors_in_init_or_set_params])
def test_survival_probes_pass_the_estimator_checks_that_do_not_fit(name, check):
    check(name, create_probe(name))


@pytest.mark.parametrize("name", _probes_of("classification"))
def test_probe_follows_estimator_contract(name):
    x, y = _clusters(n_per_class=12)  # kNN's default k=20 < 2 × 12: the own class keeps the majority
    labels = np.array(["c", "a", "b"])[y]  # string labels, not in sorted order of appearance
    probe = create_probe(name)
    assert clone(probe).get_params() == probe.get_params()
    assert probe.fit(x, labels) is probe
    assert list(probe.classes_) == ["a", "b", "c"]
    proba = probe.predict_proba(x)
    assert proba.shape == (len(x), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # the predicted class is the column of highest probability, in classes_ order
    np.testing.assert_array_equal(probe.predict(x), probe.classes_[proba.argmax(axis=1)])
    assert (probe.predict(x) == labels).mean() == 1.0  # separable clusters


def test_linear_probe_equals_direct_sklearn():
    x, y = _noisy()
    for class_weight in ("balanced", None):
        ours = create_probe("linear", C=0.05, class_weight=class_weight).fit(x, y).predict_proba(x)
        direct = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, class_weight=class_weight, max_iter=2000))
        np.testing.assert_allclose(ours, direct.fit(x, y).predict_proba(x), rtol=1e-10, atol=1e-12)


def test_c_chosen_by_validation_log_loss():
    x, y = _noisy(n=90)
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    best, model, losses = select_on_validation(create_probe("linear"), "C", grid, x[:60], y[:60], x[60:], y[60:])
    expected = {}
    for c in grid:
        direct = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000))
        expected[c] = log_loss(y[60:], direct.fit(x[:60], y[:60]).predict_proba(x[60:]))
    assert losses == pytest.approx(expected)
    assert best == min(expected, key=expected.get)
    assert model.C == best
    np.testing.assert_allclose(model.predict_proba(x), create_probe("linear", C=best).fit(x[:60], y[:60]).predict_proba(x))


def test_knn_equals_cosine_vote_and_clips_k():
    x, y = _noisy(n=40)
    q = np.random.default_rng(5).normal(size=(7, x.shape[1]))
    k = 5
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ unit.T  # (7, 40) cosine similarity
    nearest = np.argsort(-sims, axis=1)[:, :k]
    expected = np.stack([(y[nearest] == c).mean(axis=1) for c in (0, 1)], axis=1)
    np.testing.assert_allclose(create_probe("knn", n_neighbors=k).fit(x, y).predict_proba(q), expected)
    with pytest.warns(UserWarning, match="training class frequencies"):
        clipped = create_probe("knn", n_neighbors=20).fit(x[:6], y[:6])
    assert clipped.n_neighbors_ == 6
    np.testing.assert_allclose(clipped.predict_proba(q), np.tile(np.bincount(y[:6], minlength=2) / 6, (7, 1)))


def test_knn_and_prototype_recover_planted_clusters():
    x, y = _clusters(seed=3)
    xq, yq = _clusters(seed=3, n_per_class=5)  # same centres (same seed), fresh noise
    for name in ("knn", "prototype"):
        assert (create_probe(name).fit(x, y).predict(xq) == yq).all(), name


def test_prototype_equals_simpleshot_cl2n():
    x, y = _noisy(n=30)
    q = np.random.default_rng(2).normal(size=(5, x.shape[1]))
    mean = x.mean(axis=0)
    z = (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)
    protos = np.stack([z[y == c].mean(axis=0) for c in (0, 1)])
    zq = (q - mean) / np.linalg.norm(q - mean, axis=1, keepdims=True)
    d2 = ((zq[:, None] - protos[None]) ** 2).sum(-1)
    probe = create_probe("prototype", temperature=0.5).fit(x, y)
    np.testing.assert_array_equal(probe.predict(q), d2.argmin(axis=1))
    e = np.exp(-d2 / 0.5)
    np.testing.assert_allclose(probe.predict_proba(q), e / e.sum(axis=1, keepdims=True))


def test_pooling_and_one_patch_bag():
    bag = np.array([[1.0, 5.0], [3.0, -1.0]])
    np.testing.assert_allclose(pool_bag(bag, "mean"), [2.0, 2.0])
    np.testing.assert_allclose(pool_bag(bag, "max"), [3.0, 5.0])
    np.testing.assert_allclose(pool_bag(bag, "mean+max"), [2.0, 2.0, 3.0, 5.0])
    roi = np.array([[0.5, -2.0]])  # an ROI/tile dataset: a bag of one patch
    for pooling in ("mean", "max"):
        np.testing.assert_allclose(pool_bag(roi, pooling), roi[0])
    with pytest.raises(ValueError, match="non-empty"):
        pool_bag(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_bag(bag, "median")


def test_predict_proba_all_fills_missing_class():
    x, y = _clusters(n_per_class=5)
    keep = y != 1  # class 1 absent from this training fold
    proba = predict_proba_all(create_probe("prototype").fit(x[keep], y[keep]), x, n_classes=3)
    assert proba.shape == (len(x), 3)
    np.testing.assert_array_equal(proba[:, 1], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


# ---- the stage, end to end on a tiny feature store and splits file ----------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch, helpers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CONCH_TOKENIZER", raising=False)
    helpers.write_project(tmp_path)
    return tmp_path


def test_probe_stage_writes_method_files_and_runs(project, helpers):
    from mlflow import MlflowClient

    assert helpers.run_stage("probe", probe=None) == 0
    for name in ("linear", "knn", "prototype"):
        metrics = json.loads((project / f"predictions/probe@{name}.details.json").read_text())
        assert metrics["test/n_usable_folds"] == 3
        assert metrics["test/auroc_mean"] > 0.9  # planted class means
        preds = pd.read_csv(project / f"predictions/probe@{name}.csv", dtype={"slide_id": str})
        assert sorted(preds["slide_id"]) == [f"s{i:02d}" for i in range(18)]  # each slide tested once
        assert (project / f"plots/probe@{name}/roc.csv").is_file()
    linear = json.loads((project / "predictions/probe@linear.details.json").read_text())
    assert all(f["C"] in (0.01, 1.0) for f in linear["folds"])
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("label: benign vs tumor").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.tags["method"] for r in parents) == ["knn", "linear", "prototype"]
    for run in parents:  # named by the probe and what sets it apart; its params name no other probe
        assert run.info.run_name.startswith(f"{run.data.tags['method']} · pooling=mean · ")
        assert "probe.probes" not in run.data.params
    assert len(runs) == 3 + 9  # a child run per fold


def test_probe_stage_one_probe_mean_max_pooling_and_matches_direct_fit(project, helpers):
    from slidemil.core.errors import ParamsError
    from slidemil.extract.store import open_features
    from slidemil.splits.io import load_splits

    assert helpers.run_stage("probe", ["probe.pooling=mean+max"], probe="prototype") == 0
    assert not (project / "metrics/probe@linear.json").exists()
    # fold 0's test predictions equal a direct fit on that fold's pooled training embeddings
    store, fold = open_features("data/features/conch_v1.zarr"), load_splits("data/splits.json")["folds"][0]
    labels = load_splits("data/splits.json")["labels"]

    def xy(ids):
        return (np.stack([pool_bag(store.load(s)[0], "mean+max") for s in ids]),
                np.array([labels[s] == "tumor" for s in ids], dtype=int))

    direct = create_probe("prototype").fit(*xy(fold["train"])).predict_proba(xy(fold["test"])[0])
    preds = pd.read_csv("predictions/probe@prototype.csv", dtype={"slide_id": str}).set_index("slide_id")
    np.testing.assert_allclose(preds.loc[fold["test"], ["prob_benign", "prob_tumor"]].to_numpy(), direct, atol=1e-12)
    with pytest.raises(ParamsError, match="unknown probe"):
        helpers.run_stage("probe", probe="nope")


def test_fit_probe_tunes_only_with_a_grid_and_validation_slides():
    from slidemil.pipeline.probes import fit_probe

    x, y = _noisy(n=50)
    model, chosen = fit_probe(create_probe("linear"), x[:30], y[:30], x[30:], y[30:], search=("C", [0.01, 1.0]))
    expected = select_on_validation(create_probe("linear"), "C", [0.01, 1.0], x[:30], y[:30], x[30:], y[30:])[0]
    assert chosen == {"C": expected} and model.C == expected
    assert fit_probe(create_probe("linear"), x, y, x[:0], y[:0], search=("C", [0.5]))[1] == {"C": 0.5}
    assert fit_probe(create_probe("knn"), x, y, x[:0], y[:0])[1] == {}
    with pytest.raises(ValueError, match="no validation slides"):
        fit_probe(create_probe("linear"), x, y, x[:0], y[:0], search=("C", [0.1, 1.0]))
    with pytest.raises(ValueError, match="one class"):
        fit_probe(create_probe("knn"), x, np.zeros_like(y), x, y)
