"""Survival and regression kinds: metrics against scikit-survival / SciPy, objectives, probes, kind files."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from sksurv.metrics import concordance_index_censored

from slidemil.pipeline.compare import paired_bootstrap_metric
from slidemil.pipeline.kinds.objectives import CoxLoss, DiscreteTimeNLL, StandardisedRegression
from slidemil.pipeline.kinds.regression_metrics import pearson_r_resampled, regression_metrics
from slidemil.pipeline.kinds.survival_metrics import harrell_c_resampled, survival_metrics
from slidemil.pipeline.probes import create_probe
from slidemil.pipeline.task_kinds import Bootstrap


def _cohort(n=80, seed=0, signal=1.0):
    """Linear-hazard subjects: features x [n, 5], risk driver x[:, 0]; ~30% censored; tied times on purpose."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    time = np.round(rng.exponential(1 / np.exp(signal * 2 * x[:, 0])), 1) + 0.1
    event = (rng.random(n) > 0.3).astype(int)
    return x, time, event


def test_harrell_resampled_equals_scikit_survival():
    _, time, event = _cohort()
    risk = np.round(np.random.default_rng(1).normal(size=len(time)), 1)  # tied risks too
    risk[:10] += 1e-12  # ties within scikit-survival's tolerance
    rng = np.random.default_rng(2)
    idx = rng.integers(0, len(time), (5, len(time)))
    counts = np.stack([np.bincount(r, minlength=len(time)) for r in idx])
    ours = harrell_c_resampled(time, event, risk, np.vstack([np.ones(len(time)), counts]))
    expected = [concordance_index_censored(event.astype(bool), time, risk)[0]]
    expected += [concordance_index_censored(event[r].astype(bool), time[r], risk[r])[0] for r in idx]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_pearson_resampled_equals_scipy():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=30), rng.normal(size=30)
    idx = rng.integers(0, 30, (4, 30))
    counts = np.stack([np.bincount(r, minlength=30) for r in idx])
    np.testing.assert_allclose(pearson_r_resampled(y, p, counts), [pearsonr(y[r], p[r])[0] for r in idx], rtol=1e-10)


def test_survival_metrics_score_a_true_risk_above_a_random_one():
    x, time, event = _cohort(n=200)
    good = survival_metrics(time, event, x[:, 0], horizons=(0.5, 1.0))
    bad = survival_metrics(time, event, x[:, 1], horizons=(0.5, 1.0))
    assert good["c_index"] > 0.7 and abs(bad["c_index"] - 0.5) < 0.1
    assert good["c_index_uno"] > 0.7 and good["td_auc"] > 0.7 and good["td_auc_t0.5"] > 0.7
    assert good["n_events"] == event.sum()
    assert np.isnan(survival_metrics(time, np.zeros_like(event), x[:, 0])["c_index"])  # no event: undefined


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    out = regression_metrics(y, 2 * y + 1)
    assert out["pearson_r"] == pytest.approx(1.0) and out["spearman_rho"] == pytest.approx(1.0)
    assert out["mae"] == pytest.approx(np.mean(y + 1)) and out["r2"] < 0
    assert np.isnan(regression_metrics(y, np.ones(4))["pearson_r"])  # constant prediction


def test_discrete_time_nll_orders_risk_by_event_time():
    y = np.array([[1.0, 1], [5.0, 1], [10.0, 1], [20.0, 1], [3.0, 0]])
    objective = DiscreteTimeNLL(y, 4)
    np.testing.assert_allclose(objective.cuts, np.quantile([1.0, 5, 10, 20], [0.25, 0.5, 0.75]))
    raw = torch.zeros(5, objective.n_outputs, requires_grad=True)
    optimiser = torch.optim.Adam([raw], lr=0.1)
    for _ in range(300):
        optimiser.zero_grad()
        objective.loss(raw, objective.target_tensor(y)).backward()
        optimiser.step()
    prediction = objective.predict(raw.detach().numpy())
    risk, survival = prediction[:, 0], prediction[:, 1:]
    assert list(np.argsort(-risk[:4])) == [0, 1, 2, 3]  # earlier event, higher risk
    assert (np.diff(survival, axis=1) <= 0).all() and ((survival > 0) & (survival < 1)).all()


