"""Planted-signal survival and regression cohorts: the MIL trainer learns the planted outcome."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from slidemil.mil_models import create_mil_model
from slidemil.mil_models.synthetic import planted_outcome_bags
from slidemil.pipeline.kinds.objectives import CoxLoss, DiscreteTimeNLL, StandardisedRegression
from slidemil.pipeline.kinds.survival_metrics import survival_metrics
from slidemil.pipeline.trainer import Bag, TrainConfig, predict, train_fold


def _fit(bags, objective, head="abmil", epochs=30):
    train, val, test = bags[:120], bags[120:160], bags[160:]
    config = TrainConfig(epochs=epochs, lr=1e-3, patience=0, batch_size=8)
    result = train_fold(lambda: create_mil_model(head, 32, objective.n_outputs, hidden_dim=64), train, val,
                        objective.n_outputs, config, objective=objective)
    return predict(result.model, test, 8, objective=objective), np.array([b.label for b in test], float)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(("head", "loss"), [pytest.param("abmil", "cox", marks=pytest.mark.slow), ("mean_mlp", "nll")])
def test_planted_survival_reaches_c_index_08(head, loss):
    data = planted_outcome_bags(200, dim=32, n_instances=(30, 60), log_hazard_ratio=16.0, seed=0)
    assert (data.event == 0).float().mean() == pytest.approx(0.3)
    bags = [Bag(f"s{i}", b, (float(t), int(e))) for i, (b, t, e) in enumerate(zip(data.bags, data.time, data.event,
                                                                                  strict=True))]
    train_y = np.array([b.label for b in bags[:120]])
    objective = CoxLoss() if loss == "cox" else DiscreteTimeNLL(train_y, 4)
    pred, y = _fit(bags, objective, head)
    assert survival_metrics(y[:, 0], y[:, 1], pred.proba[:, 0])["c_index"] >= 0.8


@pytest.mark.usefixtures("one_torch_thread")
def test_planted_regression_reaches_pearson_08():
    data = planted_outcome_bags(200, dim=32, n_instances=(30, 60), seed=1)
    bags = [Bag(f"s{i}", b, float(t)) for i, (b, t) in enumerate(zip(data.bags, data.target, strict=True))]
    objective = StandardisedRegression(np.array([b.label for b in bags[:120]]), "mse")
    pred, y = _fit(bags, objective, epochs=15)
    assert pearsonr(y, pred.proba)[0] >= 0.8
    assert abs(pred.proba.mean() - y.mean()) < 1.0  # the user's units, not standardised ones