def test_cox_loss_is_the_partial_likelihood():
    y = np.array([[1.0, 1], [2.0, 0], [3.0, 1], [4.0, 1]])
    r = np.array([0.5, -0.2, 0.1, 0.3])
    expected = -np.mean([r[i] - np.log(np.exp(r[i:]).sum()) for i in (0, 2, 3)])
    loss = CoxLoss().loss(torch.tensor(r[:, None], dtype=torch.float32), CoxLoss().target_tensor(y))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_regression_objective_reports_in_the_users_units():
    objective = StandardisedRegression(np.array([10.0, 20.0, 30.0]), "huber")
    assert objective.predict(np.array([[0.0], [1.0]])) == pytest.approx([20.0, 20.0 + np.std([10, 20, 30])])
    assert float(objective.target_tensor([20.0])[0]) == 0.0


@pytest.mark.parametrize("name", ["cox", "knn_risk"])
def test_survival_probes_rank_risk(name):
    x, time, event = _cohort(n=160)
    y = np.column_stack([time, event])
    probe = create_probe(name, **({"n_neighbors": 10} if name == "knn_risk" else {"alpha": 0.05}))
    risk = probe.fit(x[:120], y[:120]).predict(x[120:])
    assert concordance_index_censored(event[120:].astype(bool), time[120:], risk)[0] > 0.7


@pytest.mark.parametrize("name", ["ridge", "knn_regression"])
def test_regression_probes(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 5))
    y = 3 * x[:, 0] + 0.3 * rng.normal(size=150)
    prediction = create_probe(name, **({"n_neighbors": 5} if name == "knn_regression" else {})).fit(x[:100], y[:100])
    assert pearsonr(y[100:], prediction.predict(x[100:]))[0] > 0.8


def test_paired_bootstrap_of_c_index():
    x, time, event = _cohort(n=120)
    y = np.column_stack([time, event])
    folds = np.arange(120) % 3

    def score(y, pred, w):
        return harrell_c_resampled(y[:, 0], y[:, 1], pred, w)

    better = paired_bootstrap_metric(score, y, x[:, 0], x[:, 1], folds, n_boot=300)
    assert better.auroc_diff > 0.15 and better.ci_low > 0 and better.p_value < 0.01
    same = paired_bootstrap_metric(score, y, x[:, 0], x[:, 0], folds, n_boot=300)
    assert same.auroc_diff == 0 and same.p_value == 1.0


def test_survival_kind_writes_predictions_km_and_metrics(tmp_path):
    from types import SimpleNamespace

    from slidemil.pipeline.kinds.survival import Survival, survival_outputs

    x, time, event = _cohort(n=60)
    ids = [f"s{i}" for i in range(60)]
    data = SimpleNamespace(targets={s: (t, e) for s, t, e in zip(ids, time, event, strict=True)},
                           slides=lambda: ids)
    kind = Survival(None, data)
    assert len(kind.horizons) == 3
    tables, records = [], []
    for k in range(3):
        part = ids[k::3]
        y = kind.targets(data, part)
        outputs = survival_outputs(x[k::3, :1], x[:, 0])
        tables.append(kind.predictions_table(part, part, y, outputs, k, 0))
        records.append({"fold": k, "repeat": 0, "status": "ok", **kind.fold_metrics(y, outputs)})
    summary = kind.finish("probe", "test", pd.concat(tables), records, Bootstrap(30, 0), root=tmp_path)
    assert summary["test/n_usable_folds"] == 3 and summary["test/c_index_mean"] > 0.6
    assert summary["test/c_index_ci_low"] < summary["test/pooled_c_index"] < summary["test/c_index_ci_high"]
    assert 0 <= summary["test/pooled_logrank_p"] <= 1
    table = pd.read_csv(tmp_path / "predictions/probe@test.csv")
    assert (table["risk_group"] == np.where(table["risk"] > np.median(x[:, 0]), "high", "low")).all()
    assert set(pd.read_csv(tmp_path / "plots/probe@test/km.csv")["group"]) == {"high", "low"}
    assert set(kind.figures(kind.pooled(table)[0], kind.pooled(table)[1], "t", "out-of-fold")) == {"figures/km.png"}


def test_patient_level_makes_one_bag_per_patient():
    from slidemil.pipeline.data import MethodData, to_patient_level

    feats = {"a1": np.ones((2, 3)), "a2": np.zeros((1, 3)), "b1": np.full((4, 3), 2.0), "c1": np.full((1, 3), 3.0)}

    class Store:
        def load(self, sid):
            return feats[sid], np.zeros((len(feats[sid]), 2))

    splits = {"folds": [{"fold": 0, "repeat": 0, "train": ["a1", "a2", "b1"], "val": [], "test": ["c1"]}]}
    data = MethodData(splits=splits, store=Store(), classes=["x", "y"], labels={"a1": 1, "a2": 1, "b1": 0, "c1": 0},
                      patients={"a1": "A", "a2": "A", "b1": "B", "c1": "C"}, tags={},
                      targets={"a1": 1, "a2": 1, "b1": 0, "c1": 0})
    to_patient_level(data)
    assert data.splits["folds"][0]["train"] == ["A", "B"] and data.splits["folds"][0]["test"] == ["C"]
    assert data.labels == {"A": 1, "B": 0, "C": 0} and data.patients["A"] == "A"
    features, coords = data.load("A")
    assert features.shape == (3, 3) and coords.shape == (3, 2) and features.sum() == 6.0


def test_survival_and_regression_params_are_declared_and_checked():
    from slidemil.core.errors import ParamsError
    from slidemil.core.params import read_section
    from slidemil.pipeline.probes import probe_from_options, probe_options
    from slidemil.pipeline.stages.train import TrainSection
    from slidemil.splits.task import TaskSection

    section = read_section({"train": {"survival_loss": "cox", "regression_loss": "huber"}}, "train", TrainSection)
    assert (section.survival_loss, section.survival_bins, section.regression_loss) == ("cox", 4, "huber")
    for key, value, rule in [("survival_bins", 1, "greater than or equal to 2"), ("survival_loss", "aft", "'nll' or 'cox'"),
                             ("regression_loss", "l1", "'mse' or 'huber'")]:
        with pytest.raises(ParamsError, match=rf"'train\.{key}' must be {rule}"):
            read_section({"train": {key: value}}, "train", TrainSection)
    with pytest.raises(ParamsError, match=r"'task\.horizons' must be greater than 0"):
        read_section({"task": {"horizons": [12, 0]}}, "task", TaskSection)
    with pytest.raises(ParamsError, match=r"'probe\.probe_kwargs\.cox\.l1_ratio' must be greater than 0"):
        probe_options("cox", {"l1_ratio": 0})
    probe, search = probe_from_options("cox", probe_options("cox", {"alphas": [0.01, 1.0, 0.1], "l1_ratio": 0.9}))
    assert probe.l1_ratio == 0.9 and search == ("alpha", [1.0, 0.1, 0.01])  # strongest penalty first: wins ties
    probe, search = probe_from_options("ridge", probe_options("ridge", None))
    assert search == ("alpha", [1.0e4, 1.0e3, 1.0e2, 1.0e1, 1.0])
    probe, search = probe_from_options("knn_risk", probe_options("knn_risk", {"n_neighbors": 3}))
    assert probe.n_neighbors == 3 and search is None
